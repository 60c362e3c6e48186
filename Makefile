# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing
# and install the project into it (again only when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
BIN := $(VENV)/bin

.PHONY: demo test test-fast up lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loomos demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

# Skip the slow end-to-end tests (real Temporal dev server + torchrun) while iterating.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not e2e"

up: $(STAMP)
	$(BIN)/loomos dev

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --quick

clean:
	rm -rf .loomos .pytest_cache
