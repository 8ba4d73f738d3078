"""The POP3 session state machine, without I/O (in the manner of h11).

The adapter feeds received bytes with :meth:`Session.receive_data` and
asks :meth:`Session.next_event` what to do next.  The answer is one of:

- ``NEED_DATA``: read more from the client;
- a :class:`Reply`: send ``reply.encode()`` (and close if ``reply.close``);
- a request that needs a backend (:class:`Authenticate`, :class:`Retrieve`,
  :class:`Commit`, :class:`StartTLS`): do the work, then report the outcome
  with the matching ``Session`` method, which returns the reply to send.

While a request is outstanding the session takes no further command, which
keeps pipelined replies in order (RFC 2449 section 6.6).  All state changes
happen here; the table ``_HANDLERS`` says which commands each state takes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from popframe.errors import (
    BadArguments,
    ClientError,
    LineTooLong,
    MessageDeleted,
    NoSuchMessage,
    POP3Error,
    TLSNotAvailable,
    TLSRequired,
    WrongState,
)
from popframe.interfaces import MessageInfo
from popframe.protocol import commands as c
from popframe.protocol.encoding import MessageEncoder
from popframe.protocol.replies import Reply, error_reply


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
    limits: Limits = field(default_factory=Limits)


# -- requests for the adapter -----------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Authenticate:
    """Check ``user`` / ``password`` and open the maildrop; then call
    :meth:`Session.logged_in` or :meth:`Session.request_failed`."""

    user: str
    password: bytes

    def __repr__(self) -> str:
        return f"Authenticate(user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class Retrieve:
    """Stream message ``number``: send :meth:`Session.message_follows`, then
    the output of an :meth:`encoder` fed the stored bytes, then
    :meth:`Session.request_done`; or :meth:`Session.request_failed` if the
    message cannot be opened."""

    number: int
    message: MessageInfo
    body_lines: int | None = None  # TOP's line count; None for RETR

    def encoder(self) -> MessageEncoder:
        return MessageEncoder(self.body_lines)


@dataclass(frozen=True, slots=True)
class Commit:
    """UPDATE state: apply ``deleted`` (uids) and release the maildrop; then
    :meth:`Session.committed` or :meth:`Session.request_failed`."""

    deleted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Send ``reply``, then start TLS.  The session has already discarded
    everything the client pipelined after STLS (RFC 2595 section 4;
    the CVE-2011-0411 class) and begun again in AUTHORIZATION."""

    reply: Reply


