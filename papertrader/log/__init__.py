"""PaperTrader event log system (spec 3.1.4, 3.2.5): loguru with a bounded in-memory buffer.

Modules log with ``from loguru import logger``; main modules call
:func:`install_logging` and wrap their run function in :func:`crash_guard`.
Never log secrets (passwords, session ids, keys, credentialed URLs).
"""

from papertrader.log.memory_log import (
    MemoryLog,
    crash_guard,
    display_path,
    entry_format,
    install_logging,
    install_logging_for,
    log_file_for,
    uninstall_logging,
)

__all__ = [
    "MemoryLog",
    "crash_guard",
    "display_path",
    "entry_format",
    "install_logging",
    "install_logging_for",
    "log_file_for",
    "uninstall_logging",
]
