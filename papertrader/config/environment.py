"""Where settings come from besides the command line: a default config file, PT_* variables.

Two things make a copied command behave as the README says:

* **A default config file.** Without ``--config`` or ``PT_CONFIG``, ``pt``
  reads ``papertrader.toml`` from the working directory, else from the
  user's config directory (``~/.config/papertrader/papertrader.toml`` on
  Linux). ``pt client`` reads it too (the worker's address comes from it).
  ``load_settings`` itself reads only what it is given; the commands call
  :func:`find_config_file`, so library users and tests stay hermetic.
* **Misspelled variables are reported.** A ``PT_*`` variable that is not a
  setting (``PT_UPDATE_INTERVALL``) would otherwise be ignored in silence; the
  commands warn about it, naming the closest setting. Variables other
  PaperTrader tools read are known and left alone.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from papertrader.config.rules import ENV_PREFIX, RULES

CONFIG_FILE_NAME = "papertrader.toml"

#: PT_* variables read by PaperTrader besides the settings (commands, tests, tools).
OTHER_VARIABLES = frozenset(
    {"PT_CONFIG", "PT_WORKER", "PT_CLIENT_MASTER", "PT_SESSION_FILE", "PT_SERVICES_PATH", "PT_CA"}
)
#: Prefixes of variables used by the test and benchmark tooling.
OTHER_PREFIXES = ("PT_TEST_", "PT_ANSIBLE_", "PT_BENCH_")


def user_config_file() -> Path:
    """The per-user config file (it need not exist)."""
    return Path(platformdirs.user_config_dir("papertrader")) / CONFIG_FILE_NAME


def find_config_file(cwd: Path | None = None) -> Path | None:
    """``./papertrader.toml``, else the user's, else None (absolute when found)."""
    for candidate in ((cwd or Path.cwd()) / CONFIG_FILE_NAME, user_config_file()):
        if candidate.is_file():
            return candidate.resolve()
    return None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each PT_* variable that is no setting, with the closest setting's name."""
    env = os.environ if environ is None else environ
    settings = {ENV_PREFIX + name.upper() for name in RULES}
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in settings or name in OTHER_VARIABLES:
            continue
        if name.startswith(OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(settings | OTHER_VARIABLES), n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else " (see the settings in the README)"
        warnings.append(f"{name} is not a PaperTrader setting and is ignored{hint}")
    return warnings
