"""Shared fixtures and hooks. Tests never read ../shared: a user's fresh clone has none."""

from __future__ import annotations

import os

import pytest
import torch
from ci_skips import NEEDS_CUDA

# `--precision auto` on a CPU times the model's own step in fp32 and bf16 (attnlab.device): a
# wall-clock measurement whose outcome differs between CPUs and with the machine's load. The suite
# runs under a forced outcome instead, the same on every CPU: fp32 unless the caller forces another
# (`make test` runs the tests marked `precision` a second time with ATTNLAB_BF16_PROBE=fast).
# Subprocesses (the CLI, torchrun) inherit it. Tests of the probe itself unset it.
os.environ.setdefault("ATTNLAB_BF16_PROBE", "slow")

# tests/ci_skips.py: in CI, a skip for a missing dependency is a failure; pytester: tests of that hook.
pytest_plugins = ["ci_skips", "pytester"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_catalogue():
    """Entries a test (or a function-scoped fixture) registers in the model catalogue are removed after
    it, and entries it replaced come back, so no test sees another's models. Entries registered by
    module- or session-scoped fixtures (set up before this one) stay for their scope."""
    from attnlab import catalog

    before = dict(catalog._REGISTRY)
    yield
    changed = {name for name, info in catalog._REGISTRY.items() if before.get(name) is not info}
    if changed:
        catalog._REGISTRY.clear()
        catalog._REGISTRY.update(before)
        for name in changed:
            catalog._LOADED.pop(name, None)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads cost seconds
    (with another busy process, 2 threads made a training step ~20x slower than 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)




def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` (tests/gpu/) are skipped, and reported as skipped, where no CUDA GPU is
    visible; ``benchmarks/gpu_check.py`` runs them (``pytest -m cuda``) on a GPU machine."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NEEDS_CUDA)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
