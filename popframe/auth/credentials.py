"""The cred side of authentication: credentials for each way a client can
log in, and which SASL mechanisms the configured checkers can serve.

The sans-IO core reports what a login exchange proved as plain data
(:mod:`popframe.protocol.sasl`); :func:`as_cred_credentials` turns that into
``twisted.cred`` credentials for the portal's checkers.  A mechanism is
offered only when some checker can verify what it produces (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.defer import maybeDeferred as maybe_deferred
from zope.interface import Interface, implementer

from popframe.interfaces.auth import (
    SECRET_TYPES,
    IClientCertificate,
    IOAuthBearerToken,
    ISecretLookup,
    IUserSettings,
    IVerifiedLogin,
    Secret,
    SecretKind,
    UserSettings,
)
from popframe.protocol import sasl
from popframe.twisted_internals import then

__all__ = [
    "ClientCertificate",
    "DEFAULT_MECHANISMS",
    "MECHANISM_NEEDS",
    "OAuthBearerToken",
    "VerifiedLogin",
    "VerifiedLoginChecker",
    "as_cred_credentials",
    "authenticate",
    "checked_secret",
    "lookup_secret",
    "secret_sources",
    "serviceable",
    "settings_sources",
    "user_settings",
]


@implementer(IVerifiedLogin)
class VerifiedLogin:
    def __init__(self, username: bytes) -> None:
        self.username = username


@implementer(ICredentialsChecker)
class VerifiedLoginChecker:
    """Accepts :class:`VerifiedLogin`: always in popframe's portal, never
    configured, and only the core makes such credentials."""

    credentialInterfaces = (IVerifiedLogin,)

    def requestAvatarId(self, credentials: IVerifiedLogin) -> Deferred:
        return succeed(credentials.username)


@implementer(IOAuthBearerToken)
class OAuthBearerToken:
    def __init__(self, token: str, user: str | None) -> None:
        self.token = token
        self.user = user


@implementer(IClientCertificate)
class ClientCertificate:
    def __init__(self, certificate: Any, authzid: str | None) -> None:
        self.certificate = certificate
        self.authzid = authzid


# What each mechanism needs from the checkers: a credentials interface some
# checker accepts, or a kind of secret some ISecretLookup returns.
MECHANISM_NEEDS: dict[str, type[Interface] | SecretKind] = {
    "USER": IUsernamePassword,
    "PLAIN": IUsernamePassword,
    "LOGIN": IUsernamePassword,
    "SCRAM-SHA-256": SecretKind.SCRAM_SHA_256,
    "SCRAM-SHA-256-PLUS": SecretKind.SCRAM_SHA_256,
    "CRAM-MD5": SecretKind.CRAM_MD5,
    "APOP": SecretKind.PLAINTEXT,
    "OAUTHBEARER": IOAuthBearerToken,
    "XOAUTH2": IOAuthBearerToken,
    "EXTERNAL": IClientCertificate,
}

#: Offered unless configured otherwise.  CRAM-MD5 and APOP are weak (they
#: need the plaintext stored) and off by default.
DEFAULT_MECHANISMS = (
    "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2", "EXTERNAL",
)


def secret_sources(portal: Portal, kind: SecretKind) -> list[ISecretLookup]:
    seen: list[ISecretLookup] = []
    for checker in portal.checkers.values():
        if (
            ISecretLookup.providedBy(checker)
            and kind in checker.secret_kinds
            and checker not in seen
        ):
            seen.append(checker)
    return seen


def serviceable(portal: Portal, mechanisms: Iterable[str]) -> tuple[str, ...]:
    """The ``mechanisms`` the portal's checkers can serve, in order."""
    offered = []
    for name in mechanisms:
        need = MECHANISM_NEEDS.get(name)
        if isinstance(need, SecretKind):
            if secret_sources(portal, need):
                offered.append(name)
        elif need is not None and need in portal.checkers:
            offered.append(name)
    return tuple(offered)


