"""An Apple configuration profile (``.mobileconfig``) for one address:
a ``Configuration`` payload holding one ``com.apple.mail.managed``
payload, POP (``EmailTypePOP``) on the most secure endpoint that takes a
password (``EmailAuthPassword``: Apple Mail sends it inside TLS).
Apple requires an outgoing server: ``--autoconfig-smtp``, else
``--autoconfig-host`` port 587 with TLS.

The payload UUIDs are derived from the host and the address (UUID 5), so
installing the profile for an address again replaces the first one.
Signed as CMS SignedData (DER, the content attached) with
``--autoconfig-sign-cert``/``--autoconfig-sign-key``, else the plist alone.
"""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Sequence

from popframe.autoconfig.address import Account, NotServed
from popframe.autoconfig.endpoints import Auth, ClientEndpoint, Security
from popframe.autoconfig.settings import AutoconfigSettings
from popframe.tls import ServerCertificate

__all__ = ["CONTENT_TYPE", "payload_uuids", "profile", "sign"]

CONTENT_TYPE = "application/x-apple-aspen-config"
#: The namespace of popframe's profile UUIDs.
_NAMESPACE = uuid.UUID("37e8040f-0287-5a62-a3be-9a4a42b1be92")


def payload_uuids(host: str, address: str) -> tuple[str, str]:
    """The profile's and the mail payload's UUIDs: the same for the same
    host and address, every time."""
    profile = uuid.uuid5(_NAMESPACE, f"{host.lower()}/{address}")
    return str(profile).upper(), str(uuid.uuid5(profile, "mail")).upper()


def _identifier(host: str) -> str:
    return ".".join(reversed(host.lower().rstrip(".").split(".")))


def profile(account: Account, config: AutoconfigSettings, endpoints: Sequence[ClientEndpoint],
            smtp: ClientEndpoint | None) -> bytes:
    """The profile for ``account`` (an XML plist), signed when
    ``config.signer`` is set."""
    usable = [e for e in endpoints if Auth.CLEARTEXT in e.auth]
    if not usable:
        raise NotServed("no POP3 endpoint here takes a password login")
    incoming = usable[0]
    outgoing = smtp or ClientEndpoint(config.host, 587, Security.STARTTLS, (Auth.CLEARTEXT,))
    profile_uuid, mail_uuid = payload_uuids(config.host, account.address)
    identifier = f"{_identifier(config.host)}.popframe.{profile_uuid}"
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mail",
        "PayloadUUID": mail_uuid,
        "PayloadDisplayName": f"{account.address} (POP)",
        "EmailAccountDescription": account.address,
        "EmailAccountType": "EmailTypePOP",
        "EmailAddress": account.address,
        "IncomingMailServerHostName": incoming.host,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": incoming.security is not Security.PLAIN,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": account.login_name,
        "OutgoingMailServerHostName": outgoing.host,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": outgoing.security is not Security.PLAIN,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": account.login_name,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    document = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": profile_uuid,
        "PayloadDisplayName": f"Mail: {account.address}",
        "PayloadDescription": f"POP3 mail from {config.host} for {account.address}",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }
    data = plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=True)
    return sign(data, config.signer) if config.signer is not None else data


def sign(data: bytes, signer: ServerCertificate) -> bytes:
    """``data`` in a CMS SignedData (DER), with the signer's chain."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import pkcs7

    key = signer.private_key
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)  # settings checked
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(
        signer.certificate, key, hashes.SHA256())
    for certificate in signer.chain:
        builder = builder.add_certificate(certificate)
    return builder.sign(serialization.Encoding.DER, [])
