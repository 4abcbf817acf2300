#!/usr/bin/env bash
# RFC 6455 conformance of the relay's own WebSocket layer (docs/conformance.md): the
# Autobahn|Testsuite against its server side (wstest -m fuzzingclient, an echo server on
# relay.io.websocket.accept) and its client side (wstest -m fuzzingserver, driven by
# relay.io.websocket.connect). Loopback only; exits 1 if any case fails.
#
#   scripts/conformance.sh [--install-only] [--workdir DIR] [--exclude 'PATTERN'...] [--timeout S]
#
# wstest runs on Python 2.7 only, so it lives in a virtualenv of its own outside the project
# (RELAY_CONFORMANCE_HOME, default ~/.cache/relay-conformance), installed once with the pins
# below. Exit status 3: it cannot be had here (no Python 2.7, or the install failed).
set -euo pipefail
cd "$(dirname "$0")/.."

HOME_DIR="${RELAY_CONFORMANCE_HOME:-$HOME/.cache/relay-conformance}"
PYTHON="${PYTHON:-${VENV:-.venv}/bin/python}"
TIMEOUT_S="${RELAY_CONFORMANCE_TIMEOUT:-1200}" # both runs; a full one takes about a minute
# The last versions that run on Python 2.7, resolved by pip from autobahntestsuite's own
# requirements and frozen here so a later release cannot break the install.
VIRTUALENV_PIN="virtualenv==20.15.1"
PINS=(
  autobahntestsuite==25.10.1 autobahn==0.10.9 Twisted==19.10.0 txaio==2.1.0 wsaccel==0.6.6
  ujson==2.0.3 zope.interface==4.6.0 Automat==22.10.0 attrs==21.4.0 constantly==15.1.0
  hyperlink==21.0.0 idna==2.10 incremental==16.10.1 PyHamcrest==1.10.1 six==1.16.0
  klein==17.10.0 Werkzeug==1.0.1 Jinja2==2.11.3 MarkupSafe==1.1.1 pyOpenSSL==19.1.0
  cryptography==3.3.2 cffi==1.15.1 pycparser==2.21 enum34==1.1.10 ipaddress==1.0.23
  service-identity==18.1.0 pyasn1==0.5.1 pyasn1-modules==0.3.0 typing==3.10.0.0
  unittest2==1.1.0 linecache2==1.0.0 traceback2==1.4.0 argparse==1.4.0 setuptools==44.0.0
)
VENV2="$HOME_DIR/venv"
STAMP="$VENV2/.relay-installed-$(echo "$VIRTUALENV_PIN ${PINS[*]}" | sha256sum | cut -c1-12)"

unavailable() {
  echo "conformance: unavailable: $*" >&2
  exit 3
}

find_python2() {
  local candidate
  for candidate in "${PYTHON2:-}" python2.7 "$(pyenv root 2>/dev/null)"/versions/2.7*/bin/python2.7 \
    /usr/bin/python2.7; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (2, 7)' \
      >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install() {
  [ -f "$STAMP" ] && return 0
  local py2 log="$HOME_DIR/install.log"
  py2="$(find_python2)" || unavailable "no working Python 2.7 (set PYTHON2), which wstest needs"
  echo "conformance: installing autobahntestsuite into $VENV2 with $py2 (log: $log)"
  rm -rf "$HOME_DIR/bootstrap" "$VENV2"
  if ! {
    "$py2" -m pip install --disable-pip-version-check --target "$HOME_DIR/bootstrap" "$VIRTUALENV_PIN" &&
      PYTHONPATH="$HOME_DIR/bootstrap" "$py2" -m virtualenv "$VENV2" &&
      "$VENV2/bin/pip" install --disable-pip-version-check "${PINS[@]}" &&
      "$VENV2/bin/python" -c 'import autobahntestsuite.wstest'
  } >"$log" 2>&1; then
    tail -n 5 "$log" >&2
    unavailable "autobahntestsuite did not install (see $log)"
  fi
  touch "$STAMP"
}

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR/.lock"
flock 9 # one install at a time (make and pytest may run together)
install
flock -u 9
exec 9>&-
if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
exec timeout --kill-after=10 "$TIMEOUT_S" \
  "$PYTHON" -m tests.support.autobahn check --python "$VENV2/bin/python" "$@"
