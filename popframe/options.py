"""The ``pop3`` command line: :class:`Options`, checked as it is parsed.

``postOptions`` builds what can fail (the store, TLS options, the
throttle store, the auth cache) so a configuration mistake is a usage
error naming the option; :func:`popframe.settings.Settings.from_options`
then turns the checked options into the one frozen settings object the
rest of popframe reads.  ``twistd pop3`` finds this class through
``popframe.tap``, and every ``--workers`` process parses its arguments
with it again."""

from __future__ import annotations

import getopt
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.cred import strcred
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from popframe.auth.credentials import (
    DEFAULT_MECHANISMS,
    MECHANISM_NEEDS,
    IClientCertificate,
    IOAuthBearerToken,
)
from popframe.config import ConfigurationError
from popframe.config.keys import Key, key_table

if TYPE_CHECKING:
    from popframe.settings import Settings

__all__ = ["DEFAULT_BACKLOG", "DEMO_PLAIN", "DEMO_TLS_PORT", "Options", "with_default_backlog"]

DEMO_PLAIN = "tcp:1110:interface=127.0.0.1"
DEMO_TLS_PORT = 1995


#: Twisted's default listen backlog (50) drops connections in a burst of
#: a few hundred clients (measured: benchmarks/README.md).
DEFAULT_BACKLOG = 1024
_BACKLOG_TYPES = ("tcp:", "tcp6:", "ssl:", "tls:", "haproxy:tcp:", "haproxy:tcp6:", "haproxy:ssl:",
                  "haproxy:tls:")


def with_default_backlog(description: str) -> str:
    """``description`` with ``backlog=1024`` unless it names a backlog."""
    if description.startswith(_BACKLOG_TYPES) and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


def parse_expire(text: str) -> int | None:
    """``--expire``: a number of days (0 or more), or never (None)."""
    text = str(text).strip().lower()
    if text == "never":
        return None
    if not (text.isascii() and text.isdigit()):
        raise ConfigurationError("--expire", f"{text!r}: expected a number of days or never")
    return int(text)


def _mechanism_list(value: str) -> tuple[str, ...]:
    names = tuple(name.strip().upper() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in MECHANISM_NEEDS or name == "USER"]
    if unknown:
        known = ", ".join(n for n in MECHANISM_NEEDS if n != "USER")
        raise ValueError(f"--mechanisms: unknown {', '.join(unknown)} (known: {known})")
    return names


#: RFC 1939 section 3: a server's autologout timer is at least 10 minutes.
MINIMUM_IDLE_TIMEOUT = 600


class Options(usage.Options, strcred.AuthOptionMixin):
    synopsis = "[options]"
    longdesc = (
        "Serve POP3 (RFC 1939, 2449, 2595, 3206) from a mailbox store, "
        "authenticating with twisted.cred checkers. Try --demo first."
    )
    supportedInterfaces = [IUsernamePassword, IOAuthBearerToken, IClientCertificate]

    optFlags = [
        ["demo", None,
         "Run a demo: create or reuse ./popframe-demo/ (a Maildir, a passwd-file with "
         "one user, a self-signed certificate) and listen on 127.0.0.1:1110 (STLS) "
         "and 127.0.0.1:1995 (implicit TLS)."],
        ["allow-plaintext-auth", None,
         "Allow USER/PASS before STLS on connections that are not from loopback."],
        ["autoconfig-leave-on-server", None,
         "Tell Thunderbird (autoconfig) to leave messages on the server; by default the "
         "hint is to download and delete them."],
        ["allow-short-idle-timeout", None,
         "Accept an --idle-timeout under 600 seconds (RFC 1939 section 3 asks at least 10 "
         "minutes of the autologout timer); for tests and special set-ups only."],
    ]
    optParameters = [
        ["store", None, None,
         "Where maildrops live, as NAME:ARGUMENTS, e.g. maildir:/var/mail/%u/Maildir "
         "(%u user, %n local part, %d domain).  --help-stores lists the stores."],
        ["tls-client-ca", None, None,
         "PEM file of the CA certificates that issue client certificates (SASL EXTERNAL, "
         "with --auth tls-cert): TLS clients are asked for a certificate, verified against "
         "these CAs only; clients without one still connect.  Applies to STLS and "
         "implicit-tls: listeners; ssl: and tls: listeners take clientCA=FILE."],
        ["idle-timeout", None, 600.0,
         "Seconds of client silence before the server hangs up (RFC 1939: at least 600).",
         float],
        ["preauth-timeout", None, 60.0,
         "Seconds from connect by which a client must have logged in, however slowly it "
         "trickles its bytes (slowloris); 0: only --idle-timeout applies.  RFC 1939's "
         "10-minute minimum is for the autologout timer of a logged-in session.",
         float],
        ["max-connections-per-ip", None, 20,
         "Connections at once from one client address (an IPv6 /64); more are answered "
         "-ERR [SYS/TEMP] and closed (0: no limit).  Counted per process: with --workers N "
         "the limit is per worker.  Not applied behind haproxy: listeners (every client "
         "looks like the proxy when it connects): limit there in haproxy.",
         int],
        ["mechanisms", None, ",".join(DEFAULT_MECHANISMS),
         "SASL mechanisms (and APOP) to offer, comma-separated, where the --auth checkers "
         "can serve them.  CRAM-MD5 and APOP are weak and off by default.", _mechanism_list],
        ["hostname", None, socket.getfqdn(),
         "This server's name, in APOP and CRAM-MD5 challenges."],
        ["workers", None, os.cpu_count() or 1,
         "Processes serving the same listeners (default: the number of CPU cores); 1 serves "
         "from this process alone.  With more than 1, tcp:, tcp6:, ssl:, tls:, unix: and "
         "systemd: listeners (also behind haproxy:) are shared by all workers; other "
         "endpoint types need --workers 1.",
         int],
        ["throttle-base", None, 1.0,
         "Seconds before the -ERR of a first failed login; it doubles with each failure "
         "from the same address or for the same user name (0: no delay).", float],
        ["throttle-max", None, 30.0,
         "The longest delay before the -ERR of a failed login, in seconds.", float],
        ["throttle-window", None, 900.0,
         "Seconds after its first failure that an address's or user name's failure count "
         "is forgotten.", float],
        ["max-auth-failures", None, 3,
         "Failed logins after which a connection is dropped (0: no limit).", int],
        ["max-ip-failures", None, 100,
         "Failed logins from one address (an IPv6 /64) within --throttle-window after which "
         "logins from it are refused until the window ends (0: no limit).", int],
        ["throttle-store", None, "memory",
         "Where failure counts and last-login times live: memory (this process), or a Redis "
         "URL such as redis://127.0.0.1:6379/0 shared by every process and node "
         "(pip install 'popframe[redis]').  If the store fails, logins go on (fail open).",
         str],
        ["throttle-prefix", None, "popframe:",
         "Prefix of the keys in a Redis --throttle-store.", str],
        ["auth-cache-ttl", None, 0.0,
         "Seconds a successful password login is remembered, so the same user with the "
         "same password skips the hash (SHA512-CRYPT, bcrypt, argon2) until then; a "
         "changed password in the passwd-file stops matching at once; failures are never "
         "cached.  Costs: per user, an HMAC of the password under a key in this "
         "process's memory.  0: off (every login runs the hash).", float],
        ["lmtp-max-size", None, 50 * 1024 * 1024,
         "The largest message the --lmtp listeners take, in octets (advertised as SIZE; "
         "larger ones get 552 5.3.4); 0: no limit.", int],
        ["lmtp-max-recipients", None, 1000,
         "Recipients per LMTP transaction; more get 452 4.5.3 (the MTA sends them in "
         "another transaction).", int],
        ["lmtp-user-format", None, "%u",
         "The user an LMTP recipient address names: %u the whole address (local@domain, "
         "domain lower-cased), %n its local part (users who log in without a domain); "
         "%Lu, %Ln lower-cased.  Unknown users (no --auth checker knows them) get 550 5.1.1."],
        ["lmtp-recipient-delimiter", None, "",
         "Characters that start an address extension, as Postfix's recipient_delimiter "
         "(e.g. +): mail for alice+news@example.org goes to alice@example.org."],
        ["lmtp-spool", None, None,
         "Directory where LMTP messages are spooled as they arrive (default: the system's "
         "temporary directory; pick a disk, not a tmpfs, for large messages)."],
        ["lmtp-timeout", None, 300.0,
         "Seconds of LMTP client silence before the server hangs up.", float],
        ["login-delay", None, None,
         "RFC 2449 LOGIN-DELAY: refuse a login sooner than SECONDS after the user's last "
         "one, and advertise it in CAPA.  A passwd-file login_delay=SECONDS extra field "
         "sets a user's own.", int],
        # -- watching and limits (docs/operations.md) --
        ["metrics", None, None,
         "Serve Prometheus metrics at /metrics on this Twisted endpoint, e.g. "
         "tcp:9110:interface=127.0.0.1; with --workers, one page for all of them."],
        ["log-format", None, "text",
         "text, or json: one JSON object per log line, where twistd would write text (the "
         "same as twistd --logger popframe.ops.logformat.json_stdout, for standard output)."],
        ["max-connections", None, 0,
         "POP3 connections at once to the whole server (all --workers); more are answered "
         "-ERR [SYS/TEMP] and closed (0: no limit).", int],
        ["max-sessions-per-user", None, 0,
         "Sessions at once of one user, for stores that let a user open several (maildir "
         "and mbox lock the maildrop: one); more are answered -ERR [SYS/TEMP] and closed "
         "(0: no limit; counted per process).", int],
        ["trusted-networks", None, "127.0.0.0/8,::1/128",
         "Comma-separated addresses or CIDR networks of proxies and webmails (default: "
         "loopback; none: nobody).  They are never refused by --max-connections-per-ip nor "
         "blocked by --max-ip-failures (their users' failures still count per user name), "
         "and may forward a client's address with XCLIENT ADDR=... PORT=..., which is then "
         "counted instead."],
        # -- leave-on-server and EXPIRE (docs/operations.md) --
        ["expire", None, "never",
         "RFC 2449 EXPIRE: DAYS a retrieved message stays on the server before the store "
         "removes it (0: deleted at QUIT even without DELE), or never (the default).  "
         "Advertised in CAPA; a checker's per-user value (passwd-file expire=DAYS, SQL "
         "expire column) wins.  Removal: popframe expire (cron) or --expire-sweep."],
        ["expire-sweep", None, 0.0,
         "Every SECONDS, remove mail retrieved longer ago than each user's EXPIRE, inside "
         "the service (0: off; use popframe expire from cron instead).", float],
        ["shutdown-grace", None, 30.0,
         "On SIGTERM, stop accepting and give the sessions in progress this many seconds "
         "to finish; then close the rest without applying their deletions.", float],
        # -- clients that set themselves up (docs/clients.md) --
        ["autoconfig", None, None,
         "Serve the documents mail clients set themselves up from (Thunderbird autoconfig, "
         "Outlook Autodiscover, Apple .mobileconfig) over HTTP on this Twisted endpoint, "
         "e.g. tcp:8080:interface=127.0.0.1 behind an HTTPS proxy; see docs/clients.md."],
        ["autoconfig-host", None, socket.getfqdn(),
         "The host name the autoconfig documents tell clients to connect to for POP3 "
         "(default: this machine's FQDN)."],
        ["autoconfig-domains", None, "",
         "Comma-separated mail domains the autoconfig documents are given for (default: any); "
         "addresses of other domains get 404."],
        ["autoconfig-username", None, "address",
         "The login name the autoconfig documents give: address (the whole email address) or "
         "local-part (before the @), as the --auth user names are."],
        ["autoconfig-smtp", None, None,
         "The submission server the autoconfig documents name too, as HOST:PORT:MODE with "
         "MODE ssl, starttls or plain, e.g. smtp.example.org:587:starttls (default: none; "
         "Apple profiles, which need one, then name --autoconfig-host:587 with TLS)."],
        ["autoconfig-sign-cert", None, None,
         "PEM certificate (chain) that signs the Apple profiles (CMS SignedData); unsigned "
         "without it."],
        ["autoconfig-sign-key", None, None,
         "PEM private key (RSA or EC) for --autoconfig-sign-cert (default: in its file)."],
    ]
    compData = usage.Completions(
        optActions={
            "tls-cert": usage.CompleteFiles("*.pem"),
            "tls-key": usage.CompleteFiles("*.pem"),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        # One line per help text: the sources wrap their strings at will.
        self.docs = {name: " ".join(doc.split()) if doc else doc
                     for name, doc in self.docs.items()}
        self["listen"] = []
        self["lmtp"] = []
        self["tls-cert"] = []
        self["tls-key"] = []
        self["tls-ocsp-response"] = []
        self["master-users"] = set()
        self["autoconfig-port"] = []
        self["workarounds"] = set()
        # What postOptions builds (see popframe.settings.Settings).
        self.demo: Any = None
        self.store: Any = None
        self.tls: Any = None
        self.throttle: Any = None
        self.login_delay_policy: Any = None
        self.expire_days: int | None = None
        self.trusted_networks: Any = None
        self.autoconfig: Any = None
        self.argv: list[str] | None = None
        #: A reload's running settings, whose throttle store is kept when
        #: --throttle-store and --throttle-prefix are unchanged.
        self.previous: Settings | None = None
        self.throttle_store_description: tuple[str, str] | None = None
        #: --config: the file, and the keys the arguments took from it.
        self.config_file: str | None = None
        self.from_config_file: frozenset[str] = frozenset()

    @classmethod
    def config_keys(cls) -> dict[str, Key]:
        """The settings a ``--config`` file may hold (the options, by name)."""
        return key_table(cls)

    def parseOptions(self, options: list[str] | None = None) -> None:
        # --workers: each worker process parses these same arguments again
        # (and so reads the --config file again, as a SIGHUP reload does).
        args = list(sys.argv[1:] if options is None else options)
        self.argv = args
        try:
            given = self._given(args)
            args = self._config_arguments(given) + args
            self._check_values(self._given(args))
            super().parseOptions(args)
        except (usage.UsageError, ConfigurationError) as error:
            cause = self._in_file_terms(_configuration_error(error))
            text = str(cause or error)
            if getattr(self, "parent", None) is None:  # not run by twistd
                raise usage.UsageError(text) from cause
            # twistd would print its whole usage text before the reason.
            raise SystemExit(f"twistd pop3: {text}\n"
                             "(twistd pop3 --help lists the options)") from None

    def _given(self, args: list[str]) -> list[tuple[str, str]]:
        """(option, value) for each option in ``args``, by long name; empty
        when they do not parse (``parseOptions`` then says why)."""
        try:
            found = getopt.getopt(args, self.shortOpt, self.longOpt)[0]
        except getopt.GetoptError:
            return []
        named = []
        for option, value in found:
            name = option.lstrip("-")
            named.append((self.synonyms.get(name, name), value))
        return named

    def _config_arguments(self, given: list[tuple[str, str]]) -> list[str]:
        """The arguments the ``--config`` file stands for, without the keys
        the command line gives (it overrides them)."""
        paths = [value for name, value in given if name == "config"]
        if not paths:
            return []
        from popframe.config.file import arguments, read_config

        path = self.config_file = paths[-1]
        table = read_config(path)
        on_command_line = frozenset(name for name, _ in given)
        args, problems = arguments(table, self.config_keys(), path, skip=on_command_line)
        if problems:
            raise ConfigurationError(path, "; ".join(map(str, problems)) +
                                     f" (popframe check-config {path} lists every mistake)")
        self.from_config_file = frozenset(table) - on_command_line
        return args

    def _check_values(self, given: list[tuple[str, str]]) -> None:
        """Typed options, checked before Twisted's coercion, whose message
        would name neither the option nor the value."""
        keys = self.config_keys()
        for name, value in given:
            key = keys.get(name)
            if key is None or key.coerce is None:
                continue
            try:
                key.coerce(value)
            except ValueError as error:
                if key.coerce in (int, float):
                    raise ConfigurationError(f"--{name}", f"{value!r}: expected {key.expected}, "
                                             f"e.g. --{name} {key.default or 1}") from None
                text = str(error)
                raise ConfigurationError(f"--{name}", text.removeprefix(f"--{name}: ")) from None

    def _in_file_terms(self, error: ConfigurationError | None) -> ConfigurationError | None:
        """An error about a setting the ``--config`` file gave names the
        file and its key, not the option."""
        if error is not None and self.config_file:
            name = error.key.removeprefix("--")
            if name in self.from_config_file:
                return ConfigurationError(f"{self.config_file}: {name}", error.problem)
        return error

    def opt_config(self, path: str) -> None:
        """A TOML file of settings whose keys are these options' names
        (idle-timeout = 300, listen = ["tcp:110"]); options given here
        override it.  See examples/popframe.toml; popframe check-config FILE
        checks one."""
        self["config"] = path

    def opt_version(self) -> None:
        """Show popframe's version and exit."""
        import twisted
        from popframe import __version__

        print(f"popframe {__version__} (Twisted {twisted.__version__}, "
              f"Python {sys.version.split()[0]})")
        sys.exit(0)

    def opt_listen(self, description: str) -> None:
        """A Twisted server endpoint to listen on (repeatable), e.g.
        tcp:110, ssl:995:privateKey=key.pem:certKey=cert.pem, unix:/run/pop3.sock,
        systemd:domain=INET:index=0, haproxy:tcp:110."""
        self["listen"].append(description)

    def opt_tls_cert(self, path: str) -> None:
        """PEM certificate (chain) for STLS and implicit-tls: listeners, repeatable: the
        client's SNI name picks one by its subjectAltName DNS names (wildcards match one
        label), the first is the default.  A directory: each *.pem file in it holds a
        certificate chain and its key."""
        self["tls-cert"].append(path)

    def opt_tls_key(self, path: str) -> None:
        """PEM private key of a --tls-cert file, repeatable: the keys pair in order with
        the --tls-cert files (not directories); a file without one holds its own key."""
        self["tls-key"].append(path)

    def opt_tls_ocsp_response(self, path: str) -> None:
        """A DER OCSP response (openssl ocsp -respout) for one of the --tls-cert
        certificates, matched by its serial number, stapled for clients that ask
        (status_request); repeatable, read again on SIGHUP."""
        self["tls-ocsp-response"].append(path)

    def opt_lmtp(self, description: str) -> None:
        """A Twisted server endpoint for an LMTP listener (RFC 2033, repeatable), through
        which an MTA delivers into --store, e.g. unix:/run/popframe/lmtp or
        tcp:24:interface=127.0.0.1.  See docs/delivery.md."""
        self["lmtp"].append(description)

    def opt_auth(self, description: str) -> None:
        """A checker, as TYPE:ARGUMENTS (repeatable), e.g.
        passwd-file:/etc/popframe/users.  --help-auth lists the types."""
        try:
            super().opt_auth(description)
        except ConfigurationError as error:
            raise usage.UsageError(str(error)) from None
        except usage.UsageError as error:
            # strcred wraps what the checker factory raised.
            cause = error.__context__
            if isinstance(cause, ConfigurationError):
                raise ConfigurationError("--auth", cause.problem) from None
            raise ConfigurationError("--auth", _unknown_checker(description, error)) from None
        _encode_memory_users(self["credCheckers"][-1])

    def opt_workaround(self, name: str) -> None:
        """A client workaround, off by default (repeatable): outlook-nul,
        top-missing-blank-line, list-progress, mbox-from-quirks, bare-cr.
        docs/operations.md says which client needs which."""
        from popframe.protocol.encoding import WORKAROUNDS

        for item in name.split(","):
            item = item.strip()
            if item not in WORKAROUNDS:
                raise usage.UsageError(
                    f"--workaround: unknown {item!r} (known: {', '.join(sorted(WORKAROUNDS))})")
            self["workarounds"].add(item)

    def opt_master_user(self, user: str) -> None:
        """A user who may log in as any other (SASL PLAIN authorization
        identity), for support staff and migrations; repeatable."""
        self["master-users"].add(user)

    def opt_autoconfig_port(self, value: str) -> None:
        """A POP3 port clients reach, as MODE:PORT with MODE ssl, starttls or plain
        (repeatable), for the autoconfig documents when it is not a --listen port
        (behind NAT, haproxy: or systemd:), e.g. ssl:995; replaces what the listeners say."""
        from popframe.autoconfig.settings import parse_server

        parse_server(value, "--autoconfig-port", with_host=False)
        self["autoconfig-port"].append(value)

    def opt_help_stores(self) -> None:
        """List the available mailbox stores and exit."""
        from popframe.stores import find_store_factories

        search = find_store_factories()
        print("Available stores (--store=NAME:ARGUMENTS):")
        for factory in sorted(search.found, key=lambda f: f.storeName):
            print(f"  {factory.storeName:12} {factory.argStringFormat}")
            for line in factory.storeHelp.strip().splitlines():
                print(f"  {'':12} {line.strip()}")
        for module, error in sorted(search.broken.items()):
            print(f"Plugin module {module} failed to load: {error}")
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            self._check()
        except ConfigurationError as error:
            raise usage.UsageError(str(error)) from error  # the cause names the key

    def _check(self) -> None:
        if self["demo"]:
            self._use_demo()
        if not self["listen"]:
            raise ConfigurationError("--listen", "give at least one endpoint, e.g. tcp:110")
        self._check_endpoints()
        self["listen"] = [with_default_backlog(d) for d in self["listen"]]
        if not self["store"]:
            raise ConfigurationError("--store", "required, e.g. maildir:/var/mail/%u/Maildir")
        if not self.get("credCheckers"):
            raise ConfigurationError("--auth", "required, e.g. passwd-file:/etc/popframe/users")
        if self["tls-key"] and not self["tls-cert"]:
            raise ConfigurationError("--tls-key", "needs --tls-cert")
        if self["tls-ocsp-response"] and not self["tls-cert"]:
            raise ConfigurationError("--tls-ocsp-response", "needs --tls-cert")
        if self["tls-client-ca"] and not self["tls-cert"]:
            raise ConfigurationError("--tls-client-ca", "needs --tls-cert")
        if not self["tls-client-ca"] and self.get("credInterfaces", {}).get(IClientCertificate):
            raise ConfigurationError(
                "--auth", "tls-cert needs --tls-client-ca (the CA of the client certificates)"
            )
        if self["idle-timeout"] < 0:
            raise ConfigurationError("--idle-timeout", "must not be negative")
        if (0 < self["idle-timeout"] < MINIMUM_IDLE_TIMEOUT
                and not self["allow-short-idle-timeout"]):
            raise ConfigurationError(
                "--idle-timeout",
                f"{self['idle-timeout']:g} s is under RFC 1939's {MINIMUM_IDLE_TIMEOUT} s "
                "minimum for the autologout timer of a logged-in session (give "
                "--allow-short-idle-timeout to accept it; the login deadline is "
                "--preauth-timeout)",
            )
        if self["preauth-timeout"] < 0:
            raise ConfigurationError("--preauth-timeout", "must not be negative")
        if self["max-connections-per-ip"] < 0:
            raise ConfigurationError("--max-connections-per-ip", "must not be negative")
        if self["workers"] < 1:
            raise ConfigurationError("--workers", "must be at least 1")
        self._check_watching()
        from popframe.autoconfig.settings import autoconfig_settings

        self.autoconfig = autoconfig_settings(self)
        if self["shutdown-grace"] < 0:
            raise ConfigurationError("--shutdown-grace", "must not be negative")
        if isinstance(self["mechanisms"], str):  # the default: only given values are coerced
            self["mechanisms"] = _mechanism_list(self["mechanisms"])
        self._check_auth_cache()
        self._check_throttle()
        self.expire_days = parse_expire(self["expire"])
        if self["expire-sweep"] < 0:
            raise ConfigurationError("--expire-sweep", "must not be negative")
        # Build what can be checked now, so mistakes surface as usage errors.
        from popframe.stores import store_from_description
        from popframe.tls import load_tls_options

        self.store = store_from_description(self["store"])
        self._check_store_sharing()
        self._check_lmtp()
        self.tls = (
            load_tls_options(self["tls-cert"], self["tls-key"], self["tls-client-ca"],
                             self["tls-ocsp-response"])
            if self["tls-cert"] else None
        )

    def _check_endpoints(self) -> None:
        """Endpoint strings as given (the mistakes Twisted reports badly:
        an unknown type, a port that is no number, an ssl: key)."""
        from popframe.config.endpoints import check_endpoint

        for key, descriptions in (("--listen", self["listen"]), ("--lmtp", self["lmtp"])):
            for description in descriptions:
                check_endpoint(description, key)

    def _check_store_sharing(self) -> None:
        """A store whose maildrops live in process memory cannot serve
        several workers: each would have its own copy, and a message
        deleted through one would come back through the next."""
        from popframe.interfaces import IProcessLocalStore

        if self["workers"] > 1 and IProcessLocalStore.providedBy(self.store):
            name = self["store"].partition(":")[0]
            raise ConfigurationError(
                "--workers", f"the {name!r} store keeps its maildrops in this process's memory, "
                "so worker processes cannot share them; use --workers 1")

    def _check_lmtp(self) -> None:
        """--lmtp-*: checked even without --lmtp, so a typo shows at once."""
        from popframe.delivery.recipients import RecipientRules
        from popframe.interfaces import IDeliverableStore

        for name in ("lmtp-max-size", "lmtp-timeout"):
            if self[name] < 0:
                raise ConfigurationError(f"--{name}", "must not be negative")
        if self["lmtp-max-recipients"] < 1:
            raise ConfigurationError("--lmtp-max-recipients", "must be at least 1")
        if self["lmtp-spool"] and not os.path.isdir(self["lmtp-spool"]):
            raise ConfigurationError("--lmtp-spool", f"{self['lmtp-spool']!r} is not a directory")
        try:
            RecipientRules(self["lmtp-user-format"], self["lmtp-recipient-delimiter"])
        except ConfigurationError as error:
            raise ConfigurationError("--lmtp-user-format", error.problem) from None
        self["lmtp"] = [with_default_backlog(d) for d in self["lmtp"]]
        if self["lmtp"] and not IDeliverableStore.providedBy(self.store):
            name = self["store"].partition(":")[0]
            raise ConfigurationError("--lmtp", f"the {name!r} store cannot take deliveries")

    def _check_watching(self) -> None:
        """--metrics, --log-format, --max-connections, --max-sessions-per-user,
        --trusted-networks."""
        from popframe.throttle import TrustedNetworks

        for name in ("max-connections", "max-sessions-per-user"):
            if self[name] < 0:
                raise ConfigurationError(f"--{name}", "must not be negative")
        try:
            self.trusted_networks = TrustedNetworks.parse(self["trusted-networks"])
        except ValueError as error:
            raise ConfigurationError("--trusted-networks", str(error)) from None
        if self["log-format"] not in ("text", "json"):
            raise ConfigurationError("--log-format", f"{self['log-format']!r}: use text or json")
        twistd = getattr(self, "parent", None)
        if self["log-format"] == "json" and twistd is not None:
            from popframe.ops.logformat import log_to_json

            log_to_json(twistd)
        if self["metrics"] is not None and not self["metrics"].strip():
            raise ConfigurationError("--metrics", "give an endpoint, e.g. tcp:9110")

    def _check_auth_cache(self) -> None:
        """--auth-cache-ttl: a cache of verified passwords for each checker
        that can use one (it has a ``verified_passwords`` attribute)."""
        ttl = self["auth-cache-ttl"]
        if ttl < 0:
            raise ConfigurationError("--auth-cache-ttl", "must not be negative")
        if not ttl:
            return
        from popframe.auth.cache import VerifiedPasswords

        caching = [c for c in self["credCheckers"] if hasattr(c, "verified_passwords")]
        if not caching:
            raise ConfigurationError("--auth-cache-ttl", "no --auth checker can cache passwords "
                                     "(passwd-file can)")
        for checker in caching:
            checker.verified_passwords = VerifiedPasswords(ttl)

    def _check_throttle(self) -> None:
        """--throttle-*, --max-*-failures, --login-delay: the policies
        ServerConfig.throttle and ServerConfig.login_delay get."""
        from popframe.logindelay import LoginDelay
        from popframe.throttle import Throttle, throttle_store_from_description

        for name in ("throttle-base", "throttle-max", "max-auth-failures", "max-ip-failures"):
            if self[name] < 0:
                raise ConfigurationError(f"--{name}", "must not be negative")
        if self["throttle-max"] < self["throttle-base"]:
            raise ConfigurationError("--throttle-max", "must not be less than --throttle-base")
        if self["throttle-window"] <= 0:
            raise ConfigurationError("--throttle-window", "must be positive")
        if self["login-delay"] is not None and self["login-delay"] < 0:
            raise ConfigurationError("--login-delay", "must not be negative")
        where = (self["throttle-store"].strip(), self["throttle-prefix"])
        previous = self.previous
        if previous is not None and previous.throttle is not None and (
                previous.throttle_store_description == where):
            # A reload keeps the counts (and a Redis store's thread pool).
            store = previous.throttle.store
        else:
            store = throttle_store_from_description(*where)
        self.throttle_store_description = where
        self.throttle = Throttle(
            store,
            base=self["throttle-base"],
            max_delay=self["throttle-max"],
            window=self["throttle-window"],
            max_auth_failures=self["max-auth-failures"],
            max_ip_failures=self["max-ip-failures"],
            trusted=self.trusted_networks,
        )
        self.login_delay_policy = LoginDelay(store, self["login-delay"])

    def _use_demo(self) -> None:
        from popframe.demo import prepare_demo

        demo = self.demo = prepare_demo(Path("popframe-demo").absolute())
        if not self["store"]:
            self["store"] = f"maildir:{demo.maildir_template}"
        if not self.get("credCheckers"):
            self.opt_auth(f"passwd-file:{demo.passwd_file}")
        if not self["tls-cert"]:
            self["tls-cert"], self["tls-key"] = [str(demo.cert_path)], [str(demo.key_path)]
        if not self["listen"]:
            key = quoteStringArgument(str(demo.key_path))
            cert = quoteStringArgument(str(demo.cert_path))
            self["listen"] = [
                DEMO_PLAIN,
                f"ssl:{DEMO_TLS_PORT}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            ]


def _configuration_error(error: Exception) -> ConfigurationError | None:
    """The ConfigurationError behind a usage error, if one is."""
    if isinstance(error, ConfigurationError):
        return error
    cause = error.__cause__
    return cause if isinstance(cause, ConfigurationError) else None


def _unknown_checker(description: str, error: Exception) -> str:
    """Twisted says only "Auth plugin not recognized: NAME": say what is
    wrong, how the value is written, and which plugin modules failed to
    load (the checker meant may be in one)."""
    from popframe.plugins import find_plugins

    search = find_plugins(strcred.ICheckerFactory)
    name, colon, _ = description.partition(":")
    if any(f.authType == name for f in search.found):
        return str(error)
    known = ", ".join(sorted(f.authType for f in search.found))
    if not colon or "/" in name:
        problem = (f"{description!r} names no checker: write TYPE:ARGUMENTS, e.g. "
                   f"passwd-file:{description if '/' in description else '/etc/popframe/users'}")
    else:
        problem = f"no checker type {name!r} in {description!r}"
    problem += f" (types: {known}; --help-auth describes them)"
    if search.broken:
        problem += f"; {search.broken_text()}"
    return problem


def _encode_memory_users(checker: object) -> None:
    """Twisted's ``memory:USER:PASSWORD`` checker keeps the names and
    passwords as text, but cred credentials carry bytes (Twisted's own
    convention, and popframe's), so no login could ever match: store them
    as UTF-8 bytes."""
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        checker.users = {_utf8(user): _utf8(password) for user, password in checker.users.items()}


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
