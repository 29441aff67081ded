# Every target bootstraps .venv itself; the stamp makes it quick when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench sim venv clean wheel-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/dripline demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

# Two workers: the end-to-end tests and the simulator on one, one at a time, the rest
# on the other (see tests/conftest.py). `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

# Build the sdist and wheel, install the wheel in a fresh virtualenv outside the tree and
# run dripline from it (about 45 s; CI runs it after `make test`).
wheel-check: $(STAMP)
	PYTHON=$(BIN)/python .ci/wheel-smoke

# The deterministic simulator beyond the seeds `make test` runs: `make sim SEEDS=20000`.
SEEDS ?= 10000
SIM_START ?= 0
sim: $(STAMP)
	$(BIN)/python -m dripline.sim --seeds $(SEEDS) --start $(SIM_START)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dripline.db*
