"""Users in a database: the ``--auth sql:`` checker.

- ``--auth sql:dsn=URL``: popframe's own table, ``popframe_users`` (made
  by ``popframe db upgrade``, filled by ``popframe user add``);
- ``--auth sql:/etc/popframe/sql.toml``: an admin's own table, through a
  ``password_query`` as Dovecot's SQL passdb has it::

      dsn = "postgresql://popframe@db.example.com:5432/mail?password_file=/etc/popframe/dbpass"
      password_query = "SELECT pw AS password, home AS maildrop FROM mailbox WHERE username = %u"
      default_scheme = "SHA512-CRYPT"   # for fields without a {SCHEME} prefix; default CRYPT

  ``%u`` (the user name), ``%n`` (its local part), ``%d`` (its domain) are
  sent as parameters, never put into the SQL text (``'%u'`` in quotes, as
  Dovecot writes it, works the same); ``%%`` is a literal ``%``.  The query
  returns one row: ``password`` (any scheme the passwd-file accepts) and,
  optionally, ``maildrop`` (the store's location for the user),
  ``login_delay`` (seconds) and ``enabled`` (false: refused like a wrong
  password).  No row, or more than one, is an unknown user.

Unknown users, disabled users and wrong passwords cost the same: a
lookup and a hash (an unknown user's against the last real hash seen).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from popframe.auth.cache import VerifiedPasswords
from popframe.auth.schemes import DEFAULT_SCHEME, UnknownScheme, find_scheme

# The passwd-file checker's pieces for what every stored-password checker
# does alike: the secrets each SASL kind reads from a field, and the
# verification an unknown user costs.
from popframe.auth.stored import (
    SECRET_KINDS,
    avatar_id,
    login_pair,
    secret_from_field,
    verify_field,
    waste_time,
)
from popframe.config import ConfigurationError
from popframe.db import Database, Rows, configured_database, open_database
from popframe.interfaces.auth import ISecretLookup, IUserSettings, Secret, SecretKind, UserSettings
from popframe.threads import ThreadPoolRunner

__all__ = ["OWN_QUERY", "PasswordQuery", "SQLChecker", "SQLCheckerFactory", "UserRecord"]

log = Logger(namespace="popframe.auth.sql")

OWN_QUERY = ("SELECT password, maildrop, login_delay, expire, enabled FROM popframe_users "
             "WHERE name = %u")

#: Verifications at once (argon2 at Dovecot's defaults takes 64 MiB each).
DEFAULT_CONCURRENCY = 4
#: A lookup's row answers the user-settings question right after the login.
RECENT_SECONDS = 10.0
RECENT_MAX = 10_000

_COLUMNS = ("password", "maildrop", "login_delay", "expire", "enabled")
_TOML_KEYS = ("dsn", "password_query", "default_scheme")
_PLACEHOLDER = re.compile(r"'%([und])'|%([und%])")


@dataclass(frozen=True, slots=True)
class UserRecord:
    password: str = field(repr=False)
    settings: UserSettings
    enabled: bool


class PasswordQuery:
    """An SQL query with ``%u``/``%n``/``%d`` placeholders, run with the
    values as parameters."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.names: list[str] = []
        pieces: list[str] = []
        end = 0
        for match in _PLACEHOLDER.finditer(text):
            pieces.append(text[end:match.start()])
            name = match.group(1) or match.group(2)
            if name == "%":
                pieces.append("\0percent\0")
            else:
                pieces.append("\0param\0")
                self.names.append(name)
            end = match.end()
        pieces.append(text[end:])
        self._template = "".join(pieces)
        if not self.names:
            raise ValueError("the query has no %u (the user name)")
        self._warned: set[str] = set()

    def sql_for(self, format_style: bool) -> str:
        if format_style:
            text = self._template.replace("%", "%%").replace("\0percent\0", "%%")
            return text.replace("\0param\0", "%s")
        return self._template.replace("\0percent\0", "%").replace("\0param\0", "?")

    def parameters(self, user: str) -> tuple[str, ...]:
        local, _, domain = user.partition("@")
        values = {"u": user, "n": local, "d": domain}
        return tuple(values[name] for name in self.names)

    def lookup(self, database: Database, user: str) -> Deferred[UserRecord | None]:
        """``user``'s row, or None (no row, or more than one)."""
        return database.query(self.sql_for(False), self.parameters(user)).addCallback(
            self.record, user)

    def record(self, rows: Rows, user: str) -> UserRecord | None:
        """The user's record from the query's rows."""
        if len(rows) != 1:
            if rows:
                log.error("password_query: more than one row for {user!r}; refused", user=user)
            return None
        columns = [column.lower() for column in rows.columns]
        row = dict(zip(columns, rows[0], strict=True))
        self._warn_unknown(columns)
        password = row.get("password")
        if isinstance(password, (bytes, bytearray, memoryview)):
            password = bytes(password).decode("utf-8", "replace")
        if not password:
            return None
        enabled = row.get("enabled", True)
        delay = row.get("login_delay")
        expire = row.get("expire")
        return UserRecord(
            password=str(password),
            settings=UserSettings(login_delay=int(delay) if delay is not None else None,
                                  expire=int(expire) if expire is not None else None,
                                  maildrop=str(row["maildrop"]) if row.get("maildrop") else None),
            enabled=enabled is None or bool(enabled) and enabled not in ("0", "f", "false", "no"))

    def _warn_unknown(self, columns: list[str]) -> None:
        for column in columns:
            if column not in _COLUMNS and column not in self._warned:
                self._warned.add(column)
                log.warn("password_query returns {column!r}, which popframe does not use "
                         "(known: {known})", column=column, known=", ".join(_COLUMNS))


