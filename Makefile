# The two commands of the README: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test unit integration faults lint typecheck bench docs clean

$(STAMP): pyproject.toml helper_sdk/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -e '.[dev]' -e ./helper_sdk -e ./examples/helpers/wordcount_helper
	touch $(STAMP)

run: $(STAMP)
	PY=$(BIN)/python scripts/run.sh

TESTS   := tests helper_sdk/tests examples/helpers/tests examples/helpers/wordcount_helper/tests

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q $(TESTS)

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(TESTS)

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration tests

# Fault injection (docs/reliability.md): kills and outages under load; -s prints each scenario's line as it ends.
faults: $(STAMP)
	$(BIN)/python -m pytest -q -s -m faults tests/faults

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy
	cd helper_sdk && ../$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

docs: $(STAMP)
	$(BIN)/python scripts/write_config_docs.py

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
