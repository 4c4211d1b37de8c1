"""The README's shell blocks, run as written, in order, in one shell.

A reader pastes them into a terminal in the project directory; so does this
test: every ```sh block of README.md that can run on one machine, unchanged,
in a bash with ``set -euo pipefail``, under a pseudo-terminal (the password
prompts are answered like a person would), in a directory where ``.venv`` is
this test's environment. The README uses the default ports (2048, 2049...),
so the shell runs in a network namespace of its own (``unshare --net``): its
loopback is private, and nothing else on the machine is disturbed. The
environment asks for a 1 s update interval and cheap password hashing, so
orders fill quickly; the commands are the README's.

Blocks that cannot run on one machine are listed in ``NOT_RUN`` with the
reason, by their first line; a block that is neither run nor listed fails
the test, so a new README example is run from the day it is written.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PASSWORD = "correct horse battery"
#: Seconds the whole README may take (it starts three stacks and trades).
BUDGET = 900.0

#: First line of a block that cannot run on one machine -> why.
NOT_RUN = {
    "make run    # installs what is missing, then starts PaperTrader on private "
    "Redis/PostgreSQL": "the set-up itself: `make test` is what runs this test, and "
    "`make run` stays in the foreground",
    "# 1. On the master host, once: a state directory, the services, the schema and the": (
        "needs two hosts (a master host and a worker host)"
    ),
    "pt workers list                 # name, UUID, region, allowed IPs, connected, clients, "
    "last seen": "needs the worker on the other host of the block above",
    "cd ansible": "deploys to the hosts of an inventory",
    "pt client login --with google                 # browser sign-in; the first time:": (
        "signs in at Google: needs a Google account, a registered client and a browser"
    ),
}
#: What a prompt looks like, and the answer a person types.
PROMPTS = re.compile(rb"(Password|Repeat for confirmation): $")


def shell_blocks(text: str) -> list[tuple[str, str]]:
    """(section heading, code) of every ```sh block, in order."""
    blocks = []
    heading = ""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```sh":
            body = []
            index += 1
            while lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            blocks.append((heading, "\n".join(body)))
        index += 1
    return blocks


def runnable(blocks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(h, code) for h, code in blocks if code.splitlines()[0] not in NOT_RUN]


def test_every_block_is_run_or_says_why_not() -> None:
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    firsts = [code.splitlines()[0] for _, code in blocks]
    for first in NOT_RUN:
        assert firsts.count(first) == 1, f"NOT_RUN names a block the README no longer has: {first}"
    assert len(runnable(blocks)) >= 6


def _script(blocks: list[tuple[str, str]], python: str) -> str:
    cleanup = (
        "cleanup() {\n"
        "  for dir in state by-hand; do\n"
        '    PT_STATE_DIR="$PWD/$dir" pt down --timeout 20 > /dev/null 2>&1 || true\n'
        f'    "{python}" -c "import sys; from papertrader.services import destroy_services;'
        ' destroy_services(sys.argv[1])" "$PWD/$dir" > /dev/null 2>&1 || true\n'
        "  done\n"
        "}\n"
        "trap cleanup EXIT\n"
    )
    parts = ["set -euo pipefail", "ip link set lo up", cleanup]
    for number, (heading, code) in enumerate(blocks, start=1):
        parts.append(f'echo "$(date +%T) >>> README block {number} ({heading})"')
        parts.append(code)
    parts.append("echo '>>> README: every block ran'")
    return "\n".join(parts) + "\n"


def _network_namespace_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    if not _network_namespace_available():
        pytest.skip("needs `unshare --net` (root, as in CI) for the README's default ports")
    work = tmp_path / "project"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))  # `export PATH=$PWD/.venv/bin:$PATH`
    blocks = runnable(shell_blocks(README.read_text(encoding="utf-8")))
    script = tmp_path / "readme.sh"
    script.write_text(_script(blocks, str(Path(sys.prefix) / "bin" / "python")))
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("PT_") and k not in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")
    }  # fmt: skip
    # A reader in a hurry: quicker update intervals and cheap password hashing. The
    # commands stay as written; settings in the environment are theirs to choose.
    env.update(
        HOME=str(tmp_path / "home"), TERM="dumb", COLUMNS="120",
        PT_UPDATE_INTERVAL="1", PT_BCRYPT_COST="4",
    )  # fmt: skip

    pid, fd = pty.fork()
    if pid == 0:  # the child: bash in a network namespace, on the pseudo-terminal
        os.chdir(work)
        os.execvpe("unshare", ["unshare", "--net", "bash", str(script)], env)
    output = bytearray()
    deadline = time.monotonic() + BUDGET
    status: int | None = None
    try:
        while status is None:
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGTERM)
                raise AssertionError(f"the README took over {BUDGET:g} s\n{_tail(output)}")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the terminal closed, the shell is done
                    chunk = b""
                output += chunk
                if PROMPTS.search(bytes(output[-64:])):
                    os.write(fd, PASSWORD.encode() + b"\n")
                    output += b"\n"
                if not chunk:
                    _, status = os.waitpid(pid, 0)
            else:
                done, waited = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = waited
    finally:
        os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, f"a README block failed:\n{_tail(output)}"
    assert ">>> README: every block ran" in text
    assert "Traceback" not in text, _tail(output)


def _tail(output: bytearray, lines: int = 80) -> str:
    return "\n".join(output.decode(errors="replace").splitlines()[-lines:])
