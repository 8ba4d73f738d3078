"""HAProxy and the example cluster (examples/cluster/run.py) for the tests.

Locally a missing ``haproxy`` (or PostgreSQL, Redis) skips the tests that
need it; with ``CI=true`` it fails them, so CI never passes without
running them (tests/run.sh installs the ``haproxy`` package)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cluster" / "run.py"


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"cluster tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def load_example() -> ModuleType:
    """examples/cluster/run.py as a module (``Cluster``, ``HAPROXY``...)."""
    name = "popframe_cluster_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def haproxy() -> str:
    """The haproxy binary, or a skip (a failure in CI)."""
    binary = load_example().HAPROXY
    try:
        subprocess.run([binary, "-v"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        unavailable(f"no haproxy ({binary}): {error}")
    return str(binary)
