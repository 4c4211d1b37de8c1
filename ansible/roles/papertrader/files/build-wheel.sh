#!/usr/bin/env bash
# Build the PaperTrader wheel on the controller: build-wheel.sh PYTHON SOURCE_DIR BUILD_DIR
#
# The sources are copied to BUILD_DIR first, so the build leaves nothing in the
# source tree (setuptools writes build/ and *.egg-info beside pyproject.toml).
# SOURCE_DATE_EPOCH makes the wheel reproducible: the same sources give the same
# bytes, so the hosts see a change (and restart) only when the code changed.
# Prints the wheel's path as the last line.
set -euo pipefail
python=$1 source=$2 build=$3
[ -f "$source/pyproject.toml" ] || { echo "no pyproject.toml in $source" >&2; exit 1; }
rm -rf "$build"
mkdir -p "$build/src" "$build/dist"
tar -C "$source" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml setup.py requirements.txt README.md papertrader cli | tar -C "$build/src" -xf -
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$build/dist" "$build/src" >&2
rm -rf "$build/src"
wheel=$(ls "$build"/dist/papertrader-*.whl)
echo "$wheel"
