"""The POP3 session state machine, without I/O (in the manner of h11).

The adapter feeds received bytes with :meth:`Session.receive_data` and
asks :meth:`Session.next_event` what to do next.  The answer is one of:

- ``NEED_DATA``: read more from the client;
- a :class:`Reply`: send ``reply.encode()`` (and close if ``reply.close``);
- a request that needs the adapter (:class:`Authenticate`,
  :class:`LookupSecret`, :class:`Retrieve`, :class:`Commit`,
  :class:`StartTLS`, :class:`LoginRefused`, :class:`Forward`): do the work, then report the
  outcome with the matching ``Session`` method, which returns the reply to
  send.

While a request is outstanding the session takes no further command, which
keeps pipelined replies in order (RFC 2449 section 6.6).  All state changes
happen here; the table ``_HANDLERS`` says which commands each state takes.
"""

from __future__ import annotations

import base64
import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from popframe.errors import (
    AuthenticationFailed,
    BadArguments,
    ClientError,
    LineTooLong,
    MessageDeleted,
    NoSuchMessage,
    POP3Error,
    TLSNotAvailable,
    TLSRequired,
    UnknownCommand,
    WrongState,
)
from popframe.protocol import commands as c
from popframe.protocol import sasl
from popframe.protocol.catalogue import DEFAULT_LANGUAGE, LANGUAGES, match_language, translate
from popframe.protocol.encoding import MessageEncoder, VerbatimEncoder, encoder_for
from popframe.protocol.listing import MessageInfo, MessageList
from popframe.protocol.normalize import normalize_password, normalize_user
from popframe.protocol.replies import Reply, error_reply, numbered_body, scan_listing
from popframe.protocol.sasl.secrets import SecretKind


