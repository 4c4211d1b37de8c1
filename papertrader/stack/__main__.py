"""The background supervisor of a ``pt up --detach`` stack.

``pt up --detach`` plans the stack (services, schema, keys, the children's
recipes in ``stack.json``) and starts ``python -m papertrader.stack STATE_DIR``
in a session of its own. This process then starts the children, marks the
record ``running`` (which the waiting ``pt up`` reads) or ``failed`` with the
reason, and supervises until SIGTERM (``pt down``). Its log is
``logs/supervisor.log``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from loguru import logger

from papertrader.stack.control import master_lists_workers
from papertrader.stack.processes import ProcessId
from papertrader.stack.record import StackError, load_record, locked, save_record
from papertrader.stack.supervisor import Supervisor, install_supervisor_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papertrader.stack")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir
    install_supervisor_logging(state_dir)
    record = load_record(state_dir)
    if record is None:
        logger.error(f"no stack.json in {state_dir}: nothing to supervise")
        return 1
    record.supervisor_pid = os.getpid()
    record.supervisor_started = ProcessId.of(os.getpid()).started
    supervisor = Supervisor(record, args.timeout, is_ready=master_lists_workers)
    with supervisor.signals_handled():
        with locked(state_dir):
            save_record(record)
        logger.info(f"supervising the stack of {state_dir} (pid {os.getpid()})")
        try:
            supervisor.start_all()
        except StackError as exc:
            logger.error(f"the stack could not start: {exc}")
            supervisor.stop_all(args.timeout, forget=False)
            record.phase = "failed"
            record.error = str(exc)
            record.supervisor_pid = None
            with locked(state_dir):
                save_record(record)
            return 1
        reason = supervisor.run()
        logger.info(f"{reason}: stopping the stack")
        supervisor.stop_all(args.timeout)
    logger.info("stack stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
