"""Endpoint strings (``--listen``, ``--lmtp``) checked before Twisted
parses them, so a mistake is one line naming the option, the value and
the fix instead of ``invalid literal for int()``, a missing
``server.pem`` or a traceback from OpenSSL.

:func:`parse_server_endpoint` is the one way popframe turns such a string
into an endpoint: in one process, in the workers' parent and children,
in a reload and in ``popframe check-config``.
"""

from __future__ import annotations

import errno as codes
import re
from typing import Any

from popframe.config import ConfigurationError

__all__ = ["CLIENT_CA", "IMPLICIT_TLS", "bindable", "check_endpoint", "endpoint_files",
           "endpoint_types", "listen_problem", "parse_server_endpoint", "without_implicit_tls",
           "split_endpoint"]

#: popframe's own wrapper: ``implicit-tls:ENDPOINT`` serves TLS with the
#: ``--tls-cert`` certificate on any endpoint (a systemd socket for 995).
IMPLICIT_TLS = "implicit-tls"
#: Endpoint types whose first argument is a port number.
_PORT_TYPES = ("tcp", "tcp6", "ssl")
#: ``ssl:`` arguments that name files Twisted reads at parse time.
SSL_FILE_ARGUMENTS = ("privateKey", "certKey", "extraCertChain", "dhParameters")
_SSL_EXAMPLE = "ssl:995:privateKey=/etc/popframe/key.pem:certKey=/etc/popframe/cert.pem"
#: popframe's own argument of ``ssl:`` and ``tls:`` listeners: a PEM file
#: of the CAs of client certificates, which the listener asks for (SASL
#: EXTERNAL), as ``--tls-client-ca`` does for STLS and ``implicit-tls:``.
CLIENT_CA = "clientCA"


def split_endpoint(description: str) -> tuple[str, list[str], dict[str, str], str]:
    """``(type, positional arguments, keyword arguments, rest)`` of an
    endpoint string, by its documented syntax: fields separated by ``:``,
    ``key=value`` fields, ``\\`` quoting the next character.  ``rest`` is
    the text after the type (what a wrapper such as ``haproxy:`` parses)."""
    kind, _, rest = description.partition(":")
    fields: list[str] = []
    current: list[str] = []
    equals: list[int | None] = []
    position: int | None = None
    escaped = False
    for char in rest:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            equals.append(position)
            current, position = [], None
        else:
            if char == "=" and position is None:
                position = len(current)
            current.append(char)
    if rest:
        fields.append("".join(current))
        equals.append(position)
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for text, at in zip(fields, equals, strict=True):
        if at is None:
            args.append(text)
        else:
            kwargs[text[:at]] = text[at + 1:]
    return kind.strip().lower(), args, kwargs, rest


def endpoint_types() -> list[str]:
    """The server endpoint types Twisted knows here (its own and plugins')."""
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    names = {"tcp", "unix", "ssl"}
    names.update(p.prefix for p in getPlugins(IStreamServerEndpointStringParser))
    return sorted(names)


def endpoint_files(description: str) -> list[str]:
    """The files an ``ssl:`` endpoint string names (also behind a wrapper)."""
    kind, args, kwargs, rest = split_endpoint(description)
    if kind in ("haproxy", IMPLICIT_TLS):
        return endpoint_files(rest)
    if kind == "tls" and args:
        from popframe.sni import certificate_files

        try:
            files = [path for path, _ in certificate_files(args[:1])]
        except ConfigurationError:
            files = []
    elif kind == "ssl":
        files = [kwargs.get("privateKey", "server.pem")]
        files += [kwargs[name] for name in SSL_FILE_ARGUMENTS[1:] if kwargs.get(name)]
    else:
        return []
    return files + ([kwargs[CLIENT_CA]] if kwargs.get(CLIENT_CA) else [])


