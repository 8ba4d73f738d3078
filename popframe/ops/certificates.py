"""When the configured TLS certificates expire, for the
``popframe_tls_certificate_expiry_timestamp_seconds`` metric and its
alert: read from the files (``--tls-cert``, the ``certKey`` or
``privateKey`` of ``ssl:`` listeners), again only when a file changed, so
a certificate renewed on disk shows at the next scrape."""

from __future__ import annotations

import os
from collections.abc import Iterable

from cryptography import x509

from popframe.server.factory import endpoint_words

__all__ = ["CertificateExpiry", "certificate_paths"]


def certificate_paths(tls_cert: str | None, listen: Iterable[str]) -> list[str]:
    """The certificate files of ``--tls-cert`` and of the ``ssl:`` (or
    ``haproxy:ssl:``) endpoint strings in ``listen``, each once."""
    paths = [tls_cert] if tls_cert else []
    for description in listen:
        words = endpoint_words(description)
        if words[:1] == ["haproxy"]:
            words = words[1:]
        if words[:1] != ["ssl"]:
            continue
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        path = options.get("certKey") or options.get("privateKey")
        if path:
            paths.append(path)
    return [os.path.abspath(p) for p in dict.fromkeys(paths)]


class CertificateExpiry:
    """The notAfter of the first certificate in each of ``paths``."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = list(paths)
        self._known: dict[str, tuple[tuple[int, int], float | None]] = {}

    def expiries(self) -> dict[str, float]:
        """Seconds since the epoch, by path; a file that cannot be read
        or holds no certificate is left out."""
        found = {}
        for path in self.paths:
            expiry = self._expiry(path)
            if expiry is not None:
                found[path] = expiry
        return found

    def _expiry(self, path: str) -> float | None:
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
        expiry = certificates[0].not_valid_after_utc.timestamp() if certificates else None
        self._known[path] = (key, expiry)
        return expiry
