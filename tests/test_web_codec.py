"""The browser's protocol codec, checked with node's test runner against the golden vectors.

The JavaScript in papertrader/web/static/js/protocol/ is a second,
independent implementation of docs/PROTOCOL.md. This test lays it out in a
temporary directory with the generated tables.js, exports the golden vectors
of every tests/test_protocol_golden*.py (tests/golden_export.py), and runs
``node --test`` over tests/js/: both codecs must agree byte for byte.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from golden_export import golden_json

from papertrader.web.tables import tables_js

ROOT = Path(__file__).resolve().parent.parent
STATIC_JS = ROOT / "papertrader" / "web" / "static" / "js"
JS_TESTS = Path(__file__).resolve().parent / "js"


def node_suite(tmp_path: Path) -> Path:
    """A directory with the codec, its tables, the vectors and the node tests side by side."""
    where = tmp_path / "js"
    shutil.copytree(STATIC_JS, where)
    (where / "protocol" / "tables.js").write_text(tables_js(), encoding="utf-8")
    for test in JS_TESTS.glob("*.test.mjs"):
        shutil.copy(test, where / test.name)
    (tmp_path / "golden.json").write_text(json.dumps(golden_json()), encoding="utf-8")
    return where


def test_javascript_codec_agrees_with_the_golden_vectors(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is missing: scripts/ensure-os-packages.sh installs nodejs"
    where = node_suite(tmp_path)
    tests = sorted(p.name for p in where.glob("*.test.mjs"))
    result = subprocess.run(
        [node, "--test", *tests],
        cwd=where,
        env={"PT_GOLDEN_JSON": str(tmp_path / "golden.json"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "# fail 0" in output
    passed = int(output.split("# pass ")[1].split()[0])
    assert passed >= 40, output[-2000:]


@pytest.mark.parametrize("name", ["INSTRUCTIONS", "ERROR_CODES", "TRANSITIONS", "VALUE_TYPES"])
def test_tables_module_exports_every_table(name: str) -> None:
    assert f"export const {name} = Object.freeze(" in tables_js()


def test_the_vendored_chart_is_the_pinned_version_with_its_license() -> None:
    package = json.loads((ROOT / "web" / "package.json").read_text())
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    pinned = package["dependencies"]["uplot"]
    assert lock["packages"]["node_modules/uplot"]["version"] == pinned
    vendor = ROOT / "papertrader" / "web" / "static" / "vendor" / "uplot"
    assert (
        (vendor / "uPlot.iife.min.js")
        .read_text()
        .startswith(f"/*! https://github.com/leeoniya/uPlot (v{pinned}) */")
    )
    assert "MIT" in (vendor / "LICENSE").read_text()
