#!/usr/bin/env bash
# Install, then start the relay. Without client tokens it accepts anyone, which the relay allows
# only on loopback (its default host): set RELAY_CLIENT_TOKENS to require credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export RELAY_ALLOW_UNAUTHENTICATED="${RELAY_ALLOW_UNAUTHENTICATED:-true}"
exec "${VENV:-.venv}/bin/relay" serve "$@"
