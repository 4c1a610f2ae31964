# returnflow — every target sets up what it needs: .venv, packages, embedded broker and database.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit schemas docs bench bench-intake bench-hop chaos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "returnflow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/returnflow up --demo

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/returnflow contracts export

docs: $(STAMP)
	$(BIN)/returnflow docs
	$(BIN)/python -m apphost.deploygen

bench: $(STAMP)
	$(BIN)/python -m bench.surge $(BENCH_ARGS)

bench-intake: $(STAMP)
	$(BIN)/python -m bench.intake

# what consuming one event costs in Python, layer by layer (aiokafka, validation, FastStream)
bench-hop: $(STAMP)
	$(BIN)/python -m bench.hop --out bench/results/hop.json

# fault drill: 5,000 returns under kill -9, a broker and a PostgreSQL restart, poison and gateway faults
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --returns 5000 --kills 10

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache
