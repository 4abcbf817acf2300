# Shortcuts for the scripts the README documents (scripts/run.sh, scripts/check.sh).
.PHONY: run check install bench clean

install:
	scripts/install.sh

run:
	scripts/run.sh

check:
	scripts/check.sh

bench: install
	.venv/bin/python -m bench

clean:
	rm -rf .venv build *.egg-info .mypy_cache .ruff_cache .pytest_cache
