"""The checker contract (popframe.testing.contracts) run against the test
kit's MemoryChecker and the passwd-file checker (with its real thread pool)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from twisted.cred.checkers import ICredentialsChecker

from popframe.auth.passwdfile import PasswdFileChecker
from popframe.auth.schemes import make_hash
from popframe.testing import MemoryChecker
from popframe.testing.contracts import CheckerContract

pytestmark = pytest.mark.core


class TestMemoryChecker(CheckerContract):
    def make_checker(self, users: dict[str, bytes], tmp_path: Path) -> ICredentialsChecker:
        return MemoryChecker(users)


class TestPasswdFileChecker(CheckerContract):
    #: One user per scheme, so every kind of secret lookup answers for someone.
    SCHEMES = ("PLAIN", "SCRAM-SHA-256", "SHA512-CRYPT", "CRAM-MD5")

    def make_checker(self, users: dict[str, bytes], tmp_path: Path) -> ICredentialsChecker:
        self.path = tmp_path / "users"
        schemes = itertools.cycle(self.SCHEMES)
        self.path.write_text("".join(
            f"{user}:{make_hash(next(schemes), password)}::::::login_delay=60\n"
            for user, password in users.items()
        ))
        return PasswdFileChecker(self.path)

    def break_backend(self, checker: ICredentialsChecker) -> None:
        self.path.unlink()
