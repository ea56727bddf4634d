# Two entry points on a fresh machine: `make demo` and `make test`.
# Each creates its own virtualenv (.venv) and installs pinned versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench binary binary-onedir fuzz

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	sh scripts/test_system_deps.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25

binary: $(STAMP)
	PYTHON=$(BIN)/python packaging/build.sh onefile

binary-onedir: $(STAMP)
	PYTHON=$(BIN)/python packaging/build.sh onedir

# Fuzzing (not part of `make test`): every target 10^6 executions or FUZZ_SECONDS each.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt atheris
	$(BIN)/python fuzz/run.py --max-seconds $(FUZZ_SECONDS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
