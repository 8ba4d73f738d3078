"""In CI (``CI=true``) a test that skips because its server or tool is
missing fails instead: one hook for every skip in the suite, so no test
file needs its own check.  A skip that no machine can avoid (root ignoring
file permissions, a contract hook a backend does not implement) stays a
skip; :data:`UNAVOIDABLE` names them."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

__all__ = ["UNAVOIDABLE", "must_not_skip", "pytest_runtest_makereport"]

#: Parts of skip reasons that hold on every machine, CI's included.
UNAVOIDABLE = (
    "root ignores file permissions",
    "root writes anywhere",
    "is not implemented for this",
    "does not provide",
    "a flock cannot lapse while its process lives",
    "their tests say why",  # test_crash_safety's summary: the batches failed already
)


def must_not_skip(reason: str) -> bool:
    """Whether a skip for ``reason`` is a failure here."""
    return os.environ.get("CI") == "true" and not any(part in reason for part in UNAVOIDABLE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if must_not_skip(reason):
            report.outcome = "failed"
            report.longrepr = f"must run in CI, not skip: {reason}"
