# The two commands a newcomer needs are `make run` and `make check` (see README).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run check install lint typecheck test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Trying it out: without client tokens the relay accepts anyone, which it allows only on loopback.
# Set RELAY_CLIENT_TOKENS (or JWT settings) to require credentials.
run: $(STAMP)
	RELAY_ALLOW_UNAUTHENTICATED=$${RELAY_ALLOW_UNAUTHENTICATED:-true} $(BIN)/relay serve

lint: $(STAMP)
	$(BIN)/ruff check relay tests bench examples
	$(BIN)/ruff format --check relay tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy relay bench

test: $(STAMP)
	$(BIN)/pytest -q

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
