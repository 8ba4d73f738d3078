"""Dovecot-style passwd-file users and the ``passwd-file`` cred checker.

One user per line, ``user:password[:uid:gid:gecos:home:shell:extra_fields]``,
where the password is a Dovecot ``{SCHEME}data`` field (see
:mod:`popframe.auth.schemes`) and ``extra_fields`` are space-separated
``key=value`` pairs.  The file is re-read whenever it changes, so an admin
edits it (or swaps a new one in with ``mv``) without restarting.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from popframe.auth.cache import VerifiedPasswords
from popframe.auth.restrictions import parse_networks
from popframe.auth.schemes import (
    DEFAULT_SCHEME,
    UnknownScheme,
    find_scheme,
    is_expensive,
)
from popframe.auth.stored import (
    SECRET_KINDS,
    avatar_id,
    kinds_of_fields,
    login_pair,
    secret_from_field,
    typical_field,
    verify_field,
    waste_time,
)
from popframe.config import ConfigurationError
from popframe.errors import TemporaryFailure
from popframe.files import WatchedFile
from popframe.interfaces.auth import (
    ISecretLookup,
    IUserSettings,
    Secret,
    SecretKind,
    UserSettings,
)
from popframe.threads import ThreadPoolRunner

__all__ = [
    "DEFAULT_CONCURRENCY",
    "PasswdFile",
    "PasswdFileChecker",
    "PasswdFileCheckerFactory",
    "PasswdRecord",
    "PasswdSnapshot",
    "parse_extra_fields",
    "parse_line",
    "parse_passwd",
]

T = TypeVar("T")
RunBlocking = Callable[..., "Deferred[Any]"]

log = Logger()

#: Verifications at once.  argon2 at Dovecot's defaults takes 64 MiB each.
DEFAULT_CONCURRENCY = 4



# -- the file ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswdRecord:
    """One user's line.  ``extra`` holds the extra fields (a bare key maps to "")."""

    user: str
    password: str = field(repr=False)
    uid: int | None
    gid: int | None
    home: str | None
    extra: dict[str, str]


@dataclass(frozen=True, slots=True)
class PasswdSnapshot:
    """The users of one version of the file.

    ``typical_password`` is a stored field of the file's most common scheme:
    unknown users are checked against it, so they cost what real ones do.
    """

    records: dict[str, PasswdRecord]
    typical_password: str | None

    def lookup(self, user: str) -> PasswdRecord | None:
        return self.records.get(user)


class PasswdFile(WatchedFile[PasswdSnapshot]):
    """A passwd-file, re-read when it changes (see
    :class:`~popframe.files.WatchedFile`)."""

    problem = "cannot read the passwd-file"

    def parse(self, data: bytes) -> PasswdSnapshot:
        return parse_passwd(data, self.path)

    def summary(self, value: PasswdSnapshot) -> str:
        return f"{len(value.records)} users"

    def lookup(self, user: str) -> PasswdRecord | None:
        """The record of ``user`` (exact, case-sensitive match) or None."""
        return self.current().lookup(user)


# -- parsing ----------------------------------------------------------------------


def parse_passwd(data: bytes, source: str = "passwd-file") -> PasswdSnapshot:
    """Parse a whole file.  Bad lines are skipped and logged by number only:
    a mangled line may hold a password."""
    records: dict[str, PasswdRecord] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            _skip(source, number, "not UTF-8")
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            record = parse_line(line)
        except ValueError as error:
            _skip(source, number, str(error))
            continue
        check_fields(record, source, number)
        if record.user in records:
            _skip(source, number, f"user {record.user!r} already defined; the first line wins")
            continue
        if _looks_like_plaintext(record.password):
            log.warn("{source}:{line}: the password of {user!r} has no {{SCHEME}} prefix, so it "
                     "is read as a crypt(3) hash and no password matches it; write "
                     "{{PLAIN}}password, or a hash from popframe pw or doveadm pw",
                     source=source, line=number, user=record.user)
        records[record.user] = record
    return PasswdSnapshot(records, typical_field(r.password for r in records.values()))


#: A DES crypt(3) hash: 13 characters of its alphabet.
_DES_CRYPT = re.compile(r"[./0-9A-Za-z]{13}")


