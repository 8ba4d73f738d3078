"""The passwd-file: parsing, reloading, the cred checker and its plugin.

The checker gets a ``run_blocking`` that runs the work at once, so no reactor
or thread is needed except in the one test of the real thread pool.
"""

from __future__ import annotations

import hmac
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin, getPlugins
from zope.interface.verify import verifyObject

from popframe.auth import passwdfile, stored
from popframe.auth.credentials import ISecretLookup
from popframe.auth.passwdfile import (
    PasswdFile,
    PasswdFileChecker,
    PasswdFileCheckerFactory,
    PasswdRecord,
    parse_line,
    parse_passwd,
)
from popframe.auth.schemes import make_hash
from popframe.config import ConfigurationError
from popframe.errors import TemporaryFailure
from popframe.interfaces import PlaintextSecret
from popframe.protocol.sasl.scram import ScramRecord
from popframe.stores import run_synchronously
from popframe.testing import HeldRunner, result_of

pytestmark = pytest.mark.core

#: The name other test modules import.
run_now = run_synchronously

T = TypeVar("T")

ALICE_PASSWORD = b"alice's secret"
BOB_PASSWORD = b"bob's secret"



@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(
        "# test users\n"
        f"alice:{make_hash('SHA512-CRYPT', ALICE_PASSWORD, rounds=1000)}:1000:1000::/home/alice::\n"
        f"bob:{make_hash('SHA512-CRYPT', BOB_PASSWORD, rounds=1000)}\n"
        "carol:{PLAIN}carol's secret\n"
        "nobody:\n"
    )
    return path


def login(checker: PasswdFileChecker, user: bytes, password: bytes) -> bytes:
    return result_of(checker.requestAvatarId(UsernamePassword(user, password)))


# -- parsing ----------------------------------------------------------------------------


def test_parse_full_line() -> None:
    record = parse_line(
        "alice@example.org:{PLAIN}pw:1000:1001:Alice Smith:/home/alice:/bin/sh:"
        "userdb_mail=maildir:~/Maildir  quota_rule=*:storage=1G nodelay"
    )
    assert record == PasswdRecord(
        user="alice@example.org",
        password="{PLAIN}pw",
        uid=1000,
        gid=1001,
        home="/home/alice",
        extra={"userdb_mail": "maildir:~/Maildir", "quota_rule": "*:storage=1G", "nodelay": ""},
    )


def test_parse_short_lines() -> None:
    assert parse_line("bob:{PLAIN}pw") == PasswdRecord("bob", "{PLAIN}pw", None, None, None, {})
    assert parse_line("bob:$6$x$y::::::") == PasswdRecord("bob", "$6$x$y", None, None, None, {})
    assert parse_line("bob:").password == ""


def test_parse_uid_and_gid_names() -> None:
    record = parse_line("bob:x:root:root")
    assert (record.uid, record.gid) == (0, 0)
    with pytest.raises(ValueError, match="uid"):
        parse_line("bob:x:no-such-user-here")
    with pytest.raises(ValueError, match="gid"):
        parse_line("bob:x:1:no-such-group-here")


@pytest.mark.parametrize("line", ["just-a-password", ":{PLAIN}pw", "bob:pw:１２"])
def test_parse_bad_lines(line: str) -> None:
    with pytest.raises(ValueError):
        parse_line(line)


def test_record_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(parse_line("bob:{PLAIN}hunter2"))


def test_parse_file_skips_bad_lines_and_logs_them_without_passwords(logged: list[str]) -> None:
    data = (
        b"# comment\n"
        b"\n"
        b"   \n"
        b"  # indented comment\n"
        b"alice:{PLAIN}one\r\n"
        b"hunter2-on-its-own\n"
        b"bob:{PLAIN}two:hunter3\n"
        b"carol:{PLAIN}\xff\n"
        b":{PLAIN}hunter4\n"
        b"alice:{PLAIN}second alice\n"
        b"dave:{PLAIN}four"
    )
    snapshot = parse_passwd(data, "users")
    assert sorted(snapshot.records) == ["alice", "dave"]
    assert snapshot.records["alice"].password == "{PLAIN}one"  # CR stripped, first line wins
    skipped = [message for message in logged if "skipped" in message]
    assert [message.split(":")[1] for message in skipped] == ["6", "7", "8", "9", "10"]
    assert not any("hunter" in message for message in logged)


