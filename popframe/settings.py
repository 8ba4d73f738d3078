"""The one typed, frozen description of a configured server.

Settings flow one way: the command line (:class:`popframe.options.Options`,
checked as it is parsed) → :meth:`Settings.from_options` → the service
builder (:mod:`popframe.service`, :mod:`popframe.assembly`,
:mod:`popframe.workers`) → factories, checkers and stores.  Nothing below
the service reads the options or the environment, so a TOML file or a
test can make the same object without a command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.cred.checkers import ICredentialsChecker
    from twisted.internet.ssl import CertificateOptions

    from popframe.autoconfig import AutoconfigSettings
    from popframe.delivery.lmtp import LMTPConfig
    from popframe.demo import DemoEnvironment
    from popframe.interfaces import IMaildropStore
    from popframe.logindelay import LoginDelay
    from popframe.options import Options
    from popframe.throttle import Throttle, TrustedNetworks

__all__ = ["Settings"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What ``twistd pop3`` was told, with the pieces that could fail
    already built (store, checkers, TLS, policies)."""

    #: Twisted server endpoint strings (``--listen``), backlog added.
    listen: tuple[str, ...]
    store: IMaildropStore
    #: cred checkers (``--auth``), in the order given.
    checkers: tuple[ICredentialsChecker, ...]
    #: Seconds of client silence before hanging up.
    idle_timeout: float
    #: Seconds from connect to login; None: only the idle timeout applies.
    preauth_timeout: float | None
    #: Connections at once from one address (an IPv6 /64); 0: no limit.
    max_connections_per_ip: int
    #: SASL mechanisms (and APOP) to offer where the checkers can serve them.
    mechanisms: tuple[str, ...]
    #: This server's name, in APOP and CRAM-MD5 challenges.
    hostname: str
    #: STLS options; None: STLS is not offered.
    tls: CertificateOptions | None = None
    allow_plaintext_auth: bool = False
    #: Users who may log in as someone else.
    master_users: frozenset[str] = frozenset()
    #: Processes serving the listeners; 1: this process alone.
    workers: int = 1
    #: Failed-login throttling; None answers failures at once.
    throttle: Throttle | None = None
    #: RFC 2449 LOGIN-DELAY; None: not enforced.
    login_delay: LoginDelay | None = None
    #: ``--auth-cache-ttl``: already given to the checkers that cache (0: off).
    auth_cache_ttl: float = 0.0
    #: LMTP listeners' endpoint strings (``--lmtp``), backlog added.
    lmtp: tuple[str, ...] = ()
    #: What the LMTP listeners share (limits, recipient rules); None: defaults.
    lmtp_config: LMTPConfig | None = None
    #: ``--throttle-store`` and ``--throttle-prefix``: a reload with the
    #: same keeps the running store (and its counts).
    throttle_store_description: tuple[str, str] | None = None
    #: Seconds sessions in progress get to finish after SIGTERM.
    shutdown_grace: float = 30.0
    #: ``--config``: the TOML file the arguments name, if any.
    config_file: str | None = None
    #: The files read at start-up that may be readable by root alone (the
    #: config file, certificates and keys): ``--workers`` processes get
    #: their contents from the parent (see popframe.config.snapshot).
    read_at_start: tuple[str, ...] = ()
    #: ``--demo``: the files it made, for the instructions printed at start.
    demo: DemoEnvironment | None = None
    #: The ``pop3`` arguments, which each ``--workers`` process parses
    #: again to build its own store and checkers; None when unknown.
    argv: tuple[str, ...] | None = None
    #: ``--tls-cert``: the certificate files and directories of STLS and
    #: ``implicit-tls:`` (their expiry is a metric).
    tls_cert: tuple[str, ...] = ()
    #: ``--metrics``: the endpoint of the Prometheus page; None: no metrics.
    metrics: str | None = None
    #: Connections at once to the whole server; 0: no limit.
    max_connections: int = 0
    #: Sessions at once of one user (per process); 0: no limit.
    max_sessions_per_user: int = 0
    #: ``--trusted-networks``; None: none.
    trusted_networks: TrustedNetworks | None = None
    #: ``--autoconfig`` and its ``--autoconfig-*`` options; None: not served.
    autoconfig: AutoconfigSettings | None = None
    #: ``--expire``: RFC 2449 EXPIRE days (0: at QUIT); None: NEVER.
    expire: int | None = None
    #: ``--expire-sweep``: seconds between the service's expiry passes (0: off).
    expire_sweep: float = 0.0
    #: ``--workaround``: client workarounds on (none by default).
    workarounds: frozenset[str] = frozenset()

    @classmethod
    def from_options(cls, options: Options) -> Settings:
        """The settings that checked ``options`` describe (after
        ``parseOptions``, which runs ``postOptions``)."""
        if options.store is None:
            raise ValueError("Settings.from_options needs options checked by parseOptions")
        return cls(
            listen=tuple(options["listen"]),
            store=options.store,
            checkers=tuple(options["credCheckers"]),
            idle_timeout=options["idle-timeout"],
            preauth_timeout=options["preauth-timeout"] or None,
            max_connections_per_ip=options["max-connections-per-ip"],
            mechanisms=tuple(options["mechanisms"]),
            hostname=options["hostname"],
            tls=options.tls,
            allow_plaintext_auth=bool(options["allow-plaintext-auth"]),
            master_users=frozenset(options["master-users"]),
            workers=options["workers"],
            throttle=options.throttle,
            login_delay=options.login_delay_policy,
            auth_cache_ttl=options["auth-cache-ttl"],
            lmtp=tuple(options["lmtp"]),
            lmtp_config=_lmtp_config(options),
            throttle_store_description=options.throttle_store_description,
            shutdown_grace=options["shutdown-grace"],
            config_file=options.config_file,
            read_at_start=_read_at_start(options),
            demo=options.demo,
            argv=None if options.argv is None else tuple(options.argv),
            tls_cert=tuple(options["tls-cert"]),
            metrics=options["metrics"],
            expire=options.expire_days,
            expire_sweep=options["expire-sweep"],
            workarounds=frozenset(options["workarounds"]),
            max_connections=options["max-connections"],
            max_sessions_per_user=options["max-sessions-per-user"],
            trusted_networks=options.trusted_networks,
            autoconfig=options.autoconfig,
        )


def _lmtp_config(options: Options) -> LMTPConfig:
    from popframe.delivery.lmtp import LMTPConfig
    from popframe.delivery.recipients import RecipientRules

    return LMTPConfig(
        hostname=options["hostname"],
        max_size=options["lmtp-max-size"],
        max_recipients=options["lmtp-max-recipients"],
        idle_timeout=options["lmtp-timeout"],
        spool_directory=options["lmtp-spool"],
        recipients=RecipientRules(options["lmtp-user-format"], options["lmtp-recipient-delimiter"]),
    )


def _read_at_start(options: Options) -> tuple[str, ...]:
    from popframe.config.endpoints import endpoint_files
    from popframe.sni import certificate_files

    paths = [options.config_file, options["tls-client-ca"], *options["tls-ocsp-response"],
             options["autoconfig-sign-cert"], options["autoconfig-sign-key"]]
    for cert, key in certificate_files(options["tls-cert"], options["tls-key"]):
        paths += [cert, key]
    for description in (*options["listen"], *options["lmtp"]):
        paths += endpoint_files(description)
    return tuple(dict.fromkeys(path for path in paths if path))
