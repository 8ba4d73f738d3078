"""TLS client certificates to users, for SASL EXTERNAL (``--auth tls-cert``).

The TLS layer has already verified the certificate against the CAs of
``--tls-client-ca`` (and only those: never the system store) before any
of this runs; this checker only says which user a verified certificate
names.  Every certificate that CA issues for client authentication is a
key to the mailbox its identity maps to, so use a CA of its own for mail.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from popframe.auth.oauth import parse_options
from popframe.config import ConfigurationError
from popframe.interfaces.auth import IClientCertificate

__all__ = ["MAPPINGS", "ClientCertificateChecker", "ClientCertificateCheckerFactory", "identities"]

log = Logger()

#: What part of the certificate names the user.
MAPPINGS = ("email", "cn", "dns")


def identities(certificate: x509.Certificate, mapping: str) -> list[str]:
    """The user names ``certificate`` vouches for under ``mapping``:

    - ``email``: the rfc822Name subject alternative names, else the
      subject's legacy emailAddress attribute;
    - ``cn``: the subject's common name (only when there is exactly one);
    - ``dns``: the dNSName subject alternative names (devices, services).
    """
    if mapping == "cn":
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(names[0].value)] if len(names) == 1 else []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if mapping == "dns":
        return list(san.get_values_for_type(x509.DNSName)) if san is not None else []
    emails = list(san.get_values_for_type(x509.RFC822Name)) if san is not None else []
    if not emails:
        emails = [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        ]
    return emails


def _for_client_auth(certificate: x509.Certificate) -> bool:
    """No extended key usage, or one that includes TLS client auth."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return (
        ExtendedKeyUsageOID.CLIENT_AUTH in usage
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usage
    )


@implementer(ICredentialsChecker)
class ClientCertificateChecker:
    """Checks ``IClientCertificate`` credentials: the avatar id is the
    identity the certificate carries under ``mapping`` (the first one when
    it carries several), or, when the client asked for an authorization
    identity, that identity if the certificate carries it exactly.
    No certificate, no usable identity, or an authzid the certificate does
    not carry: ``UnauthorizedLogin``."""

    credentialInterfaces = (IClientCertificate,)

    def __init__(self, mapping: str = "email") -> None:
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}")
        self.mapping = mapping

    def requestAvatarId(self, credentials: IClientCertificate) -> Deferred:
        certificate: Any = credentials.certificate
        if certificate is None:
            return self._refuse("no client certificate")
        if not isinstance(certificate, x509.Certificate):
            return self._refuse(f"not a certificate: {type(certificate).__name__}")
        if not _for_client_auth(certificate):
            return self._refuse("the certificate is not for TLS client authentication")
        names = [
            name for name in identities(certificate, self.mapping) if name and "\0" not in name
        ]
        subject = certificate.subject.rfc4514_string()
        if not names:
            return self._refuse(f"no {self.mapping} identity in {subject}")
        authzid = credentials.authzid
        if authzid is None:
            return succeed(names[0].encode("utf-8"))
        if authzid in names:
            return succeed(authzid.encode("utf-8"))
        return self._refuse(f"{subject} does not name {authzid!r}")

    def _refuse(self, reason: str) -> Deferred:
        log.info("client certificate refused: {reason}", reason=reason)
        return fail(UnauthorizedLogin())


@implementer(ICheckerFactory, IPlugin)
class ClientCertificateCheckerFactory:
    """``--auth tls-cert:map=email`` for twistd."""

    authType = "tls-cert"
    argStringFormat = "tls-cert[:map=email|cn|dns]"
    credentialInterfaces = (IClientCertificate,)
    authHelp = """TLS client certificates, for SASL EXTERNAL.  Needs --tls-client-ca:
the server then asks every TLS client for a certificate (clients without one
still connect and use other mechanisms) and verifies it against those CAs only.

  map=email  the certificate's email subject alternative name, else the
             subject's emailAddress (default)
  map=cn     the subject's common name
  map=dns    a DNS subject alternative name (devices, services)

A client that asks for an authorization identity (AUTH EXTERNAL <base64>)
gets it only when the certificate carries exactly that identity; an empty
one (AUTH EXTERNAL =) logs in as the certificate's (first) identity.
EXTERNAL is offered after STLS; implicit-TLS ssl: listeners do not ask for
client certificates.
"""

    def generateChecker(self, argstring: str = "") -> ClientCertificateChecker:
        options = parse_options(argstring, self.authType, (), ("map",))
        mapping = options.get("map", "email").lower()
        if mapping not in MAPPINGS:
            raise ConfigurationError(
                "--auth", f"tls-cert: map must be one of {', '.join(MAPPINGS)}"
            )
        return ClientCertificateChecker(mapping)
