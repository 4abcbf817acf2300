#!/usr/bin/env bash
# Install, then every check CI runs: ruff (lint and format), mypy --strict, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
BIN="${VENV:-.venv}/bin"
"$BIN/ruff" check relay tests bench examples
"$BIN/ruff" format --check relay tests bench examples
"$BIN/mypy" relay bench
"$BIN/pytest" -q "$@"