def _looks_like_plaintext(password: str) -> bool:
    """A password field without ``{SCHEME}`` that is no crypt(3) hash
    either (``$id$...``, DES) nor a disabled account (``!``, ``*``):
    most likely a password written as it is, which Dovecot (and popframe)
    read as a crypt hash that nothing matches."""
    if not password or password.startswith(("{", "$", "!", "*")):
        return False
    return not _DES_CRYPT.fullmatch(password)


def _skip(source: str, number: int, reason: str) -> None:
    log.warn("{source}:{line}: line skipped: {reason}", source=source, line=number, reason=reason)


def parse_line(line: str) -> PasswdRecord:
    """Parse one line; ``ValueError`` says what is wrong without quoting it.

    As in Dovecot, everything after the seventh ``:`` is extra fields, so their
    values may contain colons (``userdb_mail=maildir:~/Maildir``).
    """
    fields = line.split(":", 7)
    if len(fields) < 2:
        raise ValueError("no ':' after the user name")
    user, password = fields[0], fields[1]
    if not user:
        raise ValueError("empty user name")
    fields += [""] * (8 - len(fields))
    return PasswdRecord(
        user=user,
        password=password,
        uid=_parse_id(fields[2], _uid_of, "uid"),
        gid=_parse_id(fields[3], _gid_of, "gid"),
        home=fields[5] or None,
        extra=parse_extra_fields(fields[7]),
    )


class UnsupportedField(ValueError):
    """An extra field popframe cannot honour (or a bad value of one it
    can): the file is refused as a whole, since serving a user without a
    restriction the admin relied on would be worse than not starting."""

    def __init__(self, source: str, number: int, key: str, problem: str) -> None:
        super().__init__(f"{source}:{number}: field {key!r}: {problem}")
        self.source, self.number, self.key = source, number, key


#: Extra fields popframe honours: Dovecot's passdb fields that matter to
#: POP3, its userdb fields (with and without the ``userdb_`` prefix a
#: passdb line gives them), and popframe's own.
SUPPORTED_FIELDS = frozenset({
    "login_delay", "expire", "nologin", "reason", "allow_nets", "nopassword",
    "noauthenticate", "userdb_home", "userdb_mail", "userdb_uid", "userdb_gid",
    "home", "mail", "uid", "gid",
})

#: Mail location kinds a maildrop may be given as.
MAIL_KINDS = ("maildir", "mbox")


def check_fields(record: PasswdRecord, source: str, number: int) -> None:
    """Raise :class:`UnsupportedField` for a field popframe cannot honour
    or a value it cannot use; the message names the file, line and field."""
    for key, value in record.extra.items():
        if key not in SUPPORTED_FIELDS:
            raise UnsupportedField(source, number, key,
                                   "popframe cannot honour it (supported: "
                                   + ", ".join(sorted(SUPPORTED_FIELDS)) + ")")
        try:
            _check_value(key, value)
        except ValueError as error:
            raise UnsupportedField(source, number, key, str(error)) from None
    try:
        mail_location(record)
    except ValueError as error:
        raise UnsupportedField(source, number, "userdb_mail", str(error)) from None


def _check_value(key: str, value: str) -> None:
    if key in ("login_delay", "expire") and not (value.isascii() and value.isdigit()):
        raise ValueError("expected a whole number")
    if key == "allow_nets":
        parse_networks(value)
    if key in ("userdb_uid", "uid"):
        _parse_id(value, _uid_of, "uid")
    if key in ("userdb_gid", "gid"):
        _parse_id(value, _gid_of, "gid")


def _field(record: PasswdRecord, name: str) -> str | None:
    """A userdb field, given as ``userdb_NAME`` or ``NAME``."""
    value = record.extra.get("userdb_" + name)
    return value if value is not None else record.extra.get(name)


