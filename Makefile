# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing
# and install the project into it (again only when pyproject.toml or constraints.txt changed),
# with constraints.txt: this repository's machines use the CPU build of torch on their disk.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
BIN := $(VENV)/bin
# import-linter reads the package as installed (the top-level folders live inside `loomos`);
# a plain copy of it is built here for that.
LINT_TREE := .loomos/lint-tree

.PHONY: demo test test-fast up lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
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

# ruff, then the layer contracts of pyproject.toml's [tool.importlinter] on the installed layout.
lint: $(STAMP)
	$(BIN)/ruff check .
	rm -rf $(LINT_TREE)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
		--target $(LINT_TREE) .
	rm -rf build
	cd $(LINT_TREE) && PYTHONPATH=. ../../$(BIN)/lint-imports ../../pyproject.toml

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --quick

clean:
	rm -rf .loomos .pytest_cache build
