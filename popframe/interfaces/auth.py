"""The contract of a credential source, beyond ``twisted.cred``.

A checker is a ``twisted.cred.checkers.ICredentialsChecker`` announced by a
``twisted.cred.strcred.ICheckerFactory`` plugin (``--auth NAME:ARGS``).
Which of these a checker also provides decides what popframe offers:

- ``IUsernamePassword`` in ``credentialInterfaces``: USER/PASS, PLAIN and
  LOGIN.  Unknown users must cost what wrong passwords cost, and get the
  same ``UnauthorizedLogin``.
- :class:`ISecretLookup`: mechanisms that verify in the core (SCRAM-SHA-256,
  CRAM-MD5, APOP), for the kinds of secret it declares.
- :class:`IOAuthBearerToken` credentials (OAUTHBEARER, XOAUTH2; or use
  ``popframe.auth.oauth.OAuthBearerChecker`` with an
  :class:`ITokenValidator`), :class:`IClientCertificate` (EXTERNAL).
- :class:`IUserSettings`: per-user LOGIN-DELAY, maildrop location, ...

Every call returns a Deferred and never blocks the reactor thread.  A
source that cannot answer now (its database or directory is down) fails
with ``popframe.errors.TemporaryFailure``: the client gets ``[SYS/TEMP]``,
never a refusal that looks like a wrong password.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from popframe.protocol.sasl.secrets import (
    SECRET_TYPES,
    CramMD5Secret,
    PlaintextCramMD5,
    PlaintextSecret,
    ScramRecord,
    Secret,
    SecretKind,
)

__all__ = [
    "SECRET_TYPES",
    "CramMD5Secret",
    "IClientCertificate",
    "IOAuthBearerToken",
    "ISecretLookup",
    "ITokenValidator",
    "IUserSettings",
    "IVerifiedLogin",
    "InvalidToken",
    "PlaintextCramMD5",
    "PlaintextSecret",
    "ScramRecord",
    "Secret",
    "SecretKind",
    "UserSettings",
]


class ISecretLookup(Interface):
    """A source of the stored secrets that mechanisms verifying in the core
    need.  Each kind has one declared type
    (:data:`~popframe.protocol.sasl.secrets.SECRET_TYPES`):
    ``SecretKind.SCRAM_SHA_256`` → :class:`ScramRecord`,
    ``SecretKind.PLAINTEXT`` → :class:`PlaintextSecret` (APOP),
    ``SecretKind.CRAM_MD5`` → a :class:`CramMD5Secret`."""

    secret_kinds = Attribute(
        "The SecretKinds this source can return (a collection); mechanisms "
        "needing others are not offered on its account.")

    def lookup_secret(user: str, kind: SecretKind) -> Deferred[Secret | None]:
        """Fire with ``user``'s secret of ``kind``, or None when the user is
        unknown or has no secret of that kind (the mechanism then fails the
        way a wrong password does: nothing tells the two apart)."""


@dataclass(frozen=True, slots=True)
class UserSettings:
    """What a credential source knows of a user beyond the password.  None
    in a field: the server's default."""

    # RFC 2449 LOGIN-DELAY: seconds between two logins.
    login_delay: int | None = None
    # RFC 2449 EXPIRE: days a retrieved message is kept (0: deleted at QUIT).
    # CAPA shows it after login; the store removes retrieved mail that old.
    expire: int | None = None
    # A maildrop location of the store's own kind (a Maildir path, an mbox
    # file, a maildrop name in SQL), from a directory attribute or a userdb
    # field; None: the store's template decides.
    maildrop: str | None = None
    # The user's home directory (Dovecot's userdb home): a store template
    # written ``~/Maildir`` opens the maildrop there.
    home: str | None = None
    # The kind ``maildrop`` was given as (Dovecot's ``maildir:``/``mbox:``
    # mail location), so a store of another kind refuses it; None: any.
    maildrop_kind: str | None = None
    # The system user and group the maildrop must belong to (Dovecot's
    # userdb uid/gid); file stores refuse one owned by another.
    uid: int | None = None
    gid: int | None = None
    # Refused after the password was verified (Dovecot's ``nologin``): the
    # text the client reads after ``-ERR [AUTH]``.
    login_refused: str | None = None
    # Networks (CIDR, or "local" for UNIX sockets) the user may log in
    # from (Dovecot's ``allow_nets``); None: anywhere.
    allowed_networks: tuple[str, ...] | None = None


class IUserSettings(Interface):
    """A source of per-user settings (a checker, usually).  Optional:
    without one, every user gets the server's defaults."""

    def user_settings(user: str) -> Deferred[UserSettings | None]:
        """Fire with what this source knows of ``user``, or None when it
        does not know the user (then the next source is asked)."""


class ITokenValidator(Interface):
    """Decides whose an OAuth 2.0 access token is (OAUTHBEARER, XOAUTH2),
    for ``popframe.auth.oauth.OAuthBearerChecker``: a JWT checked against
    keys, or an RFC 7662 introspection call."""

    def validate(token: str) -> Deferred[str]:
        """Fire with the user the token was issued for; fail with
        :class:`InvalidToken` when it is not acceptable, or
        ``TemporaryFailure`` when that cannot be decided now."""


class InvalidToken(UnauthorizedLogin):
    """An access token is refused; ``str()`` is the reason, for the log
    only: the client reads RFC 7628's error JSON."""


class IVerifiedLogin(ICredentials):
    """A login the core already verified against a secret a checker
    supplied (SCRAM, CRAM-MD5, APOP).  Only popframe makes these."""

    username = Attribute("The verified user name (bytes).")


class IOAuthBearerToken(ICredentials):
    """OAUTHBEARER / XOAUTH2 credentials."""

    token = Attribute("The access token (str).")
    user = Attribute("The user the client claims to be, or None.")


class IClientCertificate(ICredentials):
    """EXTERNAL credentials: the TLS client certificate, which OpenSSL has
    already verified against the configured client CAs."""

    certificate = Attribute("The peer's TLS certificate (cryptography x509), or None.")
    authzid = Attribute("The identity the client asks for, or None.")

