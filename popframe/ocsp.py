"""OCSP stapling (RFC 6066 status_request): a DER OCSP response per
server certificate (``--tls-ocsp-response``, as ``openssl ocsp -respout``
writes it), sent in the handshake to clients that ask.

popframe does not fetch responses itself: a cron job or the ACME client
renews the file and sends SIGHUP, which reads it again.  Each response is
matched to its certificate by serial number and issuer (so the order of
the options does not matter), and is stapled only while it is current
(before its nextUpdate): a stale staple would make strict clients fail.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from OpenSSL import SSL

from popframe.config import ConfigurationError

__all__ = ["OCSP_KEY", "Staple", "load_staples", "staple"]

OCSP_KEY = "--tls-ocsp-response"


@dataclass(frozen=True)
class Staple:
    """One certificate's OCSP response and when it stops being current."""

    der: bytes
    next_update: float | None

    def current(self, now: float) -> bytes:
        """The response to staple at ``now``; empty once it went stale."""
        if self.next_update is not None and now >= self.next_update:
            return b""
        return self.der


def load_staples(paths: Sequence[str], certificates: Sequence[x509.Certificate]
                 ) -> dict[int, Staple]:
    """The staple of each certificate that has one, by its index in
    ``certificates``; ``ConfigurationError`` for a file that is no
    successful OCSP response about one of them."""
    from popframe.config.snapshot import read_file

    staples: dict[int, Staple] = {}
    for path in paths:
        try:
            der = read_file(path)
        except OSError as error:
            raise ConfigurationError(
                OCSP_KEY, f"cannot read {path}: {error.strerror or error}") from error
        try:
            response = ocsp.load_der_ocsp_response(der)
        except ValueError as error:
            raise ConfigurationError(
                OCSP_KEY, f"{path} is not a DER OCSP response: {error}") from error
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ConfigurationError(
                OCSP_KEY, f"{path}: the responder answered {response.response_status.name}")
        if response.certificate_status is ocsp.OCSPCertStatus.REVOKED:
            raise ConfigurationError(OCSP_KEY, f"{path}: the certificate is REVOKED")
        index = _certificate_of(response, certificates)
        if index is None:
            raise ConfigurationError(
                OCSP_KEY, f"{path} is about serial {response.serial_number:x}, which is none "
                "of the --tls-cert certificates")
        next_update = _next_update(response)
        staples[index] = Staple(der, next_update.timestamp() if next_update else None)
        if next_update is not None and next_update <= datetime.datetime.now(datetime.UTC):
            raise ConfigurationError(
                OCSP_KEY, f"{path} expired at {next_update:%Y-%m-%d %H:%M} UTC (nextUpdate); "
                "fetch a new one")
    return staples


def _next_update(response: ocsp.OCSPResponse) -> datetime.datetime | None:
    """nextUpdate, aware (``next_update_utc`` is cryptography 43+; setup.cfg
    allows 42)."""
    aware = getattr(response, "next_update_utc", None)
    if aware is not None:
        return aware
    naive = response.next_update
    return naive.replace(tzinfo=datetime.UTC) if naive is not None else None


def _certificate_of(response: ocsp.OCSPResponse,
                    certificates: Sequence[x509.Certificate]) -> int | None:
    algorithm = response.hash_algorithm
    for index, certificate in enumerate(certificates):
        if certificate.serial_number != response.serial_number:
            continue
        digest = hashes.Hash(algorithm)
        digest.update(certificate.issuer.public_bytes())
        if digest.finalize() == response.issuer_name_hash:
            return index
    return None


def staple(context: SSL.Context, found: Staple | None) -> None:
    """Staple ``found`` on the handshakes of ``context`` whose client
    asks (nothing when None)."""
    if found is None:
        return

    def respond(connection: SSL.Connection, data: object) -> bytes:
        return found.current(time.time())

    context.set_ocsp_server_callback(respond)
