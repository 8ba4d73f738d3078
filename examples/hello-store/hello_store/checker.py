"""The hello checker: users and plaintext passwords given on the command
line, ``--auth hello:alice:wonderland,bob:builder:60`` (bob with his own
LOGIN-DELAY of 60 seconds).

An example, not a user database: passwords on a command line show in
``ps``.  A real checker reads a file or asks a database or directory, and
then two more rules matter that this one keeps trivially: work that blocks
(a hash, a query) runs off the reactor thread (``popframe.threads``,
``twisted.enterprise.adbapi``), and a source that cannot answer now fails
with ``popframe.errors.TemporaryFailure`` (``-ERR [SYS/TEMP]``), never with
``UnauthorizedLogin``: a database restart is not a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from popframe.interfaces import (
    ISecretLookup,
    IUserSettings,
    PlaintextSecret,
    Secret,
    SecretKind,
    UserSettings,
)

__all__ = ["HelloChecker", "HelloUser", "parse_users"]


@dataclass(frozen=True)
class HelloUser:
    password: bytes = field(repr=False)
    login_delay: int | None = None  # RFC 2449 LOGIN-DELAY, seconds; None: the server's


def parse_users(argument: str) -> dict[str, HelloUser]:
    """``USER:PASSWORD[:LOGIN_DELAY]`` entries separated by commas."""
    users: dict[str, HelloUser] = {}
    for entry in filter(None, argument.split(",")):
        user, _, rest = entry.partition(":")
        password, _, delay = rest.partition(":")
        if not user or not password:
            raise ValueError("each user is USER:PASSWORD[:LOGIN_DELAY]")
        if delay and not delay.isdigit():
            raise ValueError(f"user {user}: LOGIN_DELAY is a number of seconds")
        users[user] = HelloUser(password.encode("utf-8"), int(delay) if delay else None)
    if not users:
        raise ValueError("no users given")
    return users


@implementer(ICredentialsChecker, ISecretLookup, IUserSettings)
class HelloChecker:
    """What each interface makes popframe offer:

    - ``ICredentialsChecker`` for ``IUsernamePassword``: USER/PASS, SASL
      PLAIN and LOGIN.  The avatar id is the user name as UTF-8 bytes.
    - ``ISecretLookup`` for ``SecretKind.PLAINTEXT``: APOP, which popframe
      verifies itself against the secret this returns.
    - ``IUserSettings``: a user's own LOGIN-DELAY.
    """

    credentialInterfaces = (IUsernamePassword,)
    secret_kinds = (SecretKind.PLAINTEXT,)

    def __init__(self, users: Mapping[str, HelloUser]) -> None:
        self.users = dict(users)
        self._nobody = os.urandom(16)  # what unknown users are compared with

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        """The user name as UTF-8 bytes (cred's type also allows ``()``,
        an anonymous login), or ``UnauthorizedLogin``.  An unknown user
        costs what a wrong password costs and gets the same failure:
        neither the reply nor its timing may tell which names exist.  So
        there is always one comparison, of equal-length digests, in
        constant time."""
        name = _text(credentials.username)
        user = self.users.get(name) if name is not None else None
        expected = hashlib.sha256(user.password if user else self._nobody).digest()
        given = hashlib.sha256(_octets(credentials.password)).digest()
        if hmac.compare_digest(expected, given) and user is not None and name is not None:
            return succeed(name.encode("utf-8"))
        return fail(UnauthorizedLogin())

    def lookup_secret(self, user: str, kind: SecretKind) -> Deferred[Secret | None]:
        """None for an unknown user: popframe then fails the proof exactly
        as it fails a wrong one."""
        found = self.users.get(user)
        if found is None or kind is not SecretKind.PLAINTEXT:
            return succeed(None)
        return succeed(PlaintextSecret(found.password))

    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        found = self.users.get(user)
        return succeed(UserSettings(login_delay=found.login_delay) if found else None)


def _text(value: bytes | str) -> str | None:
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        return None


def _octets(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
