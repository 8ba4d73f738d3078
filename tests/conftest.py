"""Fixtures shared by the integration tests: a real ``twistd pop3`` process
on loopback, with a Maildir per user, a passwd-file and a certificate."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# In CI a skip for a missing server or tool fails (support/ci.py).
from support.ci import pytest_runtest_makereport  # noqa: F401

# The hook that fails the collection of a test of no kind (support/kinds.py).
from support.kinds import pytest_collection_modifyitems  # noqa: F401
from twisted.logger import formatEvent, globalLogPublisher

from popframe.auth.schemes import make_hash
from popframe.testing import TWISTD, ServerProcess, start_server
from popframe.tls import make_self_signed

# The redis_server fixture, and the SQL databases (dsn, shared_databases),
# for every test module that names them.
pytest_plugins = ["redis_support", "sql_support"]

__all__ = ["TWISTD", "MailHome", "ServerProcess", "server_args", "start_server"]


@dataclass
class MailHome:
    """Users, their Maildirs, a passwd-file and a certificate in one dir."""

    root: Path
    users: dict[str, str] = field(default_factory=dict)
    _sequence: int = 0

    @property
    def passwd_file(self) -> Path:
        return self.root / "users"

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def key(self) -> Path:
        return self.root / "key.pem"

    @property
    def template(self) -> str:
        return str(self.root / "mail" / "%u" / "Maildir")

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def add_user(self, user: str, password: str, scheme: str = "SHA512-CRYPT") -> None:
        self.users[user] = password
        with open(self.passwd_file, "a") as f:
            f.write(f"{user}:{make_hash(scheme, password.encode())}::::::\n")
        for sub in ("new", "cur", "tmp"):
            (self.maildir(user) / sub).mkdir(parents=True, exist_ok=True)

    def deliver(self, user: str, message: bytes) -> Path:
        """Deliver like an MTA: write in tmp/, rename into new/."""
        self._sequence += 1
        name = f"{1700000000 + self._sequence}.M{self._sequence}P{os.getpid()}.test"
        tmp = self.maildir(user) / "tmp" / name
        tmp.write_bytes(message)
        final = self.maildir(user) / "new" / name
        tmp.rename(final)
        return final

    def messages(self, user: str) -> list[bytes]:
        """The stored messages, oldest first (the server's numbering)."""
        files = [p for sub in ("new", "cur") for p in (self.maildir(user) / sub).iterdir()]
        files.sort(key=lambda p: p.name)
        return [p.read_bytes() for p in files]


@pytest.fixture
def mail_home(tmp_path: Path) -> MailHome:
    home = MailHome(tmp_path)
    home.passwd_file.touch()
    make_self_signed(home.cert, home.key)
    return home


def server_args(home: MailHome, *extra: str) -> list[str]:
    return [
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={home.key}:certKey={home.cert}",
        "--store", f"maildir:{home.template}",
        "--auth", f"passwd-file:{home.passwd_file}",
        "--tls-cert", str(home.cert), "--tls-key", str(home.key),
        # One process: the port-reading above expects one "starting on" line
        # per listener (tests/test_workers.py covers --workers N).
        "--workers", "1",
        *extra,
    ]


@pytest.fixture
def pop3_server(mail_home: MailHome) -> Iterator[ServerProcess]:
    mail_home.add_user("alice", "alice password")
    mail_home.add_user("bob@example.org", "bob's p4ss")
    server = start_server(server_args(mail_home), mail_home.root, listeners=2)
    yield server
    server.stop()


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Every log line written during the test, formatted as text."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        text = formatEvent(event)
        if text:
            lines.append(text)

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)
