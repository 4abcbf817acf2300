#!/usr/bin/env bash
# Install, then every check CI runs: ruff (lint and format), mypy --strict, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
BIN="${VENV:-.venv}/bin"
"$BIN/ruff" check relay tests bench examples
"$BIN/ruff" format --check relay tests bench examples
"$BIN/mypy" relay bench
# Two workers: most tests wait on sockets and processes, so the suite takes ~5 minutes, not ~10.
# Twice, once per build (relay/core/speedups.py): the compiled one, which must be there (a broken
# build must not pass as Python), then the pure-Python twins a machine without gcc runs.
echo "== compiled build" >&2
RELAY_REQUIRE_EXTENSIONS=1 "$BIN/pytest" -q -n 2 "$@"
echo "== pure-Python build (RELAY_NO_EXTENSIONS=1)" >&2
RELAY_NO_EXTENSIONS=1 "$BIN/pytest" -q -n 2 "$@"