class SessionState(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class SessionMisuse(Exception):
    """The adapter called the session out of turn: a bug in popframe, not
    the client's fault."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol limits enforced by the core."""

    # RFC 2449 section 4: a command line is at most 255 octets with CRLF.
    max_line: int = 255
    # Client errors tolerated before the connection is dropped.
    max_bad_commands: int = 10
    # Unprocessed pipelined input above which the adapter stops reading.
    max_buffered: int = 64 * 1024
    # A SASL response line (RFC 5034 lifts the 255-octet limit for them:
    # OAuth tokens are kilobytes), and AUTH lines with an initial response.
    max_sasl_line: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a session may offer on its connection."""

    implementation: str = "popframe"
    # A certificate is configured, so STLS can be offered on plain links.
    stls_available: bool = False
    # The connection is already encrypted (implicit TLS).
    tls_active: bool = False
    # USER/PASS allowed without TLS (loopback, or --allow-plaintext-auth).
    plaintext_auth_allowed: bool = True
    # SASL mechanisms (and "APOP") the configured checkers can serve.
    mechanisms: tuple[str, ...] = ()
    # USER/PASS offered at all (some checker verifies passwords).
    user_pass: bool = True
    # The APOP timestamp for the greeting (RFC 1939 section 7), if enabled.
    apop_timestamp: str | None = None
    # Seconds between logins (RFC 2449 LOGIN-DELAY), advertised in CAPA.
    login_delay: int | None = None
    # Some users may have a delay of their own: before login, CAPA says
    # "LOGIN-DELAY n USER" (RFC 2449 section 6.5).
    login_delay_per_user: bool = False
    # RFC 2449 EXPIRE: days a retrieved message stays (0: deleted at QUIT);
    # None: NEVER.  With a value, QUIT's Commit names what RETR sent.
    expire: int | None = None
    # Some users may have their own: before login, CAPA says "EXPIRE n USER".
    expire_per_user: bool = False
    # Client workarounds (encoding.WORKAROUNDS) for RETR and TOP.
    workarounds: frozenset[str] = frozenset()
    channel_binding: Callable[[str], bytes | None] = field(default=lambda kind: None)
    # Whether the TLS client showed a certificate (asked when EXTERNAL is
    # configured; the handshake may finish after the session starts).
    client_certificate: Callable[[], bool] = field(default=lambda: False)
    random: Callable[[int], bytes] = field(default=os.urandom)
    hostname: str = "localhost"
    limits: Limits = field(default_factory=Limits)
    # The peer is a trusted proxy: it may name its client with XCLIENT
    # (announced as "[XCLIENT]" in the greeting, as Dovecot does).
    xclient: bool = False


# -- requests for the adapter -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Check ``credentials`` (from USER/PASS, APOP or a SASL ``mechanism``)
    and open the maildrop; then call :meth:`Session.logged_in` or
    :meth:`Session.request_failed`."""

    credentials: sasl.Credentials
    mechanism: str

    @property
    def user(self) -> str | None:
        """Who the client says it is (for logs and throttling)."""
        credentials = self.credentials
        if isinstance(credentials, (sasl.Password, sasl.Verified)):
            return credentials.authcid
        if isinstance(credentials, sasl.BearerToken):
            return credentials.user
        return credentials.authzid


@dataclass(frozen=True, slots=True)
class LookupSecret:
    """Fetch the ``kind`` of stored secret for ``user`` (SCRAM keys, a
    plaintext password for APOP and CRAM-MD5); then call
    :meth:`Session.secret_found` with it, or with None for an unknown user
    (the mechanism then fails the way a wrong password does)."""

    user: str
    kind: SecretKind


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """The core itself refused a login: a wrong SCRAM, CRAM-MD5 or APOP
    proof, or a malformed SASL message.  The adapter treats it like any
    failed login (count, log, delay), then calls
    :meth:`Session.request_failed` with the error to answer (usually
    ``AuthenticationFailed``), which returns the ``-ERR [AUTH]`` reply.
    ``user`` is whom the exchange named, if it got that far."""

    mechanism: str
    user: str | None


@dataclass(frozen=True, slots=True)
class Retrieve:
    """Stream message ``number``: send :meth:`Session.message_follows`, then
    the output of an :meth:`encoder` fed the stored bytes, then
    :meth:`Session.request_done`; or :meth:`Session.request_failed` if the
    message cannot be opened."""

    number: int
    message: MessageInfo
    body_lines: int | None = None  # TOP's line count; None for RETR
    # Client workarounds on (encoding.WORKAROUNDS); usually none.
    workarounds: frozenset[str] = frozenset()

    def encoder(self) -> MessageEncoder:
        if self.workarounds:
            return encoder_for(self.body_lines, self.stored_size() is not None,
                               self.workarounds)
        if self.stored_size() is not None:
            return VerbatimEncoder()
        return MessageEncoder(self.body_lines)

    def stored_size(self) -> int | None:
        """The stored message's length when it is known: a wire-ready RETR
        sends the stored octets unchanged, so there are ``size`` of them.
        The adapter then knows the end without a read that finds it."""
        if self.body_lines is None and self.message.wire_ready:
            return self.message.size
        return None


@dataclass(frozen=True, slots=True)
class Commit:
    """UPDATE state: apply ``deleted`` (uids) and release the maildrop; then
    :meth:`Session.committed` or :meth:`Session.request_failed`."""

    deleted: tuple[str, ...]
    # EXPIRE: the uids RETR sent in full and not deleted, for the store to
    # date (empty when EXPIRE is NEVER).  With EXPIRE 0 they are in
    # ``deleted`` instead.
    retrieved: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Send ``reply``, then start TLS.  The session has already discarded
    everything the client pipelined after STLS (RFC 2595 section 4;
    the CVE-2011-0411 class) and begun again in AUTHORIZATION."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Forward:
    """A trusted proxy named its client (XCLIENT): count and log the
    connection as that ``address`` and ``port`` from now on; then call
    :meth:`Session.forwarded`, or :meth:`Session.request_failed` (a limit
    refuses the address)."""

    address: str | None
    port: int | None


Event = (
    _NeedData | Reply | Authenticate | LookupSecret | LoginRefused | Retrieve | Commit
    | StartTLS | Forward
)

_Handler = Callable[["Session", c.Command], Event]


class Session:
    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self.state = SessionState.AUTHORIZATION
        self._buffer = bytearray()
        self._discarding = False  # inside an overlong line
        self._bad_commands = 0
        self._pending: object | None = None
        self._user: str | None = None
        self._tls = self.config.tls_active
        self._utf8 = False
        self._language = DEFAULT_LANGUAGE  # RFC 6856 LANG
        self._exchange: sasl.Mechanism | None = None  # a SASL exchange under way
        # The latest exchange begun: its mechanism (or "APOP"), and whom it
        # asked a secret for; a login the core refuses names both.
        self._mechanism = ""
        self._secret_user: str | None = None
        self._success: sasl.Outcome | None = None  # sent its final data; awaits ""
        self._success_name = ""
        # The mechanism whose Authenticate is outstanding, and then the
        # error its failure challenge waits to report (RFC 7628 3.2.2).
        self._finished: sasl.Mechanism | None = None
        self._failure: POP3Error | None = None
        self._messages = MessageList([], [], b"")
        self._deleted: set[int] = set()  # zero-based indexes
        self._retrieved: set[int] = set()  # RETR sent in full (EXPIRE)
        self._octets = 0  # total size of the messages not marked deleted

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet parsed (pipelined commands)."""
        return len(self._buffer)

    @property
    def user(self) -> str | None:
        return self._user

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def language(self) -> str:
        """The tag of the language replies are in (RFC 6856 LANG)."""
        return self._language

    def _text(self, template: str, /, **params: object) -> str:
        """A reply text from the catalogue, in the session's language."""
        return translate(template, self._language, **params)

    def error_reply(self, error: POP3Error, *, close: bool = False) -> Reply:
        """``error`` as a ``-ERR`` line in the session's language (also
        for the adapter's own: timeouts)."""
        return error_reply(error, close=close, language=self._language)

    def greeting(self) -> Reply:
        text = self._text("{implementation} ready", implementation=self.config.implementation)
        if self.config.xclient:
            text = "[XCLIENT] " + text
        if self.config.apop_timestamp and "APOP" in self.config.mechanisms:
            text += " " + self.config.apop_timestamp
        return Reply(True, text)

    def next_event(self) -> Event:
        if self._pending is not None:
            raise SessionMisuse(f"{self._pending!r} is still outstanding")
        if self.state is SessionState.CLOSED:
            return NEED_DATA
        in_exchange = (
            self._exchange is not None or self._success is not None or self._failure is not None
        )
        limit = self.config.limits.max_sasl_line if in_exchange else None
        line = self._next_line(limit)
        if line is None:
            return NEED_DATA
        if in_exchange:
            return self._sasl_response(line)
        try:
            if isinstance(line, POP3Error):
                raise line
            command = c.parse_command(line)
            handler = _HANDLERS[self.state].get(type(command))
            if handler is None:
                raise WrongState()
            event = handler(self, command)
        except ClientError as error:
            self._end_exchange()
            return self._client_error(error)
        except AuthenticationFailed:
            return self._refuse()
        return self._emit(event)

    def _refuse(self) -> LoginRefused:
        """The core refused the login under way (see :class:`LoginRefused`)."""
        self._end_exchange()
        refused = LoginRefused(self._mechanism, self._secret_user)
        self._pending = refused
        return refused

    def _emit(self, event: Event) -> Event:
        if not isinstance(event, Reply):
            self._pending = event
        elif event.close:
            self.state = SessionState.CLOSED
        return event

    def _next_line(self, limit: int | None = None) -> bytes | LineTooLong | None:
        """The next complete line, or an error for an overlong one.  Lines
        up to ``max_line`` octets; AUTH lines and SASL responses up to
        ``max_sasl_line``."""
        limits = self.config.limits
        buffer = self._buffer
        end = buffer.find(b"\n")
        if limit is None:
            limit = limits.max_sasl_line if buffer[:5].upper() == b"AUTH " else limits.max_line
        if end < 0:
            if len(buffer) >= limit:
                self._discarding = True
                buffer.clear()
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        if self._discarding or end + 1 > limit:
            self._discarding = False
            return LineTooLong()
        return line[:-1] if line.endswith(b"\r") else line

    def _client_error(self, error: ClientError) -> Reply:
        self._bad_commands += 1
        if self._bad_commands >= self.config.limits.max_bad_commands:
            self.state = SessionState.CLOSED
            message = self.error_reply(error).text
            return Reply(False, self._text("{message}; too many bad commands", message=message),
                         close=True)
        return self.error_reply(error)

    # -- outcomes of requests -------------------------------------------------

    def _finish(self, kind: type) -> object:
        pending = self._pending
        if not isinstance(pending, kind):
            raise SessionMisuse(f"no {kind.__name__} is outstanding")
        self._pending = None
        return pending

    def logged_in(self, messages: Sequence[MessageInfo], login_delay: int | None = None,
                  expire: int | None = None) -> Reply:
        """The login succeeded and its maildrop holds ``messages``.
        ``login_delay`` and ``expire``: the user's own LOGIN-DELAY and
        EXPIRE, which CAPA shows from now on (RFC 2449 section 6.5, 6.7)."""
        self._finish(Authenticate)
        self._finished = None
        if login_delay is not None:
            self.config = replace(self.config, login_delay=login_delay)
        if expire is not None:
            self.config = replace(self.config, expire=expire)
        self._messages = MessageList.of(messages)
        self._deleted = set()
        self._retrieved = set()
        self._octets = self._messages.total
        self.state = SessionState.TRANSACTION
        count, octets = self._totals()
        return Reply(True, self._text("maildrop has {count} messages ({octets} octets)",
                                      count=count, octets=octets))

    def message_follows(self) -> Reply:
        pending = self._pending
        if not isinstance(pending, Retrieve):
            raise SessionMisuse("no Retrieve is outstanding")
        if pending.body_lines is not None:
            return Reply(True, self._text("top of message follows"))
        return Reply(True, self._text("{size} octets", size=pending.message.size))

    def request_done(self) -> None:
        retrieve = self._finish(Retrieve)
        assert isinstance(retrieve, Retrieve)
        if retrieve.body_lines is None and self.config.expire is not None:
            self._retrieved.add(retrieve.number - 1)

    def forwarded(self) -> Reply:
        """The adapter took the address a :class:`Forward` named; a login
        begun before it starts over."""
        self._finish(Forward)
        self._user = None
        return Reply(True)

    def committed(self) -> Reply:
        self._finish(Commit)
        self.state = SessionState.CLOSED
        left = len(self._messages) - len(self._deleted)
        return Reply(
            True,
            self._text("{implementation} signing off ({left} messages left)",
                       implementation=self.config.implementation, left=left),
            close=True,
        )

    def secret_found(self, secret: object | None) -> Event:
        """The secret a :class:`LookupSecret` asked for (None: no such
        user).  Returns the next event: a challenge, or an Authenticate."""
        self._finish(LookupSecret)
        assert self._exchange is not None
        try:
            return self._step(self._exchange.secret(secret))
        except AuthenticationFailed:
            return self._refuse()

    def request_failed(self, error: POP3Error, close: bool = False) -> Reply:
        """Any outstanding request failed with ``error``; ``close``: hang
        up after the reply (the adapter's throttle dropping a client)."""
        pending = self._pending
        if pending is None:
            raise SessionMisuse("no request is outstanding")
        self._pending = None
        if close:
            self._user = None
            self._end_exchange()
            self.state = SessionState.CLOSED
            return self.error_reply(error, close=True)
        if isinstance(pending, LoginRefused):
            self._user = None
            return self.error_reply(error)
        if isinstance(pending, (Authenticate, LookupSecret)):
            mechanism = self._finished
            self._user = None
            self._end_exchange()
            if mechanism is not None and isinstance(error, AuthenticationFailed):
                data = mechanism.failure_challenge(error)
                if data is not None:
                    # One last challenge; whatever the client answers
                    # (RFC 7628: %x01) gets the error, in _sasl_response.
                    self._failure = error
                    return Reply(True, base64.b64encode(data).decode("ascii"), continuation=True)
        if isinstance(pending, Commit):
            # RFC 1939 section 6: the connection closes even when UPDATE
            # failed; the store applied all deletions or none.
            self.state = SessionState.CLOSED
            return self.error_reply(error, close=True)
        return self.error_reply(error)

    def connection_lost(self) -> None:
        self.state = SessionState.CLOSED
        self._pending = None

    # -- helpers --------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        return len(self._messages) - len(self._deleted), self._octets

    def _message(self, number: int) -> MessageInfo:
        index = number - 1
        if not 0 <= index < len(self._messages):
            raise NoSuchMessage()
        if index in self._deleted:
            raise MessageDeleted()
        return self._messages[index]

    def capabilities(self) -> list[bytes]:
        """CAPA's lines.  RFC 2449 section 5: what AUTHORIZATION offered
        is announced after login too (USER, SASL, UTF8, LANG), so a client that
        asks again sees the same server.  STLS is the exception RFC 2595
        section 4 makes (it is only for AUTHORIZATION), and LOGIN-DELAY
        drops its ``USER`` tag once the user's own value is known (RFC
        2449 section 6.5)."""
        caps = [b"TOP", b"UIDL"]
        authorization = self.state is SessionState.AUTHORIZATION
        if self.config.user_pass and self._plaintext_auth_allowed():
            caps.append(b"USER")
        mechanisms = self.sasl_mechanisms()
        if mechanisms:
            caps.append(b"SASL " + " ".join(mechanisms).encode("ascii"))
        caps += [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE"]
        expire = self.config.expire
        caps.append(b"EXPIRE " + (b"NEVER" if expire is None else b"%d" % expire)
                    + (b" USER" if authorization and self.config.expire_per_user else b""))
        if self.config.login_delay is not None:
            per_user = b" USER" if authorization and self.config.login_delay_per_user else b""
            caps.append(b"LOGIN-DELAY %d%s" % (self.config.login_delay, per_user))
        caps.append(b"UTF8 USER")
        caps.append(b"LANG")
        if self._stls_offered():
            caps.append(b"STLS")
        caps.append(b"IMPLEMENTATION " + self.config.implementation.encode("utf-8"))
        return caps

    def sasl_mechanisms(self) -> list[str]:
        """The SASL mechanisms this connection may use now, as CAPA and a
        bare AUTH list them."""
        offered = []
        for name in self.config.mechanisms:
            mechanism = sasl.MECHANISMS.get(name)
            if mechanism is None or not mechanism.sasl:
                continue
            if mechanism.plaintext and not self._plaintext_auth_allowed():
                continue
            if mechanism.requires_tls and not self._tls:
                continue
            if mechanism.requires_client_certificate and not self.config.client_certificate():
                continue
            offered.append(name)
        return offered

    def _sasl_context(self) -> sasl.SASLContext:
        config = self.config
        return sasl.SASLContext(
            tls_active=self._tls,
            apop_timestamp=config.apop_timestamp,
            mechanisms=tuple(self.sasl_mechanisms()),
            channel_binding=config.channel_binding,
            random=config.random,
            hostname=config.hostname,
        )

    def _plaintext_auth_allowed(self) -> bool:
        return self._tls or self.config.plaintext_auth_allowed

    def _stls_offered(self) -> bool:
        return (
            self.state is SessionState.AUTHORIZATION
            and self.config.stls_available
            and not self._tls
        )

    # -- command handlers ---------------------------------------------------

    def _capa(self, command: c.Command) -> Reply:
        return Reply(True, self._text("capability list follows"), lines=self.capabilities())

    def _noop(self, command: c.Command) -> Reply:
        return Reply(True)

    def _quit_unauthenticated(self, command: c.Command) -> Reply:
        return Reply(
            True,
            self._text("{implementation} signing off", implementation=self.config.implementation),
            close=True,
        )

    def _user_command(self, command: c.Command) -> Reply:
        assert isinstance(command, c.User)
        if not self.config.user_pass:
            raise BadArguments("USER/PASS is not enabled, use AUTH")
        if not self._plaintext_auth_allowed():
            raise TLSRequired()
        self._user = self._normalize(command.name)
        return Reply(True, self._text("send your password"))

    def _pass_command(self, command: c.Command) -> Event:
        assert isinstance(command, c.Pass)
        if not self._plaintext_auth_allowed():
            raise TLSRequired()
        if self._user is None:
            raise BadArguments("send USER first")
        password = self._normalize_password(command.password)
        return Authenticate(sasl.Password(self._user, password), "USER")

    def _normalize(self, user: str) -> str:
        return normalize_user(user) if self._utf8 else user

    def _normalize_password(self, password: bytes) -> bytes:
        return normalize_password(password) if self._utf8 else password

    def _utf8_command(self, command: c.Command) -> Reply:
        # RFC 6856: UTF-8 user names and passwords from now on, normalized
        # (RFC 8265); mail is passed through as stored either way.
        self._utf8 = True
        return Reply(True, self._text("UTF8 enabled"))

    def _lang(self, command: c.Command) -> Reply:
        """RFC 6856 LANG: list the languages, or switch to one (the +OK
        already in it, after its tag); an unknown one changes nothing."""
        assert isinstance(command, c.Lang)
        if command.language_range is None:
            lines = [f"{language.tag} {language.description}".encode()
                     for language in LANGUAGES.values()]
            return Reply(True, self._text("language listing follows"), lines=lines)
        tag = match_language(command.language_range)
        if tag is None:
            raise BadArguments("unknown language {range}", range=command.language_range)
        self._language = tag
        return Reply(True, self._text("{tag} language changed", tag=tag))

    def _auth(self, command: c.Command) -> Event:
        assert isinstance(command, c.Auth)
        offered = self.sasl_mechanisms()
        if command.mechanism is None:
            return Reply(True, self._text("SASL mechanisms follow"),
                         lines=[m.encode() for m in offered])
        if command.mechanism not in offered:
            mechanism = sasl.MECHANISMS.get(command.mechanism)
            if (
                mechanism is not None
                and mechanism.plaintext
                and command.mechanism in self.config.mechanisms
            ):
                raise TLSRequired()
            raise BadArguments("unsupported SASL mechanism")
        return self._begin(command.mechanism, command.initial_response)

    def _apop(self, command: c.Command) -> Event:
        assert isinstance(command, c.Apop)
        if "APOP" not in self.config.mechanisms or not self.config.apop_timestamp:
            raise UnknownCommand("APOP is not enabled")
        name = self._normalize(command.name)
        return self._begin("APOP", f"{name} {command.digest}".encode())

    # -- SASL exchanges --------------------------------------------------------

    def _begin(self, name: str, initial_response: bytes | None) -> Event:
        self._mechanism, self._secret_user = name, None
        self._exchange = sasl.MECHANISMS[name](self._sasl_context())
        return self._step(self._exchange.start(initial_response))

    def _step(self, step: sasl.Step) -> Event:
        """Turn a mechanism's step into the session's next event."""
        if isinstance(step, sasl.Challenge):
            return Reply(True, base64.b64encode(step.data).decode("ascii"), continuation=True)
        if isinstance(step, sasl.NeedSecret):
            self._secret_user = step.user
            return self._emit(LookupSecret(step.user, step.kind))
        assert self._exchange is not None
        name = self._exchange.name
        if step.final is not None:
            self._success, self._success_name = step, name
            self._exchange = None
            return Reply(True, base64.b64encode(step.final).decode("ascii"), continuation=True)
        mechanism = self._exchange
        self._end_exchange()
        self._finished = mechanism
        return self._emit(Authenticate(self._normalized(step.credentials), name))

    def _normalized(self, credentials: sasl.Credentials) -> sasl.Credentials:
        if isinstance(credentials, sasl.Password):
            return sasl.Password(
                normalize_user(credentials.authcid),
                normalize_password(credentials.password),
                normalize_user(credentials.authzid) if credentials.authzid else None,
            )
        return credentials

    def _sasl_response(self, line: bytes | LineTooLong) -> Event:
        """A client line during a SASL exchange (RFC 5034 section 4)."""
        try:
            if self._failure is not None:
                error, self._failure = self._failure, None
                return self.error_reply(error)
            if isinstance(line, POP3Error):
                raise sasl.SASLFailed()
            if line == b"*":
                self._end_exchange()
                return Reply(False, self._text("authentication cancelled"))
            response = c.decode_base64(line) if line else b""
            if self._success is not None:
                if response:
                    raise sasl.SASLFailed()
                outcome, self._success = self._success, None
                return self._emit(Authenticate(outcome.credentials, self._success_name))
            assert self._exchange is not None
            return self._step(self._exchange.respond(response))
        except BadArguments as error:
            self._end_exchange()
            return self._client_error(error)
        except AuthenticationFailed:
            return self._refuse()

    def _end_exchange(self) -> None:
        self._exchange = None
        self._success = None
        self._finished = None

    def _stls(self, command: c.Command) -> Event:
        if self._tls:
            raise TLSNotAvailable("TLS is already active")
        if self.state is not SessionState.AUTHORIZATION:
            raise TLSNotAvailable("STLS is only allowed before authentication")
        if not self._stls_offered():
            raise TLSNotAvailable()
        # Whatever the client pipelined behind STLS was sent in plaintext:
        # it must not run inside the TLS session.
        self._buffer.clear()
        self._discarding = False
        self._tls = True
        self._user = None
        self.state = SessionState.AUTHORIZATION
        return StartTLS(Reply(True, self._text("begin TLS negotiation")))

    def tls_started(self) -> None:
        """The TLS handshake is under way; take commands again."""
        self._finish(StartTLS)

    def _stat(self, command: c.Command) -> Reply:
        count, octets = self._totals()
        return scan_listing(count, octets)

    def _list(self, command: c.Command) -> Reply:
        assert isinstance(command, c.List)
        if command.number is not None:
            return scan_listing(command.number, self._message(command.number).size)
        count, octets = self._totals()
        body = numbered_body(self._messages.sizes, self._deleted)
        text = self._text("{count} messages ({octets} octets)", count=count, octets=octets)
        return Reply(True, text, body=body)

    def _uidl(self, command: c.Command) -> Reply:
        assert isinstance(command, c.Uidl)
        if command.number is not None:
            return scan_listing(command.number, self._message(command.number).uid)
        body = numbered_body(self._messages.uids, self._deleted)
        return Reply(True, self._text("unique-id listing follows"), body=body)

    def _retr(self, command: c.Command) -> Event:
        assert isinstance(command, c.Retr)
        return Retrieve(command.number, self._message(command.number),
                        workarounds=self.config.workarounds)

    def _top(self, command: c.Command) -> Event:
        assert isinstance(command, c.Top)
        message = self._message(command.number)
        return Retrieve(command.number, message, command.lines, self.config.workarounds)

    def _dele(self, command: c.Command) -> Reply:
        assert isinstance(command, c.Dele)
        message = self._message(command.number)
        self._deleted.add(command.number - 1)
        self._octets -= message.size
        return Reply(True, self._text("message {number} deleted", number=command.number))

    def _rset(self, command: c.Command) -> Reply:
        self._deleted = set()
        self._octets = self._messages.total
        count, octets = self._totals()
        return Reply(True, self._text("maildrop has {count} messages ({octets} octets)",
                                      count=count, octets=octets))

    def _xclient(self, command: c.Command) -> Event:
        assert isinstance(command, c.Xclient)
        if not self.config.xclient:
            raise BadArguments("XCLIENT is only for proxies on trusted networks")
        if self._exchange is not None:
            raise WrongState()
        return Forward(command.address, command.port)

    def _quit_transaction(self, command: c.Command) -> Event:
        self.state = SessionState.UPDATE
        uids = self._messages.uids
        retrieved = self._retrieved.difference(self._deleted)
        if self.config.expire == 0:  # EXPIRE 0: retrieved mail goes at QUIT
            return Commit(tuple(uids[i] for i in sorted(self._deleted | retrieved)))
        deleted = tuple(uids[i] for i in sorted(self._deleted))
        return Commit(deleted, tuple(uids[i] for i in sorted(retrieved)))


_HANDLERS: dict[SessionState, dict[type[c.Command], _Handler]] = {
    SessionState.AUTHORIZATION: {
        c.Capa: Session._capa,
        c.User: Session._user_command,
        c.Pass: Session._pass_command,
        c.Stls: Session._stls,
        c.Quit: Session._quit_unauthenticated,
        c.Auth: Session._auth,
        c.Apop: Session._apop,
        c.Utf8: Session._utf8_command,
        c.Lang: Session._lang,
        c.Xclient: Session._xclient,
    },
    SessionState.TRANSACTION: {
        c.Capa: Session._capa,
        c.Stat: Session._stat,
        c.List: Session._list,
        c.Uidl: Session._uidl,
        c.Retr: Session._retr,
        c.Top: Session._top,
        c.Dele: Session._dele,
        c.Rset: Session._rset,
        c.Noop: Session._noop,
        c.Lang: Session._lang,
        c.Quit: Session._quit_transaction,
        c.Stls: Session._stls,
    },
    SessionState.UPDATE: {},
    SessionState.CLOSED: {},
}

__all__ = [
    "NEED_DATA",
    "Authenticate",
    "Commit",
    "Forward",
    "Limits",
    "LoginRefused",
    "LookupSecret",
    "Retrieve",
    "Session",
    "SessionConfig",
    "SessionMisuse",
    "SessionState",
    "StartTLS",
]
