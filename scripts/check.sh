#!/usr/bin/env bash
# Install, then every check CI runs: ruff (lint and format), mypy --strict, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
BIN="${VENV:-.venv}/bin"
"$BIN/ruff" check relay tests bench examples
"$BIN/ruff" format --check relay tests bench examples
"$BIN/mypy" relay bench
# Two workers: most tests wait on sockets and processes, so the suite takes ~6 minutes, not ~10.
"$BIN/pytest" -q -n 2 "$@"
