"""The examples work as documented.  The third-party store,
examples/hello-store, is installed and served in tests/test_hello_store.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from popframe.auth.passwdfile import PasswdFile
from popframe.auth.schemes import verify_password

pytestmark = pytest.mark.core

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_passwd_file_parses() -> None:
    record = PasswdFile(EXAMPLES / "users").lookup("alice")
    assert record is not None and verify_password(record.password, b"change me")
