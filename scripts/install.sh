#!/usr/bin/env bash
# Create .venv (once) and install the project with its test and bench extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.installed"
# Again when the build changes: the compiled per-frame code is made by this install.
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ] \
  || [ relay/core/_speedups.pyx -nt "$STAMP" ] || [ relay/core/_speedups.pxd -nt "$STAMP" ] \
  || [ relay/io/_frame_path.pyx -nt "$STAMP" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test,bench]'
  touch "$STAMP"
fi
