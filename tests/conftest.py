"""Shared test settings."""

import os
import shutil
from pathlib import Path

import pytest
import torch

# The processes tests start (DVC stages, torchrun ranks, the CLI) inherit one OpenMP thread as well:
# under `pytest -n 2` two such processes share the two cores, and spin-waiting threads would fight.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread: the tests' batches are tiny, and on a shared 2-core machine OpenMP's
    spin-waiting made two threads 2.5x (models) to 70x (training steps) slower than one."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def pytest_collection_modifyitems(items):
    """The modules with the most end-to-end (slow) tests first, each module's tests in their own order.

    `make test` runs `pytest -n auto --dist loadfile --no-loadscope-reorder`: each module goes whole to
    one worker, in this order, so the longest modules start at once instead of last."""
    slow: dict[str, int] = {}
    for item in items:
        slow[item.module.__name__] = slow.get(item.module.__name__, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.module.__name__])  # stable: the order within a module is kept


@pytest.fixture(scope="session")
def vega_cache(tmp_path_factory) -> Path:
    """An XDG_CACHE_HOME holding `cnnbench plots`' three npm tarballs, fetched once with npm (the npm registry
    is reachable where CI runs; with no npm installed, the tests of the offline plots page cannot run)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: `cnnbench plots` takes Vega from its npm packages")
    from cnnbench.report.plots_page import VEGA_PACKAGES, npm_pack

    home = tmp_path_factory.mktemp("xdg")
    folder = home / "cnnbench" / "vega"
    folder.mkdir(parents=True)
    for name, version, _, _ in VEGA_PACKAGES:
        npm_pack(name, version, folder)
    return home
