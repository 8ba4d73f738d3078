"""What the server adapter tells observers about its sessions: the hook
behind the metrics and the logout line (``popframe.ops``), and for anyone
who wants an audit trail of their own, without the protocol code knowing
about Prometheus, log formats or HTTP.

The adapter keeps one :class:`SessionRecord` per connection, updating its
plain fields as the session goes (no call per change), and calls the
observer at a few points: opened, logged in or not, a message sent,
deletions committed, closed.  Every call happens on the reactor thread,
while a client waits: an observer must be quick, must not block, and must
not raise (:class:`~popframe.ops.observers.SessionObservers` logs and
swallows what one raises anyway).  :class:`SessionObserver` is the no-op
base: subclass it and override what you need.
"""

from __future__ import annotations

from zope.interface import Interface, implementer

__all__ = [
    "BackendRole",
    "EndReason",
    "ISessionObserver",
    "LimitKind",
    "LoginResult",
    "SessionObserver",
    "SessionRecord",
]


class LoginResult:
    """How a login attempt ended (``ISessionObserver.login_finished``)."""

    OK = "ok"
    #: Wrong credentials (or a login the core refused: a wrong SCRAM proof).
    FAILED = "failed"
    #: The client's address reached the throttle's failure limit: refused unchecked.
    BLOCKED = "blocked"
    #: The maildrop is locked by another session ([IN-USE]).
    IN_USE = "in-use"
    #: RFC 2449 LOGIN-DELAY not yet expired.
    DELAYED = "delayed"
    #: Over ``--max-sessions-per-user``.
    LIMIT = "limit"
    #: A backend failed ([SYS/TEMP], [SYS/PERM]).
    ERROR = "error"


class EndReason:
    """How a session ended (``SessionRecord.end``)."""

    #: The client sent QUIT (and its deletions, if any, were committed).
    QUIT = "QUIT"
    #: Idle for ``--idle-timeout``.
    TIMEOUT = "timeout"
    #: Not logged in within ``--preauth-timeout``.
    LOGIN_TIMEOUT = "login-timeout"
    #: The client went away without QUIT.
    DROPPED = "dropped"
    #: The server was shutting down.
    SHUTDOWN = "shutdown"
    #: Too many failed logins (the throttle's drop).
    TOO_MANY_FAILURES = "too-many-failures"
    #: Too many bad commands.
    BAD_COMMANDS = "bad-commands"
    #: Refused by a limit after it began (a forwarded address over its
    #: limit, a user over ``--max-sessions-per-user``).
    LIMIT = "limit"
    #: The server hung up after a failure (a message could not be read,
    #: the commit failed).
    ERROR = "error"


class LimitKind:
    """Which limit refused a connection (``ISessionObserver.connection_refused``)."""

    MAX_CONNECTIONS = "max-connections"
    PER_ADDRESS = "per-address"
    PER_USER = "per-user"


class BackendRole:
    """Which kind of backend failed (``ISessionObserver.backend_failed``)."""

    AUTH = "auth"  # a checker, or a source of user settings
    STORE = "store"  # opening, reading or committing a maildrop
    THROTTLE = "throttle"  # the throttle store (failing open)


class SessionRecord:
    """One connection, as the adapter fills it in.  ``tls`` is None on a
    plain connection, else the TLS version once the handshake is known
    (``"TLSv1.3"``), ``"TLS"`` before.  ``user`` and ``mechanism`` are set
    by a successful login; the counts by RETR, TOP and a committed QUIT;
    ``end`` (an :class:`EndReason`) and ``ended`` when it is over."""

    __slots__ = (
        "deleted",
        "end",
        "ended",
        "listener",
        "mechanism",
        "peer",
        "retrieved",
        "retrieved_octets",
        "started",
        "tls",
        "top",
        "top_octets",
        "user",
    )

    def __init__(self, listener: str, peer: str, started: float, tls: str | None = None) -> None:
        self.listener = listener
        self.peer = peer  # "host:port" of the client (as forwarded by a trusted proxy)
        self.started = started
        self.tls = tls
        self.user: str | None = None
        self.mechanism: str | None = None
        self.retrieved = 0
        self.retrieved_octets = 0
        self.top = 0
        self.top_octets = 0
        self.deleted = 0
        self.end: str | None = None
        self.ended: float | None = None

    @property
    def duration(self) -> float:
        """Seconds from connect to the end (or to the last update)."""
        return max(0.0, (self.ended if self.ended is not None else self.started) - self.started)

    def __repr__(self) -> str:
        return (f"SessionRecord(listener={self.listener!r}, peer={self.peer!r}, "
                f"user={self.user!r}, tls={self.tls!r}, end={self.end!r})")


class ISessionObserver(Interface):
    """Told what sessions do; see the module docstring for the rules."""

    def session_opened(record: SessionRecord) -> None:
        """A connection was accepted (not refused by a limit)."""

    def tls_started(record: SessionRecord) -> None:
        """STLS succeeded; ``record.tls`` is set."""

    def login_finished(record: SessionRecord, mechanism: str, result: str,
                       seconds: float) -> None:
        """A login attempt ended with ``result`` (a :class:`LoginResult`)
        ``seconds`` after the client finished sending it (a failure's
        throttle delay included)."""

    def login_throttled(record: SessionRecord, delay: float, dropped: str | None) -> None:
        """A failed login is answered after ``delay`` seconds; ``dropped``:
        the connection is then closed because of too many failures on it
        (``"connection"``) or from its address (``"address"``)."""

    def message_sent(record: SessionRecord, command: str, octets: int, seconds: float) -> None:
        """A RETR or TOP (``command``) finished: ``octets`` sent,
        ``seconds`` from the request to the last octet handed to the
        transport.  ``record``'s counts already include it."""

    def deletions_committed(record: SessionRecord, count: int) -> None:
        """QUIT applied ``count`` deletions."""

    def backend_failed(role: str, kind: str) -> None:
        """A backend (a :class:`BackendRole`) failed; ``kind`` is
        ``"timeout"`` or ``"error"``.  The client got [SYS/TEMP]."""

    def connection_refused(limit: str, peer: str) -> None:
        """A connection or login went over ``limit`` (a :class:`LimitKind`)
        and was answered ``-ERR [SYS/TEMP]`` and closed."""

    def session_closed(record: SessionRecord) -> None:
        """The connection is gone; ``record.end`` and ``record.ended`` are set."""


@implementer(ISessionObserver)
class SessionObserver:
    """Does nothing: the default, and the base class to override from."""

    def session_opened(self, record: SessionRecord) -> None:
        pass

    def tls_started(self, record: SessionRecord) -> None:
        pass

    def login_finished(self, record: SessionRecord, mechanism: str, result: str,
                       seconds: float) -> None:
        pass

    def login_throttled(self, record: SessionRecord, delay: float, dropped: str | None) -> None:
        pass

    def message_sent(self, record: SessionRecord, command: str, octets: int,
                     seconds: float) -> None:
        pass

    def deletions_committed(self, record: SessionRecord, count: int) -> None:
        pass

    def backend_failed(self, role: str, kind: str) -> None:
        pass

    def connection_refused(self, limit: str, peer: str) -> None:
        pass

    def session_closed(self, record: SessionRecord) -> None:
        pass
