"""`pt` starts quickly: the command tree loads without the heavy libraries.

`pt --help` (and completion, which loads the same tree) must not import
redis, psycopg2, gevent, plotext, the client library or the servers: each
command imports what it needs when it runs. Checked by what is imported,
not by a stopwatch, so the test holds on a busy machine. README.md gives
the measured time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = (
    "redis", "psycopg2", "gevent", "plotext", "gnupg", "cryptography", "requests",
    "prometheus_client", "bcrypt", "loguru", "papertrader.client", "papertrader.services",
    "papertrader.store", "papertrader.master", "papertrader.worker", "papertrader.stack",
)  # fmt: skip


def test_the_command_tree_loads_without_heavy_libraries() -> None:
    code = (
        "import json, sys\n"
        "from papertrader_cli.main import cli\n"
        "import click\n"
        "ctx = click.Context(cli)\n"
        "names = cli.list_commands(ctx)\n"
        "for name in names:\n"
        "    group = cli.get_command(ctx, name)\n"
        "    if isinstance(group, click.Group):\n"
        "        group.list_commands(ctx)\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps({'commands': names,"
        " 'loaded': sorted(m for m in heavy if m in sys.modules)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
        check=True,
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["loaded"] == []
    assert {"up", "down", "restart", "status", "logs", "client"} <= set(document["commands"])


def test_pt_help_lists_every_group() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    result = subprocess.run(
        [sys.executable, "-m", "papertrader_cli", "--help"], capture_output=True, text=True,
        env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    for group in ("up", "down", "restart", "status", "logs", "client", "workers", "market"):
        assert f"  {group} " in result.stdout