def as_cred_credentials(
    credentials: sasl.Credentials, peer_certificate: Any = None
) -> ICredentials:
    """The cred credentials for what an exchange proved.  An authzid is
    not part of them: :func:`authenticate` handles it."""
    if isinstance(credentials, sasl.Password):
        return UsernamePassword(credentials.authcid.encode("utf-8"), credentials.password)
    if isinstance(credentials, sasl.Verified):
        return VerifiedLogin(credentials.authcid.encode("utf-8"))
    if isinstance(credentials, sasl.BearerToken):
        return OAuthBearerToken(credentials.token, credentials.user)
    return ClientCertificate(peer_certificate, credentials.authzid)


def lookup_secret(portal: Portal, user: str, kind: SecretKind) -> Deferred[Secret | None]:
    """Ask each source in turn; None when none knows ``user``.  A source
    that answers with another type than the kind's declared one is a bug
    in that backend: a ``TypeError`` naming both (logged, ``[SYS/TEMP]``)."""

    def ask(found: Secret | None, source: ISecretLookup) -> Secret | None | Deferred[Secret | None]:
        if found is not None:
            return found
        return source.lookup_secret(user, kind).addCallback(checked_secret, kind)

    d: Deferred[Secret | None] = succeed(None)
    for source in secret_sources(portal, kind):
        d.addCallback(ask, source)
    return d


def checked_secret(secret: object, kind: SecretKind) -> Secret | None:
    """``secret`` if it is None or of the type declared for ``kind``."""
    if secret is None or isinstance(secret, SECRET_TYPES[kind]):
        return secret
    raise TypeError(f"a {kind} secret lookup returned {type(secret).__name__}, "
                    f"not {SECRET_TYPES[kind].__name__} or None")


def authenticate(
    portal: Portal,
    credentials: ICredentials,
    authzid: str | None,
    master_users: frozenset[str],
) -> str | Deferred[str]:
    """Check ``credentials`` with the portal's checker for them, and give
    the user whose maildrop the login opens (at once when the checker
    answered at once, else as a Deferred): the credentials' own, or
    ``authzid`` (an authorization identity, SASL PLAIN's) when they are
    that user's or a master user's (support staff, migrations).  Anyone
    else asking to be someone else is refused (``UnauthorizedLogin``,
    raised or as the Deferred's failure)."""
    checker = next(
        (c for interface, c in portal.checkers.items() if interface.providedBy(credentials)), None
    )
    if checker is None:
        return fail(UnauthorizedLogin())

    def authorize(avatar_id: bytes | str | tuple[()]) -> str:
        if isinstance(avatar_id, tuple):  # twisted.cred's anonymous avatar
            raise UnauthorizedLogin()
        user = avatar_id.decode("utf-8") if isinstance(avatar_id, bytes) else avatar_id
        if authzid is None or authzid == user:
            return user
        if user not in master_users:
            raise UnauthorizedLogin()
        return authzid

    return then(maybe_deferred(checker.requestAvatarId, credentials), authorize)


def settings_sources(portal: Portal) -> list[IUserSettings]:
    """The portal's checkers that know per-user settings, each once."""
    found: list[IUserSettings] = []
    for checker in portal.checkers.values():
        if IUserSettings.providedBy(checker) and checker not in found:
            found.append(checker)
    return found


def user_settings(sources: Iterable[IUserSettings], user: str) -> Deferred[UserSettings | None]:
    """What the first of ``sources`` that knows ``user`` says of them, or
    None when none does.  A source that fails fails this too (its outage
    must not hand the user a default maildrop location)."""

    def ask(
        found: UserSettings | None, source: IUserSettings
    ) -> UserSettings | None | Deferred[UserSettings | None]:
        return found if found is not None else source.user_settings(user)

    found: UserSettings | None | Deferred[UserSettings | None] = None
    for source in sources:
        found = then(found, ask, source)
    return found if isinstance(found, Deferred) else succeed(found)
