# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-spark lint typecheck unit bench lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/convex-cdc demo --dest ./demo-lake

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

test: lint typecheck unit

# Only tests/spark (part of `make test` too): the rendered Databricks pipelines on Apache
# Spark, against one local Spark Connect server. Needs a JDK 17 (javac and java on PATH).
test-spark: $(STAMP)
	$(BIN)/python -m pytest tests/spark -q

# `make bench BENCH_ARGS="--docs 200000 --skip-peer"`; see `bench/run.py --help`.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Refresh the lock file after changing dependency ranges in pyproject.toml.
lock:
	rm -rf /tmp/convex-cdc-lock && $(PYTHON) -m venv /tmp/convex-cdc-lock
	/tmp/convex-cdc-lock/bin/pip install --quiet '.[dev]'
	/tmp/convex-cdc-lock/bin/pip freeze --exclude convex-cdc > constraints.txt

clean:
	rm -rf $(VENV) demo-lake .pytest_cache .mypy_cache .ruff_cache bench/.peer-venv