def mail_location(record: PasswdRecord) -> tuple[str, str] | None:
    """The maildrop a line names (``userdb_mail=maildir:~/Maildir``, ``~``
    being the home): its kind and path, or None.  ``ValueError`` for a
    location popframe cannot serve."""
    mail = _field(record, "mail")
    if not mail:
        return None
    kind, colon, rest = mail.partition(":")
    if not colon or kind not in MAIL_KINDS:
        raise ValueError(f"expected {'|'.join(MAIL_KINDS)}:PATH")
    path, _, options = rest.partition(":")
    if options:  # INDEX=, LAYOUT=... are Dovecot's own files
        for option in options.split(":"):
            if not option.startswith(("INDEX=", "CONTROL=", "VOLATILEDIR=", "INBOX=")):
                raise ValueError(f"mail location option {option.split('=')[0]!r} is not "
                                 "supported")
    home = _field(record, "home") or record.home
    if path == "~" or path.startswith("~/"):
        if not home:
            raise ValueError("the location uses ~ but the line gives no home")
        path = home.rstrip("/") + path[1:]
    if not path.startswith("/"):
        raise ValueError("the location must be an absolute path (or start with ~/)")
    return kind, path


def parse_extra_fields(text: str) -> dict[str, str]:
    """``key=value key2 key3=v`` -> a dict; a bare key maps to ""."""
    extra: dict[str, str] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        if key:
            extra[key] = value
    return extra


def _parse_id(text: str, by_name: Callable[[str], int], what: str) -> int | None:
    """A number, or (as Dovecot allows) a system user or group name."""
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return by_name(text)
    except KeyError:
        raise ValueError(f"{what} is neither a number nor a known name") from None


