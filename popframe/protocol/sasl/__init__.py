"""SASL (RFC 4422) mechanisms as sans-IO exchanges.

A mechanism turns client responses into steps: a :class:`Challenge` to
send, a :class:`NeedSecret` when it must see the user's stored secret before
it can go on (SCRAM's salt, CRAM-MD5's key), or a finished :class:`Outcome`
holding the identity to log in.  Mechanisms never do I/O: the session asks
the adapter for secrets and for the final check.

Register a mechanism with :func:`register`; the session offers it when the
adapter lists its name among the mechanisms the configured checkers serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from popframe.errors import AuthenticationFailed
from popframe.protocol.sasl.secrets import SecretKind

# -- what a finished exchange proves ------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Password:
    """A user name and password for the checkers to verify (USER/PASS,
    PLAIN, LOGIN).  ``authzid`` is the identity to act as, if different."""

    authcid: str
    password: bytes
    authzid: str | None = None

    def __repr__(self) -> str:
        return f"Password(authcid={self.authcid!r}, authzid={self.authzid!r})"


@dataclass(frozen=True, slots=True)
class Verified:
    """The mechanism itself proved the client knows ``authcid``'s secret
    (SCRAM, CRAM-MD5, APOP), from a secret the adapter looked up."""

    authcid: str
    authzid: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class BearerToken:
    """An OAuth 2.0 access token (OAUTHBEARER, XOAUTH2) for a token
    validator; ``user`` is what the client claims, if anything."""

    token: str
    user: str | None = None

    def __repr__(self) -> str:
        return f"BearerToken(user={self.user!r}, token=<hidden>)"


@dataclass(frozen=True, slots=True)
class External:
    """Identity established outside SASL (a TLS client certificate)."""

    authzid: str | None = None


Credentials = Password | Verified | BearerToken | External


# -- steps ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``+ base64(data)`` and wait for the client's response line."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class NeedSecret:
    """Look up ``kind`` of secret for ``user`` and hand it to
    :meth:`Mechanism.secret`: the type :data:`secrets.SECRET_TYPES` names
    for the kind, or None if the user is unknown."""

    user: str
    kind: SecretKind


@dataclass(frozen=True, slots=True)
class Outcome:
    """The exchange is over; log in with ``credentials``.  ``final`` is
    additional data the server sends with success: POP3 has no room for it
    in +OK (RFC 5034 section 4), so it goes out as one more challenge whose
    answer must be empty."""

    credentials: Credentials
    final: bytes | None = None


Step = Challenge | NeedSecret | Outcome


class SASLFailed(AuthenticationFailed):
    """The client's SASL messages were malformed or its proof was wrong;
    answered like any failed login."""


@dataclass(frozen=True)
class SASLContext:
    """What a mechanism may know about its connection."""

    tls_active: bool = False
    # tls-unique / tls-exporter / tls-server-end-point data, None if unknown.
    channel_binding: Callable[[str], bytes | None] = field(default=lambda kind: None)
    # Random bytes for nonces (os.urandom); injected so tests are repeatable.
    random: Callable[[int], bytes] = field(default=lambda n: __import__("os").urandom(n))
    hostname: str = "localhost"
    # The APOP timestamp this session's greeting sent (RFC 1939 section 7).
    apop_timestamp: str | None = None
    # The SASL mechanisms offered on this connection (None: not known), so
    # that SCRAM can tell a downgrade ("y": the client thinks the server has
    # no channel binding) from a server that really offers no -PLUS.
    mechanisms: tuple[str, ...] | None = None


class Mechanism:
    """One exchange.  Subclasses set ``name`` and implement :meth:`start`
    and, for multi-step mechanisms, :meth:`respond` / :meth:`secret`."""

    name: ClassVar[str] = ""
    # Sends the password itself: offered only where plaintext auth is.
    plaintext: ClassVar[bool] = False
    # Needs TLS to exist at all (EXTERNAL, -PLUS).
    requires_tls: ClassVar[bool] = False
    # Needs the TLS client to have shown a certificate (EXTERNAL): an
    # implicit-TLS listener that asks for none can never complete it.
    requires_client_certificate: ClassVar[bool] = False
    # Listed by CAPA SASL and AUTH (APOP is an exchange, but no SASL one).
    sasl: ClassVar[bool] = True

    def __init__(self, context: SASLContext) -> None:
        self.context = context

    def start(self, initial_response: bytes | None) -> Step:
        raise NotImplementedError

    def respond(self, response: bytes) -> Step:
        raise SASLFailed()

    def secret(self, secret: object | None) -> Step:
        """The answer to this exchange's :class:`NeedSecret`: what the
        backend's lookup gave, None for no such user.  Anything but the
        declared type of the kind asked for must count as no secret (a
        backend may be wrong), at the same cost as a real one."""
        raise SASLFailed()

    def failure_challenge(self, error: AuthenticationFailed) -> bytes | None:
        """Data for one last challenge when the login this exchange's
        :class:`Outcome` asked for failed with ``error`` (RFC 7628's error
        JSON): the session sends it, and answers whatever the client
        replies with ``error``.  None (the default): fail at once."""
        return None


MECHANISMS: dict[str, type[Mechanism]] = {}


def register(mechanism: type[Mechanism]) -> type[Mechanism]:
    MECHANISMS[mechanism.name] = mechanism
    return mechanism


def utf8(data: bytes) -> str:
    """Decode a SASL field; malformed UTF-8 fails the exchange."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLFailed() from None


# The built-in mechanisms register themselves on import.
from popframe.protocol.sasl import apop, crammd5, external, login, oauth, plain, scram  # noqa: E402,F401

__all__ = [
    "BearerToken",
    "Challenge",
    "Credentials",
    "External",
    "MECHANISMS",
    "Mechanism",
    "NeedSecret",
    "Outcome",
    "Password",
    "SASLContext",
    "SASLFailed",
    "Step",
    "Verified",
    "register",
    "utf8",
]
