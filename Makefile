# returnflow — every target sets up what it needs: .venv, packages, embedded broker and database.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: browser promtool screenshots bench-page run test lint typecheck unit schemas docs bench bench-intake bench-hop chaos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "returnflow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/returnflow up --demo

test: $(STAMP) lint typecheck browser promtool
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

# Browser tests drive Debian's chromium (never `playwright install`, which downloads). As root with apt
# (CI) it is installed here, with a CJK font for the zh-CN page; otherwise one line says how.
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and fonts-wqy-zenhei for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; \
	  else \
	    echo "browser tests need Debian's chromium: sudo apt-get install -y chromium fonts-wqy-zenhei"; exit 1; \
	  fi; \
	fi

# The alert rules' tests run `promtool test rules` (tests/unit/test_alerts.py): Debian's prometheus package ships
# it. As root with apt (CI) it is installed here (measured: about a minute); otherwise one line says how.
promtool:
	@if ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing prometheus (for promtool) for the alert rules' tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "the alert rules' tests need promtool: sudo apt-get install -y --no-install-recommends prometheus"; exit 1; \
	  fi; \
	fi

# phone-viewport screenshots of the customer's page in its three locales (docs/screenshots/)
screenshots: $(STAMP) browser
	$(BIN)/python -m tests.e2e.screenshots docs/screenshots

# the customer's page under load, next to a static page of the same process, while the surge runs
bench-page: $(STAMP)
	$(BIN)/python -m bench.page $(BENCH_ARGS)

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