def check_endpoint(description: str, key: str = "--listen") -> None:
    """Raise ``ConfigurationError(key, ...)`` for the mistakes Twisted
    reports badly: an unknown type, a port that is not a number, an
    ``ssl:`` endpoint without its key or whose key and certificate do not
    belong together."""
    kind, args, kwargs, rest = split_endpoint(description)
    if kind in ("haproxy", IMPLICIT_TLS):
        check_endpoint(rest, key)
        return
    types = endpoint_types()
    if kind not in types:
        raise ConfigurationError(
            key, f"{description!r}: unknown endpoint type {kind!r} (known: "
            f"{', '.join(types)}; and popframe's {IMPLICIT_TLS}:ENDPOINT), e.g. tcp:110 or "
            f"{_SSL_EXAMPLE}")
    if kind in _PORT_TYPES:
        port = args[0] if args else kwargs.get("port", "")
        if not port.isdigit() or int(port) > 65535:
            raise ConfigurationError(
                key, f"{description!r}: the port must be a number from 0 to 65535, not "
                f"{port!r}, e.g. {kind}:110")
    if kind == "ssl":
        _check_ssl(description, kwargs, key)
    if kind == "tls":
        _check_tls(description, args, kwargs, key)
    if kind in ("ssl", "tls") and kwargs.get(CLIENT_CA):
        from popframe.tls import load_client_cas

        try:
            load_client_cas(kwargs[CLIENT_CA])
        except ConfigurationError as error:
            raise ConfigurationError(key, f"{description!r}: {CLIENT_CA}: {error.problem}"
                                     ) from None


def _check_tls(description: str, args: list[str], kwargs: dict[str, str], key: str) -> None:
    """``tls:DIRECTORY[:PORT]``: Twisted's syntax, popframe's loading."""
    if not args:
        raise ConfigurationError(
            key, f"{description!r}: a tls: listener names a directory of PEM files (each a "
            "certificate chain and its key), e.g. tls:/etc/popframe/certs:995")
    port = args[1] if len(args) > 1 else kwargs.get("port", "443")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigurationError(
            key, f"{description!r}: the port must be a number from 0 to 65535, not {port!r}")
    from popframe.sni import load_certificates

    try:
        load_certificates(args[:1])
    except ConfigurationError as error:
        raise ConfigurationError(key, f"{description!r}: {error.problem}") from None


def _check_ssl(description: str, kwargs: dict[str, str], key: str) -> None:
    if "privateKey" not in kwargs:
        raise ConfigurationError(
            key, f"{description!r}: an ssl: listener needs privateKey=KEY.pem and "
            f"certKey=CERT.pem, e.g. {_SSL_EXAMPLE}")
    from popframe.tls import load_server_certificate

    private_key = kwargs["privateKey"]
    try:
        load_server_certificate(kwargs.get("certKey") or private_key, private_key)
    except ConfigurationError as error:
        raise ConfigurationError(key, f"{description!r}: {error.problem}") from None


def bindable(description: str) -> str:
    """What Twisted's own parsers can bind for ``description``: without
    ``implicit-tls:`` and popframe's own ``clientCA=`` argument (the parent
    of ``--workers`` binds; the workers add TLS)."""
    inner = without_implicit_tls(description)
    kind, _, rest = inner.partition(":")
    if kind.strip().lower() == "haproxy":
        return f"{kind}:{bindable(rest)}"
    return re.sub(rf":{CLIENT_CA}=(?:\\.|[^:\\])*", "", inner)


def without_implicit_tls(description: str) -> str:
    """The endpoint an ``implicit-tls:`` string wraps (the string itself
    otherwise): what the parent of ``--workers`` binds."""
    kind, _, rest = description.partition(":")
    if kind.strip().lower() == IMPLICIT_TLS:
        return without_implicit_tls(rest)
    return description


