"""The four kinds of test, as pytest markers registered in
``pyproject.toml``: ``core``, ``adapter``, ``process``, ``external``.  A
test is of exactly one, so ``-m core`` (or ``-m "not external"``) selects
a clean subset; ``tests/conftest.py`` imports the hook below, which fails
the collection of a test that has none, or two."""

from __future__ import annotations

import pytest

__all__ = ["KINDS", "pytest_collection_modifyitems"]

#: The markers, from the fastest and most contained to the least.
KINDS = ("core", "adapter", "process", "external")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test its one kind, and fail the collection when a test
    has none: its module's ``pytestmark``, or a mark on the test or its
    class, which replaces the module's (so a module of core tests marks
    its one process test alone).  Runs before ``-m`` selects."""
    kinds: dict[pytest.Item, str] = {}
    unmarked: list[str] = []
    for item in items:
        for node in reversed(item.listchain()):  # the test first, then outwards
            found = {mark.name for mark in node.own_markers if mark.name in KINDS}
            if len(found) > 1:
                raise pytest.UsageError(f"{node.nodeid}: more than one kind of test: {sorted(found)}")
            if found:
                kinds[item] = found.pop()
                break
        else:
            unmarked.append(item.nodeid)
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} tests have no kind; mark each module (pytestmark = pytest.mark.core) "
            f"or test with one of {', '.join(KINDS)} (see pyproject.toml): " + ", ".join(unmarked))
    for item in items:  # the closest kind only: drop the farther ones
        for node in item.listchain():
            node.own_markers[:] = [m for m in node.own_markers
                                   if m.name not in KINDS or node is item]
        if not item.get_closest_marker(kinds[item]):
            item.add_marker(kinds[item])