@lru_cache(maxsize=256)
def _uid_of(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


@lru_cache(maxsize=256)
def _gid_of(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def settings_of(record: PasswdRecord) -> UserSettings:
    """What a line's extra fields (checked by :func:`check_fields`) say
    about its user beyond the password."""
    extra = record.extra
    location = mail_location(record)
    uid_text, gid_text = _field(record, "uid"), _field(record, "gid")
    nets = extra.get("allow_nets")
    return UserSettings(
        login_delay=int(extra["login_delay"]) if "login_delay" in extra else None,
        expire=int(extra["expire"]) if "expire" in extra else None,
        maildrop=location[1] if location else None,
        maildrop_kind=location[0] if location else None,
        home=_field(record, "home") or record.home,
        uid=_parse_id(uid_text, _uid_of, "uid") if uid_text else record.uid,
        gid=_parse_id(gid_text, _gid_of, "gid") if gid_text else record.gid,
        login_refused=extra.get("reason", "") if "nologin" in extra else None,
        allowed_networks=parse_networks(nets) if nets is not None else None,
    )


# -- the checker --------------------------------------------------------------------


@implementer(ICredentialsChecker, ISecretLookup, IUserSettings)
class PasswdFileChecker:
    """Checks ``IUsernamePassword`` credentials against a :class:`PasswdFile`.

    Succeeds with the user name (UTF-8 bytes) as the avatar id; fails with
    ``UnauthorizedLogin`` for any bad credential, the same whether the user
    exists or not, and with ``TemporaryFailure`` when the file cannot be read.
    ``run_blocking(function, *args) -> Deferred`` runs the lookup and the
    hash off the reactor thread; tests pass one that runs it at once.

    It also hands stored secrets to the mechanisms that verify in the core
    (:class:`~popframe.auth.credentials.ISecretLookup`): SCRAM keys from
    ``{SCRAM-SHA-256}`` fields, the password of PLAIN-family fields for APOP,
    and a CRAM-MD5 key from ``{CRAM-MD5}`` or PLAIN-family fields.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        passwd_file: PasswdFile | str | os.PathLike[str],
        *,
        default_scheme: str = DEFAULT_SCHEME,
        concurrency: int = DEFAULT_CONCURRENCY,
        run_blocking: RunBlocking | None = None,
        reactor: Any = None,
        verified_passwords: VerifiedPasswords | None = None,
    ) -> None:
        find_scheme(default_scheme)  # an unknown default fails now, not at login
        if not isinstance(passwd_file, PasswdFile):
            passwd_file = PasswdFile(passwd_file)
        self.passwd_file = passwd_file
        self.default_scheme = default_scheme
        self._semaphore = DeferredSemaphore(concurrency)
        self._run_blocking = run_blocking or ThreadPoolRunner(
            "popframe-passwd-file", concurrency, reactor
        )
        # --auth-cache-ttl: recent successes skip the hash (popframe.auth.cache).
        self.verified_passwords = verified_passwords
        self._kinds: tuple[PasswdSnapshot | None, frozenset[SecretKind]] = (None, frozenset())

    @property
    def secret_kinds(self) -> frozenset[SecretKind]:
        """The kinds of secret some user's field in the file can give out
        (``ISecretLookup``): SCRAM-SHA-256 is offered only when some user
        has SCRAM keys, CRAM-MD5 and APOP only when some field can serve
        them.  From the file as last read: asked at every secret lookup, so
        no system call."""
        snapshot = self.passwd_file.last()
        if snapshot is None:
            try:
                snapshot = self.passwd_file.current()
            except TemporaryFailure:
                return frozenset()
        known, kinds = self._kinds
        if snapshot is not known:
            fields = (record.password for record in snapshot.records.values())
            kinds = kinds_of_fields(fields, self.default_scheme)
            self._kinds = (snapshot, kinds)
        return kinds

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        pair = login_pair(credentials)
        if pair is None:
            return fail(UnauthorizedLogin())
        user, password = pair
        if self._recently_verified(user, password):
            return succeed(avatar_id(True, user))
        snapshot = self.passwd_file.unchanged()
        if snapshot is not None and self._cheap(snapshot, user):
            # A hash of microseconds (SSHA512, PLAIN, ...) costs less than
            # the hand-off to a thread and back (measured: the hand-off was
            # a third of a check session's CPU), and reads nothing.
            if self._verify_in(snapshot, user, password):
                return succeed(avatar_id(True, user))
            return fail(UnauthorizedLogin())
        d: Deferred[bool] = self._semaphore.run(self._run_blocking, self.verify, user, password)
        return d.addCallback(avatar_id, user)

    def _cheap(self, snapshot: PasswdSnapshot, user: str) -> bool:
        """Whether checking ``user``'s password (or, for an unknown user,
        the typical one wasted instead) is cheap enough for the reactor."""
        record = snapshot.lookup(user)
        stored = record.password if record is not None and record.password else (
            snapshot.typical_password)
        if stored is None:
            return False
        try:
            return not is_expensive(stored, self.default_scheme)
        except UnknownScheme:
            return False  # the thread's path logs it

    def _recently_verified(self, user: str, password: bytes) -> bool:
        """A hit in the cache of verified passwords, checked against the
        file as it is now; without a thread when the file is unchanged."""
        cache = self.verified_passwords
        if cache is None:
            return False
        snapshot = self.passwd_file.unchanged()
        record = snapshot.lookup(user) if snapshot is not None else None
        return record is not None and bool(record.password) and cache.verified(
            user, record.password, password)

    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        """:class:`~popframe.interfaces.auth.IUserSettings`: the
        ``login_delay=SECONDS`` extra field of ``user``'s line; None for a
        user not in the file.  Right after a login the table is current:
        answered at once, with no thread (one was a quarter of a login's
        hand-offs)."""
        snapshot = self.passwd_file.unchanged()
        if snapshot is not None:
            return succeed(self._settings_in(snapshot, user))
        return self._run_blocking(self.find_user_settings, user)

    def find_user_settings(self, user: str) -> UserSettings | None:
        """Blocking: :meth:`user_settings`' work."""
        return self._settings_in(self.passwd_file.current(), user)

    def _settings_in(self, snapshot: PasswdSnapshot, user: str) -> UserSettings | None:
        record = snapshot.lookup(user)
        if record is None:
            return None
        return settings_of(record)

    def verify(self, user: str, password: bytes) -> bool:
        """Blocking: whether ``password`` is ``user``'s.  Raises
        ``TemporaryFailure`` when the file cannot be read."""
        return self._verify_in(self.passwd_file.current(), user, password)

    def _verify_in(self, snapshot: PasswdSnapshot, user: str, password: bytes) -> bool:
        """:meth:`verify` against ``snapshot``, which is already read."""
        record = snapshot.lookup(user)
        if record is not None and "noauthenticate" in record.extra:
            record = None  # a userdb-only entry: nobody logs in as it
        if record is not None and "nopassword" in record.extra:
            return True  # Dovecot's nopassword: any password is accepted
        if record is None or not record.password:
            waste_time(snapshot.typical_password, password, self.default_scheme)
            return False
        try:
            matched = verify_field(record.password, password, self.default_scheme)
        except UnknownScheme as error:
            log.error(
                "{path}: user {user}: {error}", path=self.passwd_file.path, user=user, error=error
            )
            return False
        if matched and self.verified_passwords is not None:
            self.verified_passwords.remember(user, record.password, password)
        return matched

    def lookup_secret(self, user: str, kind: SecretKind) -> Deferred[Secret | None]:
        """``kind`` of secret for ``user`` (see :mod:`popframe.auth.stored`), or
        None when the user is unknown or its field cannot serve it.  Fails
        with ``TemporaryFailure`` when the file cannot be read."""
        if not user or kind not in SECRET_KINDS:
            return succeed(None)
        snapshot = self.passwd_file.unchanged()
        if snapshot is not None:  # parsing a stored field: no thread needed
            return succeed(self._secret_in(snapshot, user, kind))
        return self._semaphore.run(self._run_blocking, self.find_secret, user, kind)

    def find_secret(self, user: str, kind: SecretKind) -> Secret | None:
        """Blocking: :meth:`lookup_secret`'s work.  Logs nothing of the
        secret, only a field whose scheme is unknown."""
        return self._secret_in(self.passwd_file.current(), user, kind)

    def _secret_in(self, snapshot: PasswdSnapshot, user: str, kind: SecretKind) -> Secret | None:
        record = snapshot.lookup(user)
        if record is None or not record.password or "noauthenticate" in record.extra:
            return None
        try:
            return secret_from_field(kind, record.password, self.default_scheme)
        except UnknownScheme as error:
            log.error(
                "{path}: user {user}: {error}", path=self.passwd_file.path, user=user, error=error
            )
            return None


# -- the plugin -----------------------------------------------------------------------


@implementer(ICheckerFactory, IPlugin)
class PasswdFileCheckerFactory:
    """``--auth=passwd-file:/path/to/users`` for twistd."""

    authType = "passwd-file"
    argStringFormat = "passwd-file:/path/to/users"
    credentialInterfaces = (IUsernamePassword,)
    authHelp = """Check user names and passwords against a Dovecot-style passwd-file.

One user per line: user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra_fields]
Blank lines and lines starting with # are ignored; user names match exactly
(case-sensitive).  Schemes are Dovecot's: SHA512-CRYPT, SHA256-CRYPT,
BLF-CRYPT, ARGON2ID, ARGON2I, SSHA512, SSHA256, SSHA, SCRAM-SHA-256 (also
serves SASL SCRAM-SHA-256), CRAM-MD5 (also serves CRAM-MD5), PLAIN (CLEAR:
also serves APOP and CRAM-MD5), older
ones (MD5-CRYPT, SMD5, SHA, PLAIN-MD5...) to verify only, and CRYPT (any
crypt(3) hash), which is assumed when a password has no {SCHEME} prefix.
Hashes from "doveadm pw -s SHA512-CRYPT" work as they are, so a Dovecot
passwd-file can be used unchanged.  The file is re-read when it changes;
while it is missing or unreadable logins fail with [SYS/TEMP].
Extra fields, as Dovecot's: nologin (with reason=TEXT: the login is
refused after the password matched), allow_nets=CIDR,... (logins only from
there), nopassword (any password), noauthenticate (no login: settings
only), userdb_mail=maildir:~/Maildir or mbox:PATH (the maildrop; ~ is
userdb_home or the home column), userdb_uid/userdb_gid (the maildrop must
belong to them), and popframe's login_delay=SECONDS (RFC 2449
LOGIN-DELAY, see --login-delay) and expire=DAYS (RFC 2449 EXPIRE, see
--expire).  Any other field stops the server from starting.
"""

    def generateChecker(self, argstring: str = "") -> PasswdFileChecker:
        path = argstring.strip()
        if not path:
            raise ConfigurationError(
                "--auth", f"passwd-file: no path given, use {self.argStringFormat}"
            )
        passwd_file = PasswdFile(path)
        try:
            passwd_file.load()
        except UnsupportedField as error:
            raise ConfigurationError("--auth", f"passwd-file: {error}") from None
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigurationError(
                "--auth", f"passwd-file: cannot read {passwd_file.path}: {reason}"
            ) from None
        return PasswdFileChecker(passwd_file)
