# The two Quickstart commands, `make offline` and `make test`, set everything up on first use.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup offline test test-fast repro check-metrics update-baseline bench bench-gpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,deploy]'
	touch $@

setup: $(VENV)/.installed

# The whole offline suite (embedded digits, no network): fetch, prepare, audit, train, evaluate, report.
offline: setup
	dvc repro report@offline

# Test processes: one per core (pytest-xdist). `make test PYTEST_WORKERS=0` runs in this process.
PYTEST_WORKERS ?= auto

# The whole suite, as CI runs it. pytest exits 5 when it collects no test: that fails too.
test: setup
	pytest -q -n $(PYTEST_WORKERS)

# The edit-run loop: everything but the end-to-end tests marked slow (real DVC, subprocesses, DDP).
test-fast: setup
	pytest -q -n $(PYTEST_WORKERS) -m "not slow"

# The real comparison (CIFAR-10 and the Kaggle butterflies need the network and, in practice, a GPU).
repro: setup
	dvc repro

check-metrics: setup
	cnnbench check-metrics

update-baseline: setup
	cnnbench update-baseline

# The three training loops on this machine's CPU, at the sizes of the README's CPU table.
bench: setup
	python bench/throughput.py --images 4096 --batch-size 256 --epochs 2 --workers 2

# Everything the GPU path claims (bench/gpu.py), sized for 8 minutes of one H100/H200. No setup on purpose:
# it imports only what the GPU machine's image has (bench/gpu_image_packages.txt), so it runs there as is.
bench-gpu:
	PYTHONPATH=src $(PYTHON) bench/gpu.py --out reports/benchmarks
