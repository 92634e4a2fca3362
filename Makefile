# One command each: `make run` (set up + the default job), `make test` (set up + lint + the test suite).
# torch==2.13.0 is installed first: on these machines that pin is a local CPU build, while an
# unpinned torch would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup run test clean chromium

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,report]"
	touch $@

run: setup
	$(BIN)/rftkit run

test: setup chromium
	$(BIN)/ruff check rftkit tests benchmarks experiments examples
	$(BIN)/pytest -q

# Headless Chromium for the report's browser test (tests/test_report_browser.py, skipped
# without it): Debian's package, installed only when missing and only as root (CI).
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || echo "could not install chromium; the browser test will be skipped"; \
	else echo "chromium missing (as root: apt-get install -y chromium); the browser test will be skipped"; fi

clean:
	rm -rf $(VENV) runs
