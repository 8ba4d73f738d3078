"""The ``--autoconfig-*`` options, checked once at start-up into
:class:`AutoconfigSettings` (a mistake is a ``ConfigurationError`` naming
the option, so ``popframe check-config`` reports it too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from popframe.config import ConfigurationError

if TYPE_CHECKING:
    from popframe.tls import ServerCertificate

__all__ = ["USERNAME_FORMS", "AutoconfigSettings", "MailServer", "autoconfig_settings",
           "parse_server"]

#: ``--autoconfig-username``: the login name the documents give.
USERNAME_FORMS = ("address", "local-part")
#: The TLS modes of ``--autoconfig-smtp`` and ``--autoconfig-port``.
_MODES = ("ssl", "starttls", "plain")


@dataclass(frozen=True)
class MailServer:
    """A server the operator names (``--autoconfig-smtp``,
    ``--autoconfig-port``): host (None: ``--autoconfig-host``), port and
    TLS mode (``ssl``, ``starttls`` or ``plain``)."""

    host: str | None
    port: int
    mode: str


@dataclass(frozen=True, kw_only=True)
class AutoconfigSettings:
    """What the autoconfig documents are made from, besides the listeners
    and mechanisms of the POP3 server itself."""

    #: The Twisted endpoint the HTTP service listens on.
    endpoint: str
    #: The host name clients connect to for POP3.
    host: str
    #: Lower-cased mail domains answered for; empty: any.
    domains: tuple[str, ...] = ()
    #: ``address`` or ``local-part``: the login name in the documents.
    username: str = "address"
    #: Thunderbird's leaveMessagesOnServer hint.
    leave_on_server: bool = False
    #: The submission server the documents name; None: none.
    smtp: MailServer | None = None
    #: POP3 ports clients reach (behind NAT or a proxy); empty: the
    #: listeners' own.
    ports: tuple[MailServer, ...] = ()
    #: The certificate and key that sign Apple profiles; None: unsigned.
    signer: ServerCertificate | None = None


def parse_server(value: str, key: str, with_host: bool) -> MailServer:
    """``HOST:PORT:MODE`` (``with_host``) or ``MODE:PORT``."""
    parts = value.strip().split(":")
    example = "smtp.example.org:587:starttls" if with_host else "ssl:995"
    if with_host and len(parts) == 3:
        host, port, mode = parts
    elif not with_host and len(parts) == 2:
        host, (mode, port) = None, parts
    else:
        raise ConfigurationError(key, f"{value!r}: write it as {example}")
    mode = mode.strip().lower()
    if mode not in _MODES:
        raise ConfigurationError(key, f"{value!r}: the TLS mode is one of {', '.join(_MODES)}, "
                                 f"not {mode!r}, e.g. {example}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(key, f"{value!r}: the port must be a number from 1 to 65535, "
                                 f"e.g. {example}")
    if host is not None and not host.strip():
        raise ConfigurationError(key, f"{value!r}: give a host name, e.g. {example}")
    return MailServer(host.strip() if host is not None else None, int(port), mode)


def autoconfig_settings(options: Any) -> AutoconfigSettings | None:
    """The checked ``--autoconfig-*`` options of ``options`` (a
    :class:`popframe.options.Options`); None without ``--autoconfig``.
    The other ``--autoconfig-*`` options are checked even then, so a
    typo shows at once."""
    from popframe.autoconfig.address import check_domain
    from popframe.config.endpoints import check_endpoint

    host = options["autoconfig-host"].strip()
    if not host or not check_domain(host):
        raise ConfigurationError("--autoconfig-host", f"{host!r} is not a host name")
    domains = tuple(d.strip().lower() for d in options["autoconfig-domains"].split(",")
                    if d.strip())
    for domain in domains:
        if not check_domain(domain):
            raise ConfigurationError("--autoconfig-domains", f"{domain!r} is not a domain name")
    if options["autoconfig-username"] not in USERNAME_FORMS:
        raise ConfigurationError("--autoconfig-username", f"{options['autoconfig-username']!r}: "
                                 f"use {' or '.join(USERNAME_FORMS)}")
    smtp = (parse_server(options["autoconfig-smtp"], "--autoconfig-smtp", with_host=True)
            if options["autoconfig-smtp"] else None)
    ports = tuple(parse_server(value, "--autoconfig-port", with_host=False)
                  for value in options["autoconfig-port"])
    signer = _signer(options["autoconfig-sign-cert"], options["autoconfig-sign-key"])
    endpoint = options["autoconfig"]
    if endpoint is None:
        return None
    if not endpoint.strip():
        raise ConfigurationError("--autoconfig", "give an endpoint, e.g. tcp:8080")
    check_endpoint(endpoint, "--autoconfig")
    return AutoconfigSettings(endpoint=endpoint, host=host, domains=domains,
                              username=options["autoconfig-username"],
                              leave_on_server=bool(options["autoconfig-leave-on-server"]),
                              smtp=smtp, ports=ports, signer=signer)


def _signer(cert: str | None, key: str | None) -> ServerCertificate | None:
    if key and not cert:
        raise ConfigurationError("--autoconfig-sign-key", "needs --autoconfig-sign-cert")
    if not cert:
        return None
    from popframe.tls import load_server_certificate

    try:
        signer = load_server_certificate(cert, key or None)
    except ConfigurationError as error:
        name = "--autoconfig-sign-key" if key and error.key == "--tls-key" else \
            "--autoconfig-sign-cert"
        raise ConfigurationError(name, error.problem) from None
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if not isinstance(signer.private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigurationError("--autoconfig-sign-key", "CMS signatures need an RSA or EC key")
    return signer
