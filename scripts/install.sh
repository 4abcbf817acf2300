#!/usr/bin/env bash
# Create .venv (once) and install the project with its test and bench extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.installed"
# Again when the build changes: the compiled per-frame code is made by this install (its
# sources: every .pyx and .pxd, and the .py a .pxd types, compiled as it is).
compiled_sources() {
  find relay -name '*.pyx' -o -name '*.pxd'
  for typed in $(find relay -name '*.pxd'); do
    if [ -f "${typed%.pxd}.py" ]; then echo "${typed%.pxd}.py"; fi
  done
}
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ] \
  || [ -n "$(compiled_sources | xargs -r -I{} find {} -newer "$STAMP")" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test,bench]'
  touch "$STAMP"
fi