@implementer(ICredentialsChecker, ISecretLookup, IUserSettings)
class SQLChecker:
    """Checks ``IUsernamePassword`` against users in a database; also the
    stored secrets SCRAM, CRAM-MD5 and APOP need (``ISecretLookup``), and
    ``maildrop``/``login_delay`` (``IUserSettings``).

    Fails with ``UnauthorizedLogin`` for any bad credential, the same for
    unknown users, and with ``TemporaryFailure`` when the database does not
    answer.  A lookup runs in the database's pool, a hash in a pool of its
    own (``run_blocking``), so slow hashes never hold a connection.
    ``verified_passwords``: the ``--auth-cache-ttl`` cache.
    """

    credentialInterfaces = (IUsernamePassword,)
    secret_kinds = SECRET_KINDS

    def __init__(self, database: Database, query: PasswordQuery | None = None, *,
                 default_scheme: str = DEFAULT_SCHEME, concurrency: int = DEFAULT_CONCURRENCY,
                 run_blocking: Any = None, reactor: Any = None,
                 verified_passwords: VerifiedPasswords | None = None) -> None:
        find_scheme(default_scheme)  # an unknown default fails now, not at login
        self.database = database
        self.query = query or PasswordQuery(OWN_QUERY)
        self.default_scheme = default_scheme
        self.verified_passwords = verified_passwords
        self._semaphore = DeferredSemaphore(concurrency)
        self._run_blocking = run_blocking or ThreadPoolRunner("popframe-sql-hash", concurrency,
                                                              reactor)
        self._recent: OrderedDict[str, tuple[float, UserRecord | None]] = OrderedDict()
        self._typical: str | None = None  # a real user's field: what an unknown user costs

    # -- ICredentialsChecker --------------------------------------------------------

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        pair = login_pair(credentials)
        if pair is None:
            return fail(UnauthorizedLogin())
        user, password = pair
        # The lookup (on the reactor with PostgreSQL), then the hash in a
        # pool of its own.
        d = self._lookup(user).addCallback(self._check, user, password)
        return d.addCallback(avatar_id, user)

    def _check(self, record: UserRecord | None, user: str, password: bytes) -> Deferred[bool]:
        cache = self.verified_passwords
        if record is not None and record.enabled and cache is not None and cache.verified(
                user, record.password, password):
            return succeed(True)
        return self._semaphore.run(self._run_blocking, self.verify, user, record, password)

    def verify(self, user: str, record: UserRecord | None, password: bytes) -> bool:
        """Blocking: whether ``password`` is ``record``'s (False for no record)."""
        if record is None:
            waste_time(self._typical, password, self.default_scheme)
            return False
        try:
            matched = verify_field(record.password, password, self.default_scheme)
        except UnknownScheme as error:
            log.error("user {user}: {error}", user=user, error=error)
            return False
        self._typical = record.password
        if matched and record.enabled and self.verified_passwords is not None:
            self.verified_passwords.remember(user, record.password, password)
        return matched and record.enabled

    # -- lookups ---------------------------------------------------------------------

    def _lookup(self, user: str) -> Deferred[UserRecord | None]:
        def remember(record: UserRecord | None) -> UserRecord | None:
            self._remember(user, record)
            return record

        return self.query.lookup(self.database, user).addCallback(remember)

    def _remember(self, user: str, record: UserRecord | None) -> None:
        """Keep a lookup's answer for the settings asked right after it
        (on the reactor thread, as every lookup's answer arrives there)."""
        self._recent.pop(user, None)
        self._recent[user] = (time.monotonic() + RECENT_SECONDS, record)
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _recent_record(self, user: str) -> tuple[bool, UserRecord | None]:
        entry = self._recent.get(user)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        """``maildrop`` and ``login_delay`` of ``user``; None for a user
        not in the database.  Right after a login, from its lookup."""
        known, record = self._recent_record(user)
        if known:
            return succeed(record.settings if record is not None else None)
        return self._lookup(user).addCallback(
            lambda found: found.settings if found is not None else None)

    def lookup_secret(self, user: str, kind: SecretKind) -> Deferred[Secret | None]:
        """``kind`` of secret from ``user``'s stored field, or None (unknown
        or disabled user, or a field that cannot serve it)."""
        if not user or kind not in SECRET_KINDS:
            return succeed(None)

        def secret(record: UserRecord | None) -> Secret | None:
            if record is None or not record.enabled:
                return None
            try:
                return secret_from_field(kind, record.password, self.default_scheme)
            except UnknownScheme as error:
                log.error("user {user}: {error}", user=user, error=error)
                return None

        return self._lookup(user).addCallback(secret)