def test_typical_password_is_of_the_most_common_scheme() -> None:
    snapshot = parse_passwd(b"a:{PLAIN}x\nb:{SSHA}abc\nc:{ssha}def\nd:\ne:$6$bare\n")
    assert snapshot.typical_password == "{SSHA}abc"
    assert parse_passwd(b"# nobody\n").typical_password is None


# -- the file ------------------------------------------------------------------------------


def test_lookup(users: Path) -> None:
    passwd = PasswdFile(users)
    alice = passwd.lookup("alice")
    assert alice is not None and alice.home == "/home/alice" and alice.uid == 1000
    assert passwd.lookup("Alice") is None  # exact match
    assert passwd.lookup("mallory") is None


def test_no_reload_while_unchanged(users: Path) -> None:
    passwd = PasswdFile(users)
    assert passwd.current() is passwd.current()


def test_reload_after_edit_of_another_size(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:{PLAIN}one\n")
    passwd = PasswdFile(path)
    assert passwd.lookup("alice") == parse_line("alice:{PLAIN}one")
    path.write_text("alice:{PLAIN}three\nbob:{PLAIN}two\n")
    assert passwd.lookup("alice") == parse_line("alice:{PLAIN}three")
    assert passwd.lookup("bob") is not None


def test_reload_after_edit_of_the_same_size(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:{PLAIN}one\n")
    passwd = PasswdFile(path)
    assert passwd.lookup("alice") == parse_line("alice:{PLAIN}one")
    before = os.stat(path)
    path.write_text("alice:{PLAIN}two\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert passwd.lookup("alice") == parse_line("alice:{PLAIN}two")


def test_reload_after_replace(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:{PLAIN}one\n")
    passwd = PasswdFile(path)
    assert passwd.lookup("alice") is not None
    new = tmp_path / "users.new"
    new.write_text("bobby:{PLAIN}one\n")
    os.replace(new, path)
    assert passwd.lookup("alice") is None and passwd.lookup("bobby") is not None


def test_missing_file_is_a_temporary_failure(tmp_path: Path, logged: list[str]) -> None:
    path = tmp_path / "users"
    path.write_text("alice:{PLAIN}one\n")
    passwd = PasswdFile(path)
    assert passwd.lookup("alice") is not None
    path.unlink()
    for _ in range(3):
        with pytest.raises(TemporaryFailure) as caught:
            passwd.lookup("alice")  # not from the old table
    assert str(tmp_path) not in str(caught.value)  # the client reads this
    assert len([message for message in logged if "cannot read" in message]) == 1
    path.write_text("alice:{PLAIN}one\n")
    assert passwd.lookup("alice") is not None


def test_unreadable_file_is_a_temporary_failure(tmp_path: Path) -> None:
    with pytest.raises(TemporaryFailure):
        PasswdFile(tmp_path).lookup("alice")  # a directory: open() fails even for root


# -- the checker ----------------------------------------------------------------------------


@pytest.fixture
def checker(users: Path) -> PasswdFileChecker:
    return PasswdFileChecker(users, run_blocking=run_synchronously)


def test_checker_is_a_credentials_checker(checker: PasswdFileChecker) -> None:
    verifyObject(ICredentialsChecker, checker)
    assert list(checker.credentialInterfaces) == [passwdfile.IUsernamePassword]


def test_right_password(checker: PasswdFileChecker) -> None:
    assert login(checker, b"alice", ALICE_PASSWORD) == b"alice"
    assert login(checker, b"bob", BOB_PASSWORD) == b"bob"
    assert login(checker, b"carol", b"carol's secret") == b"carol"


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (b"alice", BOB_PASSWORD),  # wrong password
        (b"mallory", ALICE_PASSWORD),  # no such user
        (b"Alice", ALICE_PASSWORD),  # names are case-sensitive
        (b"nobody", b"anything"),  # no password in the file
        (b"alice", b""),
        (b"", ALICE_PASSWORD),
        (b"\xff\xfe", ALICE_PASSWORD),  # not UTF-8
    ],
)
def test_bad_credentials_are_all_alike(checker: PasswdFileChecker, user: bytes, password: bytes) -> None:
    with pytest.raises(UnauthorizedLogin):
        login(checker, user, password)


def test_unknown_user_costs_a_verification(
    checker: PasswdFileChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    real = stored.verify_password

    def spy(stored: str, password: bytes, default_scheme: str = "CRYPT") -> bool:
        verified.append(stored)
        return real(stored, password, default_scheme)

    monkeypatch.setattr(stored, "verify_password", spy)
    for user in (b"mallory", b"nobody", b"alice"):
        with pytest.raises(UnauthorizedLogin):
            login(checker, user, b"guess")
    assert len(verified) == 3
    assert all(stored.startswith("{SHA512-CRYPT}$6$rounds=1000$") for stored in verified)


def test_unknown_user_in_an_empty_file_costs_a_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    monkeypatch.setattr(stored, "verify_password", lambda stored, *args: verified.append(stored))
    path = tmp_path / "users"
    path.write_text("")
    with pytest.raises(UnauthorizedLogin):
        login(PasswdFileChecker(path, run_blocking=run_synchronously), b"mallory", b"guess")
    assert verified == [stored.FALLBACK_DUMMY]


def test_empty_password_is_refused_without_work(checker: PasswdFileChecker) -> None:
    def no_work(function: Callable[..., T], *args: Any) -> Deferred[T]:
        raise AssertionError("nothing should be verified")

    checker = PasswdFileChecker(checker.passwd_file, run_blocking=no_work)
    with pytest.raises(UnauthorizedLogin):
        login(checker, b"alice", b"")


def test_unknown_scheme_refuses_and_is_logged(tmp_path: Path, logged: list[str]) -> None:
    path = tmp_path / "users"
    path.write_text("alice:{NOPE}secret\n")
    with pytest.raises(UnauthorizedLogin):
        login(PasswdFileChecker(path, run_blocking=run_synchronously), b"alice", b"secret")
    assert any("alice" in message and "NOPE" in message for message in logged)


def test_default_scheme(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:secret\n")
    plain = PasswdFileChecker(path, default_scheme="PLAIN", run_blocking=run_synchronously)
    assert login(plain, b"alice", b"secret") == b"alice"
    with pytest.raises(UnauthorizedLogin):
        login(PasswdFileChecker(path, run_blocking=run_synchronously), b"alice", b"secret")  # CRYPT
    with pytest.raises(ValueError):
        PasswdFileChecker(path, default_scheme="NOPE")


def test_missing_file_fails_temporarily(users: Path, checker: PasswdFileChecker) -> None:
    assert login(checker, b"alice", ALICE_PASSWORD) == b"alice"
    users.unlink()
    with pytest.raises(TemporaryFailure):
        login(checker, b"alice", ALICE_PASSWORD)


def test_str_credentials(checker: PasswdFileChecker) -> None:
    assert login(checker, "carol", "carol's secret") == b"carol"  # type: ignore[arg-type]


def test_concurrency_is_bounded(users: Path) -> None:
    pool = HeldRunner()
    checker = PasswdFileChecker(users, concurrency=2, run_blocking=pool)
    attempts = [checker.requestAvatarId(UsernamePassword(b"carol", b"carol's secret")) for _ in range(5)]
    assert len(pool.pending) == 2
    pool.run_next()
    assert result_of(attempts[0]) == b"carol"
    assert len(pool.pending) == 2  # the third one started
    pool.run_all()
    assert [result_of(attempt) for attempt in attempts[1:]] == [b"carol"] * 4


class _ThreadReactor:
    """Just what the default runner uses of a reactor."""

    def __init__(self) -> None:
        self.from_thread: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.triggers: list[tuple[str, str, Callable[[], Any]]] = []

    def callFromThread(self, function: Callable[..., Any], *args: Any) -> None:
        self.from_thread.append((function, args))

    def addSystemEventTrigger(self, phase: str, event: str, function: Callable[[], Any]) -> None:
        self.triggers.append((phase, event, function))


def test_default_runner_uses_a_pool_stopped_with_the_reactor(users: Path) -> None:
    reactor = _ThreadReactor()
    checker = PasswdFileChecker(users, reactor=reactor)
    attempts = [
        checker.requestAvatarId(UsernamePassword(b"alice", ALICE_PASSWORD)),
        checker.requestAvatarId(UsernamePassword(b"alice", BOB_PASSWORD)),
    ]
    [(phase, event, stop)] = reactor.triggers
    assert (phase, event) == ("during", "shutdown")
    stop()  # joins the workers after the queued work ran
    for function, args in reactor.from_thread:
        function(*args)
    assert result_of(attempts[0]) == b"alice"
    with pytest.raises(UnauthorizedLogin):
        result_of(attempts[1])


# -- secrets for the mechanisms that verify in the core (ISecretLookup) -------------------------

SCRAM_FIELD = (
    "{SCRAM-SHA-256}4096,aLNl000TvfgTbpcHID9B9A==,GnWHSAIzK4kqynk05/Mr2L/u1JbTd+hZBBsLdlxPakk=,"
    "s8yd3UslJx59YPOJx8eokaaV8wILjLedZmDSAwDiUMY="
)
CRAM_MD5_FIELD = "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29"
CHALLENGE = b"<1896.697170952@postoffice.example.net>"


@pytest.fixture
def secrets_checker(users: Path) -> PasswdFileChecker:
    with open(users, "a") as f:
        f.write(f"sam:{SCRAM_FIELD}\ndave:{CRAM_MD5_FIELD}\nnope:{{NOPE}}x\n")
    return PasswdFileChecker(users, run_blocking=run_synchronously)


def lookup(checker: PasswdFileChecker, user: str, kind: str) -> Any:
    return result_of(checker.lookup_secret(user, kind))


def test_checker_is_a_secret_lookup(secrets_checker: PasswdFileChecker) -> None:
    verifyObject(ISecretLookup, secrets_checker)
    assert set(secrets_checker.secret_kinds) == {"scram-sha-256", "plaintext", "cram-md5"}


def test_scram_keys_come_from_scram_fields_only(secrets_checker: PasswdFileChecker) -> None:
    record = lookup(secrets_checker, "sam", "scram-sha-256")
    assert record == ScramRecord.from_password(b"correct horse", record.salt, 4096)
    for user in ("alice", "carol", "dave", "nobody", "mallory", "nope", ""):
        assert lookup(secrets_checker, user, "scram-sha-256") is None
    assert login(secrets_checker, b"sam", b"correct horse") == b"sam"  # and USER/PASS works


def test_plaintext_comes_from_plain_fields_only(secrets_checker: PasswdFileChecker) -> None:
    assert lookup(secrets_checker, "carol", "plaintext") == PlaintextSecret(b"carol's secret")
    for user in ("alice", "sam", "dave", "nobody", "mallory", "nope"):
        assert lookup(secrets_checker, user, "plaintext") is None


def test_cram_md5_keys_come_from_cram_md5_and_plain_fields(secrets_checker: PasswdFileChecker) -> None:
    dave = lookup(secrets_checker, "dave", "cram-md5")
    assert dave.hmac(CHALLENGE) == hmac.new(b"correct horse", CHALLENGE, "md5").digest()
    carol = lookup(secrets_checker, "carol", "cram-md5")
    assert carol.hmac(CHALLENGE) == hmac.new(b"carol's secret", CHALLENGE, "md5").digest()
    for user in ("alice", "sam", "nobody", "mallory", "nope"):
        assert lookup(secrets_checker, user, "cram-md5") is None
    assert lookup(secrets_checker, "carol", "kerberos-ticket") is None


def test_secret_lookup_logs_no_secret(secrets_checker: PasswdFileChecker, logged: list[str]) -> None:
    for user in ("carol", "sam", "dave", "nope"):
        for kind in secrets_checker.secret_kinds:
            lookup(secrets_checker, user, kind)
    assert any("nope" in message and "NOPE" in message for message in logged)  # the admin's mistake
    text = "\n".join(logged)
    for secret in ("carol's secret", "aLNl000", "GnWHSAIz", "38b57fd1", "correct horse"):
        assert secret not in text


def test_secret_lookup_runs_off_the_reactor_thread_with_bounded_concurrency(users: Path) -> None:
    pool = HeldRunner()
    checker = PasswdFileChecker(users, concurrency=2, run_blocking=pool)
    lookups = [checker.lookup_secret("carol", "plaintext") for _ in range(3)]
    assert len(pool.pending) == 2
    pool.run_all()
    assert [result_of(d) for d in lookups] == [PlaintextSecret(b"carol's secret")] * 3


def test_secret_lookup_fails_temporarily_without_the_file(users: Path, secrets_checker: PasswdFileChecker) -> None:
    users.unlink()
    with pytest.raises(TemporaryFailure):
        lookup(secrets_checker, "carol", "plaintext")


# -- the plugin ---------------------------------------------------------------------------------


def test_plugin_is_found() -> None:
    found = [f for f in getPlugins(strcred.ICheckerFactory) if f.authType == "passwd-file"]
    assert len(found) == 1
    [factory] = found
    assert isinstance(factory, PasswdFileCheckerFactory)
    verifyObject(strcred.ICheckerFactory, factory)
    assert IPlugin.providedBy(factory)
    assert "Dovecot" in factory.authHelp and "SHA512-CRYPT" in factory.authHelp


def test_make_checker(users: Path) -> None:
    checker = strcred.makeChecker(f"passwd-file:{users}")
    assert isinstance(checker, PasswdFileChecker)
    verifyObject(ICredentialsChecker, checker)
    assert checker.passwd_file.path == str(users)


def test_an_empty_file_is_fine_at_startup(tmp_path: Path) -> None:
    (tmp_path / "users").touch()
    assert isinstance(strcred.makeChecker(f"passwd-file:{tmp_path / 'users'}"), PasswdFileChecker)


def test_relative_path_is_made_absolute(users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(users.parent)
    checker = strcred.makeChecker("passwd-file:users")
    assert isinstance(checker, PasswdFileChecker)
    assert checker.passwd_file.path == str(users)


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("passwd-file", "no path"),
        ("passwd-file:", "no path"),
        ("passwd-file:  ", "no path"),
        ("passwd-file:/no/such/file", "No such file"),
    ],
)
def test_configuration_errors(description: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        strcred.makeChecker(description)
    assert caught.value.key == "--auth"
    assert caught.value.problem.startswith("passwd-file: ")
    assert problem in caught.value.problem


def test_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        strcred.makeChecker(f"passwd-file:{tmp_path}")


@pytest.mark.process
def test_plugin_module_does_not_install_a_reactor() -> None:
    """twistd imports plugins before it picks the reactor."""
    code = (
        "import sys, twisted.plugins.popframe_auth\n"
        "assert 'twisted.internet.reactor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mechanisms_follow_the_secrets_the_file_can_give(tmp_path: Path) -> None:
    """SCRAM-SHA-256 is offered only when some user has SCRAM keys, CRAM-MD5
    and APOP only when some field can serve them: a client that picks the
    strongest mechanism offered (mpop tries SCRAM first) must not be sent
    to one no user can pass."""
    from twisted.cred.portal import Portal

    from popframe.auth.credentials import serviceable

    path = tmp_path / "users"
    path.write_text(f"alice:{make_hash('SHA512-CRYPT', b'x', rounds=1000)}\n")
    offered = ("SCRAM-SHA-256", "CRAM-MD5", "APOP", "PLAIN")
    checker = PasswdFileChecker(path, run_blocking=run_synchronously)
    assert serviceable(Portal(None, [checker]), offered) == ("PLAIN",)
    with open(path, "a") as f:
        f.write(f"bob:{make_hash('SCRAM-SHA-256', b'y')}\n")
    checker.passwd_file.current()  # the next login reads the changed file
    assert serviceable(Portal(None, [checker]), offered) == ("SCRAM-SHA-256", "PLAIN")
    with open(path, "a") as f:
        f.write("carol:{PLAIN}z\n")
    checker.passwd_file.current()
    assert serviceable(Portal(None, [checker]), offered) == offered
