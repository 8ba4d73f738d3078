"""No user enumeration: an unknown user and a wrong password get the same
reply after the same work.

Timing is not asserted here (machines are noisy); what is asserted is that
both go through the same path: one hash verification each, against a hash
of the same scheme, the same reply, the same throttling and the same log
line.  ``benchmarks/enumeration_timing.py`` measures the time on a real
server.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from popframe.auth import stored
from popframe.auth.passwdfile import PasswdFileChecker
from popframe.auth.schemes import make_hash, split_field
from popframe.server import ServerConfig
from popframe.stores import run_synchronously
from popframe.testing import MemoryStore, connect_in_memory
from popframe.throttle import MemoryThrottleStore, Throttle

pytestmark = pytest.mark.adapter

FAILED = b"-ERR [AUTH] authentication failed\r\n"


@pytest.fixture
def verifications(monkeypatch) -> list[str]:
    """The scheme of every stored field a password is verified against."""
    calls: list[str] = []
    real = stored.verify_password

    def counting(stored: str, password: bytes, *args: Any) -> bool:
        calls.append(split_field(stored, "")[0].upper())
        return real(stored, password, *args)

    monkeypatch.setattr(stored, "verify_password", counting)
    return calls


@pytest.fixture
def checker(tmp_path) -> PasswdFileChecker:
    users = tmp_path / "users"
    users.write_text("".join(
        f"{user}:{make_hash('SHA512-CRYPT', password.encode())}::::::\n"
        for user, password in [("alice", "alice password"), ("bob", "bob password")]
    ))
    return PasswdFileChecker(users, run_blocking=run_synchronously)



def attempt(checker: PasswdFileChecker, commands: bytes, throttle: Throttle | None = None,
            host: str = "127.0.0.1") -> tuple[bytes, float]:
    """Run one login attempt; (the reply, seconds the server held it)."""
    conn = connect_in_memory(MemoryStore({"alice": [], "bob": []}), checker,
                             ServerConfig(throttle=throttle), peer=IPv4Address("TCP", host, 1))
    start = len(conn.client.received)
    conn.send(commands)
    held = 0.0
    while True:
        now = conn.clock.seconds()
        pending = [c.getTime() - now for c in conn.clock.getDelayedCalls() if c.getTime() - now < 300]
        if not pending:
            break
        conn.clock.advance(min(pending))
        conn.pump.flush()
        held += min(pending)
    last = bytes(conn.client.received[start:]).splitlines(keepends=True)[-1]
    return last, held


USER_PASS = {
    "unknown user": b"USER nobody\r\nPASS alice password\r\n",
    "wrong password": b"USER alice\r\nPASS wrong password\r\n",
}


@pytest.mark.parametrize("case", USER_PASS)
def test_one_verification_of_the_same_scheme(checker, verifications, case: str) -> None:
    reply, _ = attempt(checker, USER_PASS[case])
    assert reply == FAILED
    assert verifications == ["SHA512-CRYPT"]


@pytest.mark.parametrize("mechanism", ["USER", "PLAIN"])
def test_unknown_user_and_wrong_password_look_alike(checker, verifications, logged,
                                                    mechanism: str) -> None:
    """Same reply, same delay, same work, same log line but for the name."""

    def commands(user: bytes, password: bytes) -> bytes:
        if mechanism == "USER":
            return b"USER %s\r\nPASS %s\r\n" % (user, password)
        return b"AUTH PLAIN %s\r\n" % base64.b64encode(b"\0%s\0%s" % (user, password))

    throttle = Throttle(MemoryThrottleStore(Clock()), base=1, max_auth_failures=0,
                        max_ip_failures=0)
    unknown = attempt(checker, commands(b"nobody", b"x"), throttle, "127.0.0.1")
    wrong = attempt(checker, commands(b"alice", b"x"), throttle, "127.0.0.2")
    assert unknown == wrong == (FAILED, 1.0)
    assert verifications == ["SHA512-CRYPT", "SHA512-CRYPT"]
    failures = [line for line in logged if line.startswith("login failed")]
    assert len(failures) == 2
    assert failures[0].replace("'nobody'", "'alice'").replace("127.0.0.1:", "127.0.0.2:") == failures[1]


def test_typical_hash_is_the_files_most_common_scheme(tmp_path, verifications) -> None:
    users = tmp_path / "users"
    users.write_text(
        f"a:{make_hash('SSHA512', b'x')}::::::\n"
        f"b:{make_hash('SHA512-CRYPT', b'x')}::::::\n"
        f"c:{make_hash('SHA512-CRYPT', b'y')}::::::\n"
    )
    checker = PasswdFileChecker(users, run_blocking=run_synchronously)
    assert attempt(checker, b"USER nobody\r\nPASS x\r\n")[0] == FAILED
    assert verifications == ["SHA512-CRYPT"]
