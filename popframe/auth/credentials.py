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
from twisted.internet.defer import Deferred, fail, maybeDeferred as maybe_deferred, succeed
from zope.interface import Attribute, Interface, implementer

from popframe.protocol import sasl


class IVerifiedLogin(ICredentials):
    """A login the core already verified against a secret a checker
    supplied (SCRAM, CRAM-MD5, APOP)."""

    username = Attribute("The verified user name (bytes).")


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


class ISecretLookup(Interface):
    """A checker that can hand stored secrets to mechanisms that verify in
    the core.  ``secret_kinds`` says which: ``"scram-sha-256"`` (a
    :class:`popframe.protocol.sasl.scram.ScramRecord`), ``"plaintext"``
    (bytes, for APOP), ``"cram-md5"`` (an object with ``hmac(challenge)``,
    from a plaintext or a stored HMAC-MD5 context)."""

    secret_kinds = Attribute("The kinds of secret this source can return.")

    def lookup_secret(user: str, kind: str) -> Deferred:
        """Fire with the secret, or None when the user is unknown or has
        no secret of that kind."""


class IOAuthBearerToken(ICredentials):
    token = Attribute("The access token (str).")
    user = Attribute("The user the client claims to be, or None.")


@implementer(IOAuthBearerToken)
class OAuthBearerToken:
    def __init__(self, token: str, user: str | None) -> None:
        self.token = token
        self.user = user


class IClientCertificate(ICredentials):
    certificate = Attribute("The peer's TLS certificate (cryptography x509), or None.")
    authzid = Attribute("The identity the client asks for, or None.")


@implementer(IClientCertificate)
class ClientCertificate:
    def __init__(self, certificate: Any, authzid: str | None) -> None:
        self.certificate = certificate
        self.authzid = authzid


# What each mechanism needs from the checkers: a credentials interface some
# checker accepts, or a kind of secret some ISecretLookup returns.
MECHANISM_NEEDS: dict[str, type[Interface] | str] = {
    "USER": IUsernamePassword,
    "PLAIN": IUsernamePassword,
    "LOGIN": IUsernamePassword,
    "SCRAM-SHA-256": "scram-sha-256",
    "SCRAM-SHA-256-PLUS": "scram-sha-256",
    "CRAM-MD5": "cram-md5",
    "APOP": "plaintext",
    "OAUTHBEARER": IOAuthBearerToken,
    "XOAUTH2": IOAuthBearerToken,
    "EXTERNAL": IClientCertificate,
}

#: Offered unless configured otherwise.  CRAM-MD5 and APOP are weak (they
#: need the plaintext stored) and off by default.
DEFAULT_MECHANISMS = (
    "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2", "EXTERNAL",
)


def secret_sources(portal: Portal, kind: str) -> list[ISecretLookup]:
    seen: list[ISecretLookup] = []
    for checker in portal.checkers.values():
        if ISecretLookup.providedBy(checker) and kind in checker.secret_kinds and checker not in seen:
            seen.append(checker)
    return seen


def serviceable(portal: Portal, mechanisms: Iterable[str]) -> tuple[str, ...]:
    """The ``mechanisms`` the portal's checkers can serve, in order."""
    offered = []
    for name in mechanisms:
        need = MECHANISM_NEEDS.get(name)
        if isinstance(need, str):
            if secret_sources(portal, need):
                offered.append(name)
        elif need is not None and need in portal.checkers:
            offered.append(name)
    return tuple(offered)


def as_cred_credentials(credentials: sasl.Credentials, peer_certificate: Any = None) -> ICredentials:
    """The cred credentials for what an exchange proved.  An authzid is
    not part of them: :func:`login` handles it."""
    if isinstance(credentials, sasl.Password):
        return UsernamePassword(credentials.authcid.encode("utf-8"), credentials.password)
    if isinstance(credentials, sasl.Verified):
        return VerifiedLogin(credentials.authcid.encode("utf-8"))
    if isinstance(credentials, sasl.BearerToken):
        return OAuthBearerToken(credentials.token, credentials.user)
    return ClientCertificate(peer_certificate, credentials.authzid)


def lookup_secret(portal: Portal, user: str, kind: str) -> Deferred:
    """Ask each source in turn; None when none knows ``user``."""
    d: Deferred = succeed(None)
    for source in secret_sources(portal, kind):
        d.addCallback(
            lambda found, source=source: found
            if found is not None
            else source.lookup_secret(user, kind)
        )
    return d


def login(
    portal: Portal,
    credentials: ICredentials,
    authzid: str | None,
    master_users: frozenset[str],
    interface: type[Interface],
) -> Deferred:
    """``portal.login``, plus authorization identities: a checker verifies
    the credentials' own user, and a master user may then act as
    ``authzid`` (support staff, migrations).  Anyone else asking to be
    someone else is refused before any maildrop is opened."""
    if authzid is None:
        return portal.login(credentials, None, interface)
    for credential_interface, checker in portal.checkers.items():
        if credential_interface.providedBy(credentials):
            break
    else:
        return fail(UnauthorizedLogin())

    def authorize(avatar_id: bytes) -> Any:
        user = avatar_id.decode("utf-8")
        if authzid != user and user not in master_users:
            raise UnauthorizedLogin()
        return portal.realm.requestAvatar(authzid.encode("utf-8"), None, interface)

    return maybe_deferred(checker.requestAvatarId, credentials).addCallback(authorize)
