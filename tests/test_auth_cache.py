"""--auth-cache-ttl: recently verified passwords skip the hash."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import pytest
from support.clocks import ManualClock
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.python import usage

from popframe.auth.cache import VerifiedPasswords
from popframe.auth.passwdfile import PasswdFileChecker
from popframe.auth.schemes import make_hash
from popframe.interfaces import SecretKind
from popframe.tap import Options
from popframe.testing import RecordingRunner, result_of

pytestmark = pytest.mark.core

T = TypeVar("T")


def test_a_remembered_password_is_verified_until_the_ttl() -> None:
    clock = ManualClock(100.0)
    cache = VerifiedPasswords(60, clock=clock)
    cache.remember("alice", "{X}stored", b"secret")
    assert cache.verified("alice", "{X}stored", b"secret")
    assert not cache.verified("alice", "{X}stored", b"guess")
    assert not cache.verified("bob", "{X}stored", b"secret")
    assert not cache.verified("alice", "{X}changed", b"secret")  # a new password in the source
    clock.now += 60
    assert not cache.verified("alice", "{X}stored", b"secret")
    assert len(cache) == 0  # the expired entry is gone


def test_the_cache_keeps_no_password_and_is_bounded() -> None:
    cache = VerifiedPasswords(60, max_entries=2)
    for user in ("a", "b", "c"):
        cache.remember(user, "s", b"password-" + user.encode())
    assert len(cache) == 2
    assert not cache.verified("a", "s", b"password-a")  # the oldest went first
    assert cache.verified("c", "s", b"password-c")
    assert all(b"password" not in entry.digest for entry in cache._entries.values())
    with pytest.raises(ValueError):
        VerifiedPasswords(0)



def login(checker: PasswdFileChecker, user: bytes, password: bytes) -> bool:
    try:
        result_of(checker.requestAvatarId(UsernamePassword(user, password)))
    except UnauthorizedLogin:
        return False
    return True


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(f"alice:{make_hash('SHA512-CRYPT', b'secret', rounds=1000)}::::::login_delay=5\n")
    return path


def test_a_cached_login_runs_no_hash_and_no_thread(users: Path) -> None:
    runner = RecordingRunner()
    checker = PasswdFileChecker(users, run_blocking=runner,
                                verified_passwords=VerifiedPasswords(60))
    assert login(checker, b"alice", b"secret")
    assert runner.calls == ["verify"]
    assert login(checker, b"alice", b"secret")
    assert runner.calls == ["verify"]  # the second login did not hash
    assert not login(checker, b"alice", b"wrong")
    assert not login(checker, b"alice", b"wrong")
    assert runner.calls == ["verify"] * 3  # failures always hash, and are not cached


def test_a_changed_password_in_the_file_stops_matching_at_once(users: Path) -> None:
    checker = PasswdFileChecker(users, run_blocking=RecordingRunner(),
                                verified_passwords=VerifiedPasswords(3600))
    assert login(checker, b"alice", b"secret")
    users.write_text(f"alice:{make_hash('SHA512-CRYPT', b'new', rounds=1000)}\n")
    os.utime(users, ns=(1, 1))  # a different mtime even on a coarse clock
    assert not login(checker, b"alice", b"secret")
    assert login(checker, b"alice", b"new")


def test_without_the_cache_every_login_hashes(users: Path) -> None:
    runner = RecordingRunner()
    checker = PasswdFileChecker(users, run_blocking=runner)
    assert login(checker, b"alice", b"secret") and login(checker, b"alice", b"secret")
    assert runner.calls == ["verify", "verify"]


def test_user_settings_of_a_current_file_need_no_thread(users: Path) -> None:
    runner = RecordingRunner()
    checker = PasswdFileChecker(users, run_blocking=runner)
    first = result_of(checker.user_settings("alice"))  # the file is not read yet
    assert (first.login_delay, result_of(checker.user_settings("alice")).login_delay) == (5, 5)
    assert runner.calls == ["find_user_settings"]


def test_a_cheap_scheme_is_verified_without_a_thread_once_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{make_hash('SSHA512', b'secret')}\n"
                    f"bob:{make_hash('SHA512-CRYPT', b'secret', rounds=1000)}\n"
                    f"carol:{make_hash('SSHA512', b'secret')}\n")
    runner = RecordingRunner()
    checker = PasswdFileChecker(path, run_blocking=runner)
    assert login(checker, b"alice", b"secret")  # the first login reads the file
    assert runner.calls == ["verify"]
    assert login(checker, b"alice", b"secret") and not login(checker, b"alice", b"wrong")
    assert not login(checker, b"nobody", b"secret")  # costs the typical field: SSHA512
    assert runner.calls == ["verify"]
    assert login(checker, b"bob", b"secret")  # crypt costs a millisecond: a thread
    assert runner.calls == ["verify", "verify"]
    assert result_of(checker.lookup_secret("alice", SecretKind.PLAINTEXT)) is None
    assert runner.calls == ["verify", "verify"]


def options(*args: str, tmp_path: Path) -> Options:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}secret\n")
    parsed = Options()
    parsed.parseOptions(["--listen", "tcp:0", "--store", f"maildir:{tmp_path}/%u",
                         "--auth", f"passwd-file:{users}", *args])
    return parsed


def test_auth_cache_ttl_option(tmp_path: Path) -> None:
    (checker,) = options("--auth-cache-ttl", "300", tmp_path=tmp_path)["credCheckers"]
    assert checker.verified_passwords.ttl == 300
    (checker,) = options(tmp_path=tmp_path)["credCheckers"]
    assert checker.verified_passwords is None
    with pytest.raises(usage.UsageError, match="--auth-cache-ttl: must not be negative"):
        options("--auth-cache-ttl", "-1", tmp_path=tmp_path)