# -- the plugin ------------------------------------------------------------------------


@implementer(ICheckerFactory, IPlugin)
class SQLCheckerFactory:
    """``--auth sql:dsn=URL`` or ``--auth sql:/path/to/sql.toml``."""

    authType = "sql"
    argStringFormat = "sql:dsn=URL or sql:/path/to/sql.toml"
    credentialInterfaces = (IUsernamePassword,)
    authHelp = """Check user names and passwords against a database: PostgreSQL, MariaDB/MySQL
or SQLite.  sql:dsn=URL uses popframe's own table (popframe db upgrade
--dsn URL creates it, popframe user add --dsn URL NAME fills it); URLs are
postgresql://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB,
sqlite:////absolute/path.db, with the password in the URL, in
?password_file=PATH or in PGPASSWORD/MYSQL_PWD.  sql:FILE.toml sits on a
table of your own: keys dsn, password_query (one row: password, and
optionally maildrop, login_delay, expire (days, RFC 2449 EXPIRE), enabled; %u, %n, %d are passed as
parameters) and default_scheme.  Passwords in every passwd-file scheme,
SCRAM-SHA-256 keys included.  See docs/sql.md.
"""

    def generateChecker(self, argstring: str = "") -> SQLChecker:
        argstring = argstring.strip()
        if argstring.startswith("dsn="):
            return SQLChecker(configured_database(argstring, "--auth", "sql"))
        if not argstring or "://" in argstring:
            raise ConfigurationError("--auth", f"sql: use {self.argStringFormat}")
        return checker_from_toml(argstring)


def checker_from_toml(path: str) -> SQLChecker:
    """The checker a TOML file describes; every mistake a
    ``ConfigurationError`` naming the file and the key."""

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError("--auth", f"sql: {path}: {problem}")

    from popframe.config.file import read_toml

    try:
        config = read_toml(path)  # a file, or a table inline in a --config file
    except ConfigurationError as error:
        raise bad(error.problem) from None
    for key in config:
        if key not in _TOML_KEYS:
            raise bad(f"unknown key {key!r} (known: {', '.join(_TOML_KEYS)})")
    for key, value in config.items():
        if not isinstance(value, str):
            raise bad(f"{key} must be a string")
    if "dsn" not in config:
        raise bad("no dsn (the database URL)")
    query_text = config.get("password_query")
    try:
        query = PasswordQuery(query_text) if query_text is not None else None
    except ValueError as error:
        raise bad(f"password_query: {error}") from None
    scheme = config.get("default_scheme", DEFAULT_SCHEME)
    try:
        find_scheme(scheme)
    except UnknownScheme as error:
        raise bad(f"default_scheme: {error}") from None
    try:
        database = open_database(config["dsn"], "--auth", "sql", own_schema=query is None)
    except ConfigurationError as error:
        raise bad(error.problem) from None
    return SQLChecker(database, query, default_scheme=scheme)