Event = _NeedData | Reply | Authenticate | Retrieve | Commit | StartTLS

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
        self._messages: list[MessageInfo] = []
        self._deleted: set[int] = set()  # zero-based indexes
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

    def greeting(self) -> Reply:
        return Reply(True, f"{self.config.implementation} ready")

    def next_event(self) -> Event:
        if self._pending is not None:
            raise SessionMisuse(f"{self._pending!r} is still outstanding")
        if self.state is SessionState.CLOSED:
            return NEED_DATA
        line = self._next_line()
        if line is None:
            return NEED_DATA
        try:
            if isinstance(line, POP3Error):
                raise line
            command = c.parse_command(line)
            handler = _HANDLERS[self.state].get(type(command))
            if handler is None:
                raise WrongState()
            event = handler(self, command)
        except ClientError as error:
            return self._client_error(error)
        if not isinstance(event, Reply):
            self._pending = event
        elif event.close:
            self.state = SessionState.CLOSED
        return event

    def _next_line(self) -> bytes | LineTooLong | None:
        """The next complete command line, or an error for an overlong one."""
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) >= self.config.limits.max_line:
                self._discarding = True
                buffer.clear()
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        if self._discarding or end + 1 > self.config.limits.max_line:
            self._discarding = False
            return LineTooLong()
        return line[:-1] if line.endswith(b"\r") else line

    def _client_error(self, error: ClientError) -> Reply:
        self._bad_commands += 1
        if self._bad_commands >= self.config.limits.max_bad_commands:
            self.state = SessionState.CLOSED
            return Reply(False, f"{error.message}; too many bad commands", close=True)
        return error_reply(error)

    # -- outcomes of requests -------------------------------------------------

    def _finish(self, kind: type) -> object:
        pending = self._pending
        if not isinstance(pending, kind):
            raise SessionMisuse(f"no {kind.__name__} is outstanding")
        self._pending = None
        return pending

    def logged_in(self, messages: Sequence[MessageInfo]) -> Reply:
        self._finish(Authenticate)
        self._messages = list(messages)
        self._deleted = set()
        self._octets = sum(m.size for m in self._messages)
        self.state = SessionState.TRANSACTION
        count, octets = self._totals()
        return Reply(True, f"maildrop has {count} messages ({octets} octets)")

    def message_follows(self) -> Reply:
        pending = self._pending
        if not isinstance(pending, Retrieve):
            raise SessionMisuse("no Retrieve is outstanding")
        if pending.body_lines is not None:
            return Reply(True, "top of message follows")
        return Reply(True, f"{pending.message.size} octets")

    def request_done(self) -> None:
        self._finish(Retrieve)

    def committed(self) -> Reply:
        self._finish(Commit)
        self.state = SessionState.CLOSED
        left = len(self._messages) - len(self._deleted)
        return Reply(
            True, f"{self.config.implementation} signing off ({left} messages left)",
            close=True,
        )

    def request_failed(self, error: POP3Error) -> Reply:
        """Any outstanding request failed with ``error``."""
        pending = self._pending
        if pending is None:
            raise SessionMisuse("no request is outstanding")
        self._pending = None
        if isinstance(pending, Authenticate):
            self._user = None
        if isinstance(pending, Commit):
            # RFC 1939 section 6: the connection closes even when UPDATE
            # failed; the store applied all deletions or none.
            self.state = SessionState.CLOSED
            return error_reply(error, close=True)
        return error_reply(error)

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
        caps = [b"TOP", b"UIDL"]
        if self.state is SessionState.AUTHORIZATION and self._plaintext_auth_allowed():
            caps.append(b"USER")
        caps += [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE", b"EXPIRE NEVER"]
        if self._stls_offered():
            caps.append(b"STLS")
        caps.append(b"IMPLEMENTATION " + self.config.implementation.encode("utf-8"))
        return caps

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
        return Reply(True, "capability list follows", lines=self.capabilities())

    def _noop(self, command: c.Command) -> Reply:
        return Reply(True)

    def _quit_unauthenticated(self, command: c.Command) -> Reply:
        return Reply(True, f"{self.config.implementation} signing off", close=True)

    def _user_command(self, command: c.Command) -> Reply:
        assert isinstance(command, c.User)
        if not self._plaintext_auth_allowed():
            raise TLSRequired()
        self._user = command.name
        return Reply(True, "send your password")

    def _pass_command(self, command: c.Command) -> Event:
        assert isinstance(command, c.Pass)
        if not self._plaintext_auth_allowed():
            raise TLSRequired()
        if self._user is None:
            raise BadArguments("send USER first")
        return Authenticate(self._user, command.password)

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
        return StartTLS(Reply(True, "begin TLS negotiation"))

    def tls_started(self) -> None:
        """The TLS handshake is under way; take commands again."""
        self._finish(StartTLS)

    def _stat(self, command: c.Command) -> Reply:
        count, octets = self._totals()
        return Reply(True, f"{count} {octets}")

    def _list(self, command: c.Command) -> Reply:
        assert isinstance(command, c.List)
        if command.number is not None:
            return Reply(True, f"{command.number} {self._message(command.number).size}")
        count, octets = self._totals()
        deleted = self._deleted
        lines = [
            b"%d %d" % (i + 1, m.size)
            for i, m in enumerate(self._messages)
            if i not in deleted
        ]
        return Reply(True, f"{count} messages ({octets} octets)", lines=lines)

    def _uidl(self, command: c.Command) -> Reply:
        assert isinstance(command, c.Uidl)
        if command.number is not None:
            return Reply(True, f"{command.number} {self._message(command.number).uid}")
        deleted = self._deleted
        lines = [
            b"%d %s" % (i + 1, m.uid.encode("ascii"))
            for i, m in enumerate(self._messages)
            if i not in deleted
        ]
        return Reply(True, "unique-id listing follows", lines=lines)

    def _retr(self, command: c.Command) -> Event:
        assert isinstance(command, c.Retr)
        return Retrieve(command.number, self._message(command.number))

    def _top(self, command: c.Command) -> Event:
        assert isinstance(command, c.Top)
        message = self._message(command.number)
        return Retrieve(command.number, message, command.lines)

    def _dele(self, command: c.Command) -> Reply:
        assert isinstance(command, c.Dele)
        message = self._message(command.number)
        self._deleted.add(command.number - 1)
        self._octets -= message.size
        return Reply(True, f"message {command.number} deleted")

    def _rset(self, command: c.Command) -> Reply:
        self._deleted = set()
        self._octets = sum(m.size for m in self._messages)
        count, octets = self._totals()
        return Reply(True, f"maildrop has {count} messages ({octets} octets)")

    def _quit_transaction(self, command: c.Command) -> Event:
        self.state = SessionState.UPDATE
        deleted = tuple(self._messages[i].uid for i in sorted(self._deleted))
        return Commit(deleted)


_HANDLERS: dict[SessionState, dict[type[c.Command], _Handler]] = {
    SessionState.AUTHORIZATION: {
        c.Capa: Session._capa,
        c.User: Session._user_command,
        c.Pass: Session._pass_command,
        c.Stls: Session._stls,
        c.Quit: Session._quit_unauthenticated,
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
    "Limits",
    "Retrieve",
    "Session",
    "SessionConfig",
    "SessionMisuse",
    "SessionState",
    "StartTLS",
]
