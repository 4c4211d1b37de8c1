"""The wheel: built without setuptools warnings, two top-level packages, a working ``pt``.

``cli/`` installs as ``papertrader_cli`` (a top-level ``cli`` would collide
with other projects in one virtualenv); its imports are relative so the
mapping works. The wheel is installed into a directory of its own and run
from there, away from the source tree, so a missing package or a leftover
absolute ``cli.`` import fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: What the wheel is built from (as ansible/roles/papertrader/files/build-wheel.sh packs it).
SOURCES = ("pyproject.toml", "setup.py", "requirements.txt", "README.md", "papertrader", "cli")


def test_the_wheel_builds_cleanly_and_its_pt_runs_outside_the_source_tree(tmp_path: Path) -> None:
    source = tmp_path / "src"  # setuptools writes build/ beside pyproject.toml: not in the tree
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    output = build.stdout + build.stderr
    for marker in ("SetuptoolsDeprecationWarning", "BuildBackendWarning", "is absent from the"):
        assert marker not in output, output[-5000:]

    (wheel,) = tmp_path.glob("papertrader-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names if not name.startswith("papertrader-")}
    assert top == {"papertrader", "papertrader_cli"}
    assert "papertrader/store/migrations/0001_initial.sql" in names
    assert "papertrader/market/data/sample.csv" in names

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run(
        [sys.executable, "-c",
         "import sys, papertrader_cli, papertrader;"
         "print(papertrader_cli.__file__); print(papertrader.__file__);"
         "print('cli' in sys.modules)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    cli_file, library_file, stray = run.stdout.split()
    assert cli_file.startswith(str(target)) and library_file.startswith(str(target))
    assert stray == "False"
    helped = subprocess.run(
        [sys.executable, "-m", "papertrader_cli", "up", "--help"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert helped.returncode == 0 and "Usage: python -m papertrader_cli up" in helped.stdout
