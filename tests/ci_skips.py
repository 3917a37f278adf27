"""A pytest plugin (loaded by ``tests/conftest.py``): in CI, a test skipped because a registry package
or ``transformers`` is missing fails instead.

On a developer's machine such a skip is a convenience; in CI (``CI=true``, which GitHub Actions and
most CI services set) every dependency is installed by ``make test``, so the same skip can only mean
a packaging break, and a skip would hide it behind a green run.
"""

from __future__ import annotations

import os
import re

import pytest

from attnlab.files import REGISTRY_PACKAGES

# A skip reason naming one of these is a missing dependency (install hints name the pip package,
# importorskip names the module).
_NAMES = [name for p in REGISTRY_PACKAGES for name in (p.distribution, p.module)] + ["transformers"]
MISSING_DEPENDENCY = re.compile("|".join(re.escape(name) for name in _NAMES))
NEEDS_CUDA = "needs a CUDA GPU"  # the skip reason of every `cuda`-marked test on a machine without one


def in_ci() -> bool:
    """Whether the run is a CI run (``CI`` set to ``true`` or ``1``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _fail_if_missing_dependency(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if MISSING_DEPENDENCY.search(reason):
            report.outcome = "failed"
            report.longrepr = (
                f"skipped in CI for a missing dependency, which CI must have ({reason}); "
                "`make test` installs every registry package and transformers"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test (or its fixture) that skipped."""
    report = yield
    _fail_if_missing_dependency(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A whole module that skipped while being collected (``pytest.importorskip`` at its top)."""
    report = yield
    _fail_if_missing_dependency(report)
    return report
