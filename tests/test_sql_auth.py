"""The SQL checker on SQLite, PostgreSQL and MariaDB: popframe's own table
(``--auth sql:dsn=URL``) and an admin's own (``--auth sql:FILE.toml``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

from popframe.auth import schemes
from popframe.auth import stored as stored_fields
from popframe.auth.cache import VerifiedPasswords
from popframe.auth.sql import SQLChecker, SQLCheckerFactory, checker_from_toml
from popframe.cli.user import add_user
from popframe.config import ConfigurationError
from popframe.db import Database, parse_url
from popframe.errors import TemporaryFailure
from popframe.interfaces.auth import SecretKind, UserSettings
from popframe.testing import wait_for

pytestmark = pytest.mark.external

SCHEMES = sorted({s.name for s in schemes.SCHEMES.values() if s.make})


def login(checker: SQLChecker, user: str | bytes, password: bytes) -> bytes:
    name = user.encode("utf-8") if isinstance(user, str) else user
    return wait_for(checker.requestAvatarId(UsernamePassword(name, password)))


def add(dsn: str, name: str, password: bytes, scheme: str = "SHA512-CRYPT", **extra: object
        ) -> str:
    stored = schemes.make_hash(scheme, password, rounds=1000 if "CRYPT" in scheme and
                               scheme.startswith("SHA") else None)
    Database(parse_url(dsn)).call(add_user, name, stored, extra.get("maildrop"),
                                  extra.get("login_delay"))
    return stored


@pytest.fixture
def checker(dsn: str) -> SQLChecker:
    return SQLChecker(Database(parse_url(dsn)))


def test_every_scheme_the_passwd_file_makes(dsn: str, checker: SQLChecker) -> None:
    for scheme in SCHEMES:
        if scheme.startswith("ARGON2"):
            continue  # 250 ms each at Dovecot's cost: one is enough (below)
        user = f"user-{scheme.lower()}"
        add(dsn, user, b"pw " + scheme.encode(), scheme)
        assert login(checker, user, b"pw " + scheme.encode()) == user.encode()
        with pytest.raises(UnauthorizedLogin):
            login(checker, user, b"wrong")
    add(dsn, "argon", b"slow", "ARGON2ID")
    assert login(checker, "argon", b"slow") == b"argon"


def test_verify_only_schemes(dsn: str, checker: SQLChecker) -> None:
    digest = hashlib.sha256(b"old").digest()
    import base64

    Database(parse_url(dsn)).call(add_user, "legacy", "{SHA256}" + base64.b64encode(digest).decode())
    assert login(checker, "legacy", b"old") == b"legacy"


def test_unknown_disabled_and_wrong_all_cost_one_verification(
        dsn: str, checker: SQLChecker, monkeypatch: pytest.MonkeyPatch) -> None:
    add(dsn, "alice", b"right")
    Database(parse_url(dsn)).call(add_user, "carol", schemes.make_hash("SHA512-CRYPT", b"right"))
    Database(parse_url(dsn)).call(
        lambda s: s.execute("UPDATE popframe_users SET enabled = ? WHERE name = ?",
                            (False, "carol")))
    verified: list[str] = []

    def spy(stored: str, password: bytes, default_scheme: str = "CRYPT") -> bool:
        verified.append(stored)
        return False

    monkeypatch.setattr(stored_fields, "verify_password", spy)  # users, and what unknown ones cost
    for user in ("alice", "mallory", "carol"):
        with pytest.raises(UnauthorizedLogin):
            login(checker, user, b"guess")
    assert len(verified) == 3
    assert all(stored.startswith("{SHA512-CRYPT}$6$") for stored in verified)
    monkeypatch.undo()
    with pytest.raises(UnauthorizedLogin):  # disabled: right password, still refused
        login(checker, "carol", b"right")


@pytest.mark.parametrize("evil", ["alice' --", "' OR '1'='1", "alice'; DROP TABLE popframe_users; --",
                                  "alice\\", 'alice" OR "1"="1', "%u", "?"])
def test_sql_injection_through_the_user_name(dsn: str, checker: SQLChecker, evil: str) -> None:
    add(dsn, "alice", b"right")
    with pytest.raises(UnauthorizedLogin):
        login(checker, evil, b"right")
    with pytest.raises(UnauthorizedLogin):
        login(checker, evil, b"' OR '1'='1")
    assert wait_for(checker.user_settings(evil)) is None
    assert login(checker, "alice", b"right") == b"alice"  # the table is still there


def test_settings_and_secrets(dsn: str, checker: SQLChecker) -> None:
    stored = add(dsn, "bob", b"scram secret", "SCRAM-SHA-256", maildrop="team", login_delay=300)
    add(dsn, "plain", b"apop secret", "PLAIN")
    assert wait_for(checker.user_settings("bob")) == UserSettings(login_delay=300, maildrop="team")
    assert wait_for(checker.user_settings("nobody")) is None
    assert wait_for(checker.lookup_secret("bob", SecretKind.SCRAM_SHA_256)) == \
        schemes.scram_record(stored)
    assert wait_for(checker.lookup_secret("nobody", SecretKind.SCRAM_SHA_256)) is None
    assert wait_for(checker.lookup_secret("plain", SecretKind.PLAINTEXT)).password == b"apop secret"
    assert wait_for(checker.lookup_secret("bob", SecretKind.PLAINTEXT)) is None


def test_auth_cache_skips_the_hash(dsn: str, checker: SQLChecker,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    add(dsn, "alice", b"right")
    checker.verified_passwords = VerifiedPasswords(60)
    assert login(checker, "alice", b"right") == b"alice"
    monkeypatch.setattr(stored_fields, "verify_password", lambda *a: pytest.fail("hashed again"))
    assert login(checker, "alice", b"right") == b"alice"
    monkeypatch.undo()
    Database(parse_url(dsn)).call(  # a changed password stops matching at once
        lambda s: s.execute("UPDATE popframe_users SET password = ? WHERE name = ?",
                            (schemes.make_hash("SSHA512", b"new"), "alice")))
    # The lookup is not cached: the next login reads the new field.
    with pytest.raises(UnauthorizedLogin):
        login(checker, "alice", b"right")


def test_factory_and_unreachable_database(dsn: str) -> None:
    add(dsn, "alice", b"right")
    checker = SQLCheckerFactory().generateChecker(f"dsn={dsn}")
    assert login(checker, "alice", b"right") == b"alice"
    with pytest.raises(ConfigurationError, match="sql:dsn=URL"):
        SQLCheckerFactory().generateChecker("postgresql://x@y/z")
    down = SQLChecker(Database(parse_url("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")))
    with pytest.raises(TemporaryFailure):
        login(down, "alice", b"right")


# -- an admin's own table ------------------------------------------------------------------


def make_mailbox_table(dsn: str) -> None:
    def create(session):  # type: ignore[no-untyped-def]
        session.execute("DROP TABLE IF EXISTS mailbox")
        session.execute("CREATE TABLE mailbox (username VARCHAR(100), domain VARCHAR(100), "
                        "pw VARCHAR(300), home VARCHAR(200), active INTEGER, pct VARCHAR(10))")
        session.execute("INSERT INTO mailbox VALUES (?, ?, ?, ?, ?, ?)",
                        ("alice", "example.com", schemes.make_hash("SSHA512", b"right"),
                         "/var/mail/alice", 1, "100%"))
        session.execute("INSERT INTO mailbox VALUES (?, ?, ?, ?, ?, ?)",
                        ("off", "example.com", schemes.make_hash("SSHA512", b"right"), None, 0,
                         "5%"))

    Database(parse_url(dsn)).call(create)


def write_toml(path: Path, **keys: str) -> str:
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    path.write_text("".join(f"{key} = {quoted(value)}\n" for key, value in keys.items()))
    return str(path)


def test_password_query_on_an_admins_table(dsn: str, tmp_path: Path) -> None:
    make_mailbox_table(dsn)
    query = ("SELECT pw AS password, home AS maildrop, active AS enabled FROM mailbox "
             "WHERE username = '%n' AND domain = %d AND pct LIKE '%%'")
    checker = SQLCheckerFactory().generateChecker(
        write_toml(tmp_path / "sql.toml", dsn=dsn, password_query=query))
    assert login(checker, "alice@example.com", b"right") == b"alice@example.com"
    assert wait_for(checker.user_settings("alice@example.com")) == \
        UserSettings(maildrop="/var/mail/alice")
    for user, password in (("alice@example.com", b"wrong"), ("alice@other.org", b"right"),
                           ("off@example.com", b"right"), ("' OR 1=1 --@example.com", b"right")):
        with pytest.raises(UnauthorizedLogin):
            login(checker, user, password)


def test_toml_mistakes_name_the_key(dsn: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown key 'user_query'"):
        checker_from_toml(write_toml(tmp_path / "a.toml", dsn=dsn, user_query="SELECT 1"))
    with pytest.raises(ConfigurationError, match="no dsn"):
        checker_from_toml(write_toml(tmp_path / "b.toml", password_query="SELECT %u"))
    with pytest.raises(ConfigurationError, match="password_query: the query has no %u"):
        checker_from_toml(write_toml(tmp_path / "c.toml", dsn=dsn, password_query="SELECT 1"))
    with pytest.raises(ConfigurationError, match="default_scheme"):
        checker_from_toml(write_toml(tmp_path / "d.toml", dsn=dsn, default_scheme="ROT13"))
    with pytest.raises(ConfigurationError, match="cannot read"):
        checker_from_toml(str(tmp_path / "missing.toml"))
