"""PaperTrader configuration: the deployment variables of spec 2.3 and how they are loaded."""

from papertrader.config.settings import (
    DEFAULT_ASSETS,
    ENV_PREFIX,
    ConfigError,
    Settings,
    load_settings,
    redact_url,
)

__all__ = [
    "DEFAULT_ASSETS",
    "ENV_PREFIX",
    "ConfigError",
    "Settings",
    "load_settings",
    "redact_url",
]
