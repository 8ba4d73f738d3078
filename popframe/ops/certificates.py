"""When the configured TLS certificates expire, for the
``popframe_tls_certificate_expiry_timestamp_seconds`` metric and its
alert: read from the files (each ``--tls-cert`` file, the ``*.pem`` of a
``--tls-cert`` directory or of a ``tls:`` listener, the ``certKey`` or
``privateKey`` of ``ssl:`` listeners), again only when a file changed, so
a certificate renewed on disk shows at the next scrape.  Each is labelled
by its path and its name (the first subjectAltName DNS name, else the
subject's common name), so every SNI certificate has its own series."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from popframe.config.endpoints import split_endpoint

__all__ = ["CertificateExpiry", "certificate_paths", "certificate_name"]


def certificate_paths(tls_certs: Iterable[str], listen: Iterable[str]) -> list[str]:
    """The certificate files of ``--tls-cert`` (directories: their
    ``*.pem`` files) and of the ``ssl:`` and ``tls:`` (also behind
    ``haproxy:`` or ``implicit-tls:``) endpoint strings in ``listen``,
    each once."""
    given = list(tls_certs)
    for description in listen:
        kind, args, options, rest = split_endpoint(description)
        while kind in ("haproxy", "implicit-tls"):
            kind, args, options, rest = split_endpoint(rest)
        if kind == "ssl":
            path = options.get("certKey") or options.get("privateKey")
            if path:
                given.append(path)
        elif kind == "tls" and args:
            given.append(args[0])
    paths = []
    for path in given:
        if os.path.isdir(path):
            try:
                names = sorted(n for n in os.listdir(path) if n.endswith(".pem"))
            except OSError:
                continue
            paths += [os.path.join(path, name) for name in names]
        else:
            paths.append(path)
    return [os.path.abspath(p) for p in dict.fromkeys(paths)]


def certificate_name(certificate: x509.Certificate) -> str:
    """What the metric calls a certificate: its first DNS name, else its CN."""
    from popframe.sni import dns_names

    names = dns_names(certificate)
    if names:
        return names[0]
    common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


class CertificateExpiry:
    """The notAfter of the first certificate in each of ``paths``, or in
    each file ``paths()`` names at the scrape (a directory's files change:
    a certificate added and reloaded shows at the next scrape)."""

    def __init__(self, paths: Iterable[str] | Callable[[], Iterable[str]]) -> None:
        self._paths = paths if callable(paths) else list(paths).copy
        self._known: dict[str, tuple[tuple[int, int], tuple[str, float] | None]] = {}

    @property
    def paths(self) -> list[str]:
        return list(self._paths())

    def expiries(self) -> dict[tuple[str, str], float]:
        """Seconds since the epoch, by (path, name); a file that cannot
        be read or holds no certificate is left out."""
        found = {}
        for path in self.paths:
            known = self._expiry(path)
            if known is not None:
                found[(path, known[0])] = known[1]
        return found

    def _expiry(self, path: str) -> tuple[str, float] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        known = self._known.get(path)
        if known is not None and known[0] == key:
            return known[1]
        try:
            with open(path, "rb") as f:
                certificates = x509.load_pem_x509_certificates(f.read())
        except (OSError, ValueError):
            certificates = []
        expiry = None
        if certificates:
            first = certificates[0]
            expiry = (certificate_name(first), first.not_valid_after_utc.timestamp())
        self._known[path] = (key, expiry)
        return expiry
