"""The examples work as documented."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from popframe.auth.passwdfile import PasswdFile
from popframe.auth.schemes import verify_password

from conftest import TWISTD

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_third_party_store_is_found_as_a_plugin() -> None:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES / "hello-store")}
    result = subprocess.run([*TWISTD, "pop3", "--help-stores"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "hello:[GREETING]" in result.stdout and "maildir" in result.stdout


def test_example_passwd_file_parses() -> None:
    record = PasswdFile(EXAMPLES / "users").lookup("alice")
    assert record is not None and verify_password(record.password, b"change me")
