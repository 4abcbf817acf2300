#!/usr/bin/env bash
# Create .venv (once) and install the project with its test and bench extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.installed"
# Again when the build changes: the compiled per-frame code is made by this install. Its sources:
# every .pyx and .pxd, and the .py a .pxd types (compiled as it is).
build_is_stale() {
  for source in $(find relay -name '*.pyx' -o -name '*.pxd'); do
    for file in "$source" "${source%.*}.py"; do
      if [ -f "$file" ] && [ "$file" -nt "$STAMP" ]; then return 0; fi
    done
  done
  return 1
}
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ] || build_is_stale; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test,bench]'
  touch "$STAMP"
fi
