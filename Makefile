# Shortcuts for the scripts the README documents (scripts/run.sh, scripts/check.sh).
.PHONY: run check install bench clean conformance

install:
	scripts/install.sh

run:
	scripts/run.sh

check:
	scripts/check.sh

bench: install
	.venv/bin/python -m bench

# RFC 6455: the Autobahn|Testsuite against the relay's WebSocket layer, both sides (docs/conformance.md).
conformance: install
	scripts/conformance.sh

clean:
	rm -rf .venv build *.egg-info .mypy_cache .ruff_cache .pytest_cache
