# One command each: `make run` (set up + the default job), `make test` (set up + the test suite).
# torch==2.13.0 is installed first: on these machines that pin is a local CPU build, while an
# unpinned torch would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup run test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,report]"
	touch $@

run: setup
	$(BIN)/rftkit run

test: setup
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs
