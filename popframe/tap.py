"""``twistd pop3``: command-line options and ``makeService``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from popframe.config import ConfigurationError

DEMO_PLAIN = "tcp:1110:interface=127.0.0.1"
DEMO_TLS_PORT = 1995


class Options(usage.Options, strcred.AuthOptionMixin):
    synopsis = "[options]"
    longdesc = (
        "Serve POP3 (RFC 1939, 2449, 2595, 3206) from a mailbox store, "
        "authenticating with twisted.cred checkers.  Try --demo first."
    )
    supportedInterfaces = [IUsernamePassword]

    optFlags = [
        ["demo", None,
         "Run a demo: create or reuse ./popframe-demo/ (a Maildir, a passwd-file with "
         "one user, a self-signed certificate) and listen on 127.0.0.1:1110 (STLS) "
         "and 127.0.0.1:1995 (implicit TLS)."],
        ["allow-plaintext-auth", None,
         "Allow USER/PASS before STLS on connections that are not from loopback."],
    ]
    optParameters = [
        ["store", None, None,
         "Where maildrops live, as NAME:ARGUMENTS, e.g. maildir:/var/mail/%u/Maildir "
         "(%u user, %n local part, %d domain).  --help-stores lists the stores."],
        ["tls-cert", None, None,
         "PEM certificate (chain) for STLS on plain listeners."],
        ["tls-key", None, None,
         "PEM private key for --tls-cert (default: the key is in the --tls-cert file)."],
        ["idle-timeout", None, 600.0,
         "Seconds of client silence before the server hangs up (RFC 1939: at least 600).",
         float],
    ]
    compData = usage.Completions(
        optActions={
            "tls-cert": usage.CompleteFiles("*.pem"),
            "tls-key": usage.CompleteFiles("*.pem"),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.demo: Any = None
        self.store: Any = None
        self.tls: Any = None

    def opt_listen(self, description: str) -> None:
        """A Twisted server endpoint to listen on (repeatable), e.g.
        tcp:110, ssl:995:privateKey=key.pem:certKey=cert.pem, unix:/run/pop3.sock,
        systemd:domain=INET:index=0, haproxy:tcp:110."""
        self["listen"].append(description)

    def opt_auth(self, description: str) -> None:
        """A checker, as TYPE:ARGUMENTS (repeatable), e.g.
        passwd-file:/etc/popframe/users.  --help-auth lists the types."""
        try:
            super().opt_auth(description)
        except ConfigurationError as error:
            raise usage.UsageError(str(error)) from None

    def opt_help_stores(self) -> None:
        """List the available mailbox stores and exit."""
        from popframe.stores import find_store_factories

        print("Available stores (--store=NAME:ARGUMENTS):")
        for factory in sorted(find_store_factories(), key=lambda f: f.storeName):
            print(f"  {factory.storeName:12} {factory.argStringFormat}")
            for line in factory.storeHelp.strip().splitlines():
                print(f"  {'':12} {line.strip()}")
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            self._check()
        except ConfigurationError as error:
            raise usage.UsageError(str(error)) from None

    def _check(self) -> None:
        if self["demo"]:
            self._use_demo()
        if not self["listen"]:
            raise ConfigurationError("--listen", "give at least one endpoint, e.g. tcp:110")
        if not self["store"]:
            raise ConfigurationError("--store", "required, e.g. maildir:/var/mail/%u/Maildir")
        if not self.get("credCheckers"):
            raise ConfigurationError("--auth", "required, e.g. passwd-file:/etc/popframe/users")
        if self["tls-key"] and not self["tls-cert"]:
            raise ConfigurationError("--tls-key", "needs --tls-cert")
        if self["idle-timeout"] < 0:
            raise ConfigurationError("--idle-timeout", "must not be negative")
        # Build what can be checked now, so mistakes surface as usage errors.
        from popframe.stores import store_from_description
        from popframe.tls import load_tls_options

        self.store = store_from_description(self["store"])
        self.tls = load_tls_options(self["tls-cert"], self["tls-key"]) if self["tls-cert"] else None

    def _use_demo(self) -> None:
        from popframe.demo import prepare_demo

        demo = self.demo = prepare_demo(Path("popframe-demo").absolute())
        if not self["store"]:
            self["store"] = f"maildir:{demo.maildir_template}"
        if not self.get("credCheckers"):
            self.opt_auth(f"passwd-file:{demo.passwd_file}")
        if not self["tls-cert"]:
            self["tls-cert"], self["tls-key"] = str(demo.cert_path), str(demo.key_path)
        if not self["listen"]:
            key = quoteStringArgument(str(demo.key_path))
            cert = quoteStringArgument(str(demo.cert_path))
            self["listen"] = [
                DEMO_PLAIN,
                f"ssl:{DEMO_TLS_PORT}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            ]


def makeService(options: Options):
    from popframe.service import make_service

    return make_service(options)
