# The two Quickstart commands, `make offline` and `make test`, set everything up on first use.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup lock offline test test-fast repro plots check-metrics update-baseline status checkout metrics-diff \
	bench bench-gpu

# The environment is requirements.lock's exact versions, then this package (editable, no further deps). It
# is keyed on the content of the lock and pyproject.toml, not on their dates: a fresh checkout (CI's, with
# the .venv restored from its cache) reuses an environment made from the same files instead of reinstalling.
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | sha256sum | cut -c1-16)

# The lock is CPython 3.11's (CI's); another Python gets pyproject.toml's ranges, and says so.
LOCKED_PYTHON := 3.11

# The environment needs about 7 GB (PyPI's torch is the CUDA build) and pip's temporary copies on top: checked
# first, so that a full disk is one line, not pip's Errno 28 halfway through an install.
SETUP_FREE_GB ?= 9

$(STAMP):
	@free=$$(df -Pk . | awk 'NR == 2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt $(SETUP_FREE_GB) ]; then \
		echo "make setup: $$free GB free here, the environment needs $(SETUP_FREE_GB) GB (torch with its CUDA libraries); free some space, or set SETUP_FREE_GB" >&2; \
		exit 1; \
	fi
	$(PYTHON) -m venv $(VENV)
	if [ "$$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$(LOCKED_PYTHON)" ]; then \
		$(VENV)/bin/pip install --quiet -r $(LOCK) && $(VENV)/bin/pip install --quiet --no-deps -e .; \
	else \
		echo "Python is not $(LOCKED_PYTHON): installing pyproject.toml's ranges, not $(LOCK)'s exact versions"; \
		$(VENV)/bin/pip install --quiet -e '.[test,deploy]'; \
	fi
	rm -f $(VENV)/.installed*
	touch $@

setup: $(STAMP)

# requirements.lock made again from pyproject.toml's ranges, in a throwaway environment (a few minutes).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test,deploy]'
	{ sed -n '/^#/p' $(LOCK); .lock-venv/bin/pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv

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

# Every reported suite's training curves, dvc_plots/index.html: DVC's page with Vega inline (npm), no CDN.
plots: setup
	cnnbench plots

check-metrics: setup
	cnnbench check-metrics

# DVC's everyday commands for one suite (SUITE, default offline) and the stages upstream of it. Bare `dvc status`
# and `dvc checkout` also take every stage of the study, which a machine without the network never ran: about
# 1,000 lines of status, and a checkout that exits 255 (docs/pipeline.md says why there is one pipeline file).
SUITE ?= offline
SUITE_ONLY = echo "suite $(SUITE) and its upstream only: the other suites' stages are left out (docs/pipeline.md)"
status: setup
	@$(SUITE_ONLY)
	dvc status report@$(SUITE) --with-deps

checkout: setup
	@$(SUITE_ONLY)
	dvc checkout report@$(SUITE) --with-deps

metrics-diff: setup
	@dir=$$(python -c "import sys, yaml; s = yaml.safe_load(open('params.yaml'))['suites']; \
		sys.exit('make: no suite $(SUITE) in params.yaml (suites: ' + ', '.join(s) + ')') \
		if '$(SUITE)' not in s else print(s['$(SUITE)']['dir'])") && $(SUITE_ONLY) && \
		dvc metrics diff --targets "$$dir/metrics.json"

update-baseline: setup
	cnnbench update-baseline

# The three training loops on this machine's CPU, at the sizes of the CPU table in docs/benchmark.md.
bench: setup
	python bench/throughput.py --images 4096 --batch-size 256 --epochs 2 --workers 2

# Everything the GPU path claims (bench/gpu.py), sized for 8 minutes of one H100/H200. No setup on purpose:
# it imports only what the GPU machine's image has (bench/gpu_image_packages.txt), so it runs there as is.
bench-gpu:
	PYTHONPATH=src $(PYTHON) bench/gpu.py --out reports/benchmarks
