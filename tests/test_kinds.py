"""tests/support/kinds.py: every test is of exactly one kind, and a new
test without one fails the collection, not silently joins no subset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

TESTS = Path(__file__).resolve().parent
CONFIG = """[pytest]
markers =
    core: c
    adapter: a
    process: p
    external: e
"""
CONFTEST = "from support.kinds import pytest_collection_modifyitems  # noqa: F401\n"


def collect(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(CONFIG)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(module)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"})


def test_a_test_without_a_kind_fails_the_collection(tmp_path: Path) -> None:
    ran = collect(tmp_path, "def test_new():\n    pass\n")
    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert "1 tests have no kind" in ran.stderr and "test_it.py::test_new" in ran.stderr


def test_two_kinds_on_one_test_fail_the_collection(tmp_path: Path) -> None:
    ran = collect(tmp_path, "import pytest\n\n@pytest.mark.core\n@pytest.mark.process\n"
                            "def test_both():\n    pass\n")
    assert ran.returncode == 4 and "more than one kind" in ran.stderr, ran.stderr


def test_a_mark_on_a_test_replaces_its_modules(tmp_path: Path) -> None:
    module = ("import pytest\n\npytestmark = pytest.mark.core\n\n"
              "def test_fast():\n    pass\n\n@pytest.mark.process\ndef test_slow():\n    pass\n")
    core = collect(tmp_path, module, "-m", "core")
    assert core.returncode == 0, core.stdout + core.stderr
    assert "test_fast" in core.stdout and "test_slow" not in core.stdout
    process = collect(tmp_path, module, "-m", "process")
    assert "test_slow" in process.stdout and "test_fast" not in process.stdout


@pytest.mark.core
def test_in_ci_only_unavoidable_skips_stay_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    from support.ci import must_not_skip

    monkeypatch.setenv("CI", "true")
    assert must_not_skip("curl is installed by tests/run.sh")
    assert not must_not_skip("root ignores file permissions")
    monkeypatch.setenv("CI", "false")
    assert not must_not_skip("curl is installed by tests/run.sh")
