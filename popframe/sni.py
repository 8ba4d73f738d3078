"""Several server certificates, chosen by the name a TLS client asks for
(SNI), with a default for unknown names and clients that send none.

Twisted 26.4+ switches contexts through ``CertificateOptions(...,
contextForServerName=...)``, on STLS and on implicit TLS alike.  Its own
``tls:DIRECTORY`` endpoint has no explicit default and builds contexts
without popframe's TLS policy, so the map is ours: every certificate gets
:func:`popframe.tls.certificate_options` (TLS 1.2 minimum,
:data:`popframe.tls.CIPHERS`, the client CAs) and its OCSP staple.

Names come from each certificate's subjectAltName DNS entries; a
wildcard ``*.example.org`` stands for exactly one label
(``pop.example.org``, not ``a.b.example.org`` nor ``example.org``).  An
exact name wins over a wildcard; of two certificates with the same name,
the first given wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

from popframe.config import ConfigurationError
from popframe.tls import KEY_KEY, ServerCertificate, load_server_certificate

__all__ = ["NamedCertificate", "ServerNames", "certificate_files", "dns_names",
           "load_certificates"]


@dataclass(frozen=True)
class NamedCertificate:
    """A checked pair, the file it came from, and the names it serves."""

    server: ServerCertificate
    path: str
    names: tuple[str, ...]


def dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The subjectAltName DNS names, lower case, without a final dot."""
    try:
        alternative = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = (name.lower().rstrip(".") for name in alternative.get_values_for_type(x509.DNSName))
    return tuple(dict.fromkeys(names))


def certificate_files(
    certs: Sequence[str], keys: Sequence[str] = ()
) -> list[tuple[str, str | None]]:
    """``(certificate file, key file or None)`` for the ``--tls-cert``
    paths in order: a directory gives each ``*.pem`` file in it (sorted;
    each holds its chain and key, as in Twisted's ``tls:`` endpoint); the
    ``--tls-key`` files pair in order with the certificate *files*."""
    files: list[tuple[str, str | None]] = []
    remaining = list(keys)
    for path in certs:
        if os.path.isdir(path):
            files += [(file, None) for file in _pem_files(path)]
        else:
            files.append((path, remaining.pop(0) if remaining else None))
    if remaining:
        raise ConfigurationError(
            KEY_KEY, f"{len(remaining)} more --tls-key than --tls-cert files "
            f"({', '.join(remaining)}): each key pairs with one certificate file, in order")
    return files


def _pem_files(directory: str) -> list[str]:
    """The ``*.pem`` files of ``directory``, sorted by name.  A worker
    that may not list a root-only directory finds them among the files
    its parent read for it (:mod:`popframe.config.snapshot`)."""
    from popframe.config.snapshot import SNAPSHOT

    try:
        names = os.listdir(directory)
    except OSError as error:
        parent = os.path.abspath(directory)
        names = [os.path.basename(p) for p in SNAPSHOT if os.path.dirname(p) == parent]
        if not names:
            raise ConfigurationError(
                "--tls-cert", f"cannot list {directory}: {error.strerror or error}") from error
    pems = sorted(name for name in names if name.endswith(".pem"))
    if not pems:
        raise ConfigurationError("--tls-cert", f"no *.pem file in the directory {directory}")
    return [os.path.join(directory, name) for name in pems]


def load_certificates(certs: Sequence[str], keys: Sequence[str] = ()) -> list[NamedCertificate]:
    """Every pair ``--tls-cert``/``--tls-key`` name, checked; the first is
    the default."""
    return [
        NamedCertificate(server, path, dns_names(server.certificate))
        for path, key in certificate_files(certs, keys)
        for server in [load_server_certificate(path, key)]
    ]


class ServerNames:
    """``contextForServerName``: the context of the certificate for a
    name, or None to stay with the default's (an unknown name, no SNI, or
    one of the default's own names)."""

    def __init__(self, default_names: Sequence[str],
                 others: Sequence[tuple[Sequence[str], SSL.Context]]) -> None:
        self._exact: dict[str, SSL.Context | None] = {}
        self._wildcard: dict[str, SSL.Context | None] = {}
        entries: list[tuple[Sequence[str], SSL.Context | None]] = [(default_names, None)]
        entries += others
        for names, context in entries:
            for name in names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], context)
                else:
                    self._exact.setdefault(name, context)

    def __call__(self, server_name: bytes | None) -> SSL.Context | None:
        if not server_name:
            return None
        name = server_name.decode("ascii", "replace").lower().rstrip(".")
        if name in self._exact:
            return self._exact[name]
        _, dot, parent = name.partition(".")
        return self._wildcard.get(parent) if dot else None
