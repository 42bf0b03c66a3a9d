# The two Quickstart commands, `make offline` and `make test`, set everything up on first use.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup offline test test-fast repro check-metrics update-baseline bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The whole offline suite (embedded digits, no network): fetch, prepare, audit, train, evaluate, report.
offline: setup
	dvc repro report@offline

# The whole suite, as CI runs it. pytest exits 5 when it collects no test: that fails too.
test: setup
	pytest -q

# The edit-run loop: everything but the end-to-end tests marked slow (real DVC, subprocesses, DDP).
test-fast: setup
	pytest -q -m "not slow"

# The real comparison (CIFAR-10 and the Kaggle butterflies need the network and, in practice, a GPU).
repro: setup
	dvc repro

check-metrics: setup
	cnnbench check-metrics

update-baseline: setup
	cnnbench update-baseline

bench: setup
	python bench/throughput.py