def parse_server_endpoint(reactor: Any, description: str, key: str = "--listen",
                          tls: Any = None) -> Any:
    """The server endpoint ``description`` names, TLS hardened (see
    :func:`popframe.tls.harden_endpoint`); ``ConfigurationError`` naming
    ``key`` for any mistake.  Nothing is bound: ``listen`` does that.
    ``tls``: the TLS options of an ``implicit-tls:`` endpoint."""
    from twisted.internet.endpoints import serverFromString, wrapServerTLS

    from popframe.tls import harden_endpoint

    check_endpoint(description, key)
    kind, _, rest = description.partition(":")
    if kind.strip().lower() == IMPLICIT_TLS:
        if tls is None:
            raise ConfigurationError(key, f"{description!r}: {IMPLICIT_TLS}: serves the "
                                     "--tls-cert certificate: give --tls-cert and --tls-key")
        return wrapServerTLS(tls, parse_server_endpoint(reactor, rest, key))
    try:
        built = _own_endpoint(reactor, description, key)
        if built is not None:
            return built
        return harden_endpoint(serverFromString(reactor, description))
    except ConfigurationError as error:
        raise ConfigurationError(key, f"{description!r}: {error.problem}") from None
    except Exception as error:  # Twisted's parsers raise whatever their arguments do
        raise ConfigurationError(key, f"{description!r}: {error}") from None


def _own_endpoint(reactor: Any, description: str, key: str) -> Any:
    """``ssl:`` and ``haproxy:`` endpoints made here rather than by
    Twisted's parsers, so the certificate and key are read through
    :func:`~popframe.config.snapshot.read_file` (a worker without root
    gets them from its parent) and get popframe's TLS policy from the
    start.  None: let Twisted parse it (with options popframe does not
    take over: ``sslmethod``, ``dhParameters``)."""
    kind, args, kwargs, rest = split_endpoint(description)
    if kind == "haproxy":
        from twisted.protocols.haproxy import proxyEndpoint

        inner = _own_endpoint(reactor, rest, key)
        return None if inner is None else proxyEndpoint(inner)
    from twisted.internet.endpoints import SSL4ServerEndpoint

    if kind == "tls":
        # Twisted's tls: endpoint builds its contexts without popframe's
        # policy and with no default certificate: the same directory,
        # loaded as --tls-cert loads one (SNI, a default, the policy).
        from popframe.tls import load_tls_options

        options = load_tls_options(args[:1], client_ca=kwargs.get(CLIENT_CA))
        tls_port = args[1] if len(args) > 1 else kwargs.get("port", "443")
        backlog = args[2] if len(args) > 2 else kwargs.get("backlog", "50")
        interface = args[3] if len(args) > 3 else kwargs.get("interface", "::")
        return SSL4ServerEndpoint(reactor, int(tls_port), options, backlog=int(backlog),
                                  interface=interface)
    if kind != "ssl" or {"sslmethod", "dhParameters"} & set(kwargs):
        return None
    from popframe.tls import (
        ServerCertificate,
        certificate_options,
        load_client_cas,
        load_server_certificate,
    )

    private_key = kwargs["privateKey"]
    server = load_server_certificate(kwargs.get("certKey") or private_key, private_key)
    if kwargs.get("extraCertChain"):
        from cryptography import x509

        from popframe.config.snapshot import read_file

        extra = x509.load_pem_x509_certificates(read_file(kwargs["extraCertChain"]))
        server = ServerCertificate(server.certificate, server.private_key,
                                   (*server.chain, *extra))
    port = int(args[0] if args else kwargs["port"])
    client_cas = load_client_cas(kwargs[CLIENT_CA]) if kwargs.get(CLIENT_CA) else ()
    return SSL4ServerEndpoint(reactor, port, certificate_options(server, client_cas=client_cas),
                              backlog=int(kwargs.get("backlog", 50)),
                              interface=kwargs.get("interface", ""))


def listen_problem(error: Any) -> str:
    """Why a port could not be bound (a ``CannotListenError``), and what to do."""
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    hint = ""
    errno = getattr(error.socketError, "errno", None)
    if errno == codes.EADDRINUSE:
        hint = " (another server is on it: stop it or pick another port)"
    elif errno == codes.EACCES:
        hint = (" (ports below 1024 need root, CAP_NET_BIND_SERVICE or systemd socket "
                "activation)")
    where = f"{error.interface or '*'}:{error.port}"
    return f"{where}: {reason}{hint}"
