"""The Twisted adapter: sockets, TLS, timeouts and back-pressure around the
sans-IO core in :mod:`popframe.protocol`.

The protocol is the transport's only producer.  One loop (``_pump``) either
streams the current message or takes the next event from the session, and
stops whenever the transport's write buffer is full (``pauseProducing``), a
backend call is outstanding, or the connection is closing.  So replies stay
in order, a client that stops reading makes nothing grow, and a 1 GB RETR
goes out in ``chunk_size`` pieces.  Logins go through
:mod:`popframe.server.login`; the protocol only asks and answers.

Each connection keeps a :class:`~popframe.interfaces.observers.SessionRecord`
(who, how, how much, how it ended) and tells the factory's observer about
it at a few points (:mod:`popframe.interfaces.observers`); the limits
(``--max-connections``, per address, per user) refuse with
``-ERR [SYS/TEMP]`` and close.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IConsumer,
    IPushProducer,
    ISSLTransport,
    ITLSTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.auth.credentials import lookup_secret
from popframe.errors import POP3Error, TemporaryFailure
from popframe.interfaces import IExpiringMaildrop, IMaildrop, IMessageBody
from popframe.interfaces.observers import BackendRole, EndReason, LimitKind, SessionRecord
from popframe.protocol import (
    NEED_DATA,
    Authenticate,
    Commit,
    Forward,
    LoginRefused,
    LookupSecret,
    Reply,
    Retrieve,
    Session,
    SessionConfig,
    StartTLS,
    error_reply,
)
from popframe.protocol.encoding import MessageEncoder
from popframe.protocol.session import SessionState
from popframe.server.body import AsyncBody, Chunk, FileBody, as_body
from popframe.server.failures import as_pop3_error, backend_failure_kind
from popframe.server.login import (
    ConnectionLogins,
    LoggedIn,
    TooManyConnections,
    TooManySessions,
)
from popframe.server.peers import behind_proxy, is_loopback, peer_text
from popframe.throttle import TooManyFailures, address_key
from popframe.twisted_internals import fired, plain_tcp, send_now

if TYPE_CHECKING:
    from OpenSSL import SSL

    from popframe.server.factory import POP3Factory

    class _ServerTransport(ITLSTransport, IConsumer, IPushProducer):
        """What the protocol uses of its transport (a listener's TCP or
        UNIX connection, or a TLS or PROXY wrapper around one): writes,
        STLS, a producer, and reads paused when too much is pipelined."""

__all__ = ["POP3ServerProtocol"]

log = Logger(namespace="popframe.server")

#: Seconds a client gets to read a timeout's -ERR before it is cut off.
HANG_UP_GRACE = 5.0

#: The refusals sent before any session (so in ``i-default``, RFC 6856).
_SERVER_FULL = error_reply(
    TemporaryFailure("too many connections to this server, try again later")).encode()
_ADDRESS_FULL = error_reply(TooManyConnections()).encode()
_IDLE = POP3Error("disconnected for inactivity")
_LOGIN_TIMEOUT = TemporaryFailure("login timed out")


@implementer(IPushProducer)
class POP3ServerProtocol(Protocol):
    """One POP3 connection: feeds the session, runs what it asks for."""

    factory: POP3Factory
    transport: _ServerTransport
    #: The listener's name (``tcp:110``), set by the listener's factory
    #: (``popframe.ops.connections.TrackingFactory``).
    listener = "-"

    def __init__(self, factory: POP3Factory) -> None:
        self.factory = factory
        self.portal = factory.portal
        self.config = factory.config
        self.clock = factory.clock
        self.observer = factory.observer
        self.record: SessionRecord | None = None
        self.session: Session | None = None
        self._logins: ConnectionLogins | None = None
        self._maildrop: IMaildrop | None = None
        self._logout: Callable[[], None] | None = None
        self._message: tuple[FileBody | AsyncBody, MessageEncoder] | None = None
        self._message_head = b""  # RETR's +OK line, sent with the first chunk
        self._tcp: Any = None  # the plain TCP transport, for _write's direct path
        self._waiting = False  # a backend call is outstanding
        self._write_paused = False  # the transport's buffer is full
        self._read_paused = False  # we stopped reading: too much pipelined
        self._pumping = False
        # list-progress: what is left of a long reply, sent a chunk per turn.
        self._rest: memoryview | None = None
        self._closed = False
        self._timeout: Any = None  # the idle timer
        self._active_at = 0.0  # when the client last did something
        self._login_deadline: Any = None
        self._address: str | None = None  # counted in the factory's per-address table
        self._counted = False  # counted in the factory's connections (--max-connections)
        self._proxied = False  # behind haproxy:, the client's address not yet known
        # RETR/TOP under way: its command, when it began, octets sent so far.
        self._sending: tuple[str, float] = ("RETR", 0.0)
        self._sent = 0

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        peer = transport.getPeer()
        tls_active = ISSLTransport.providedBy(transport)
        record = self.record = SessionRecord(self.listener, _address_text(peer),
                                             self.clock.seconds(), "TLS" if tls_active else None)
        self._proxied = behind_proxy(transport)
        if not self._admit(peer, record):
            return
        factory = self.factory
        offered = factory.mechanisms
        random = os.urandom
        login_delay = self.config.login_delay
        self.session = Session(
            SessionConfig(
                implementation=self.config.implementation,
                workarounds=self.config.workarounds,
                stls_available=self.config.tls is not None,
                tls_active=tls_active,
                plaintext_auth_allowed=self.config.allow_plaintext_auth
                or (is_loopback(peer) and not self._proxied),
                mechanisms=tuple(m for m in offered if m != "USER"),
                user_pass="USER" in offered,
                apop_timestamp=(f"<{os.getpid()}.{random(8).hex()}@{self.config.hostname}>"
                                if "APOP" in offered else None),
                channel_binding=self._channel_binding,
                client_certificate=lambda: self._peer_certificate() is not None,
                random=random,
                hostname=self.config.hostname,
                login_delay=login_delay.default if login_delay is not None else None,
                login_delay_per_user=factory.logins.login_delay_per_user,
                expire=self.config.expire,
                expire_per_user=factory.logins.expire_per_user,
                limits=self.config.limits,
                xclient=self.config.trusted_networks.contains(peer),
            )
        )
        self._logins = factory.logins.for_connection(transport, record, self.observer,
                                                     factory.user_sessions)
        _no_delay(transport)
        self._tcp = plain_tcp(transport)
        transport.registerProducer(self, True)
        self._reset_timeout()
        if self.config.preauth_timeout:
            self._login_deadline = self.clock.callLater(self.config.preauth_timeout,
                                                        self._login_timed_out)
        self.observer.session_opened(record)
        self._send(self.session.greeting())

    # -- limits ----------------------------------------------------------------

    def _admit(self, peer: object, record: SessionRecord) -> bool:
        """``--max-connections``, then the per-address limit (behind
        ``haproxy:`` at the first data, once the PROXY header named the
        client); over a limit, answer -ERR [SYS/TEMP] and hang up (False)."""
        limit = self.config.max_connections
        if limit:
            if not self.factory.connection_count.acquire(limit):
                self._refuse(LimitKind.MAX_CONNECTIONS, record.peer, _SERVER_FULL)
                return False
            self._counted = True
        if self._proxied:
            return True
        return self._admit_address(peer, record)

    def _admit_address(self, peer: object, record: SessionRecord) -> bool:
        """The per-address limit; over it, refuse (False)."""
        if self._count_address(peer):
            return True
        self._refuse(LimitKind.PER_ADDRESS, record.peer, _ADDRESS_FULL)
        return False

    def _count_address(self, peer: object) -> bool:
        """Count this connection against its address's limit, unless the
        address is trusted; False when it already has its limit."""
        limit = self.config.max_connections_per_ip
        if not limit:
            return True
        address = address_key(peer)
        if address is None or address == "unix" or self.config.trusted_networks.contains(peer):
            return True
        if not self.factory.count_connection(address, limit):
            return False
        self._address = address
        return True

    def _forget_address(self) -> None:
        address, self._address = self._address, None
        if address is not None:
            self.factory.forget_connection(address)

    def _refused(self, limit: str, peer: str) -> None:
        log.info("too many connections peer={peer} limit={limit}", peer=peer, limit=limit)
        self.observer.connection_refused(limit, peer)

    def _refuse(self, limit: str, peer: str, line: bytes) -> None:
        self._refused(limit, peer)
        self._closed = True
        if self.session is not None:  # refused after the greeting
            assert self.record is not None
            self.record.end = EndReason.LIMIT
            self.transport.unregisterProducer()
        self.transport.write(line)
        self.transport.loseConnection()

    def _proxy_header_read(self) -> bool:
        """Behind ``haproxy:``, at the first data: the PROXY header has
        named the client, whose address is counted now."""
        self._proxied = False
        assert self.record is not None
        peer = self.transport.getPeer()
        self.record.peer = _address_text(peer)
        session = self.session
        if session is not None and is_loopback(peer) and not session.config.plaintext_auth_allowed:
            # The loopback rule, for the client the header named.
            session.config = replace(session.config, plaintext_auth_allowed=True)
        return self._admit_address(peer, self.record)

    def dataReceived(self, data: bytes) -> None:
        if self.session is None or self._closed:  # refused
            return
        if self._proxied and not self._proxy_header_read():
            return
        self._reset_timeout()
        self.session.receive_data(data)
        if self.session.buffered > self.config.limits.max_buffered and not self._read_paused:
            self._read_paused = True
            self.transport.pauseProducing()
        self._pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._cancel_timeout()
        self._cancel_login_deadline()
        self._forget_address()
        if self._counted:
            self._counted = False
            self.factory.connection_count.release()
        if self.session is not None:
            self.session.connection_lost()
        self._close_message()
        self._release_maildrop()
        record = self.record
        if self.session is not None and record is not None and record.ended is None:
            if record.end is None:
                record.end = EndReason.SHUTDOWN if self.factory.stopping else EndReason.DROPPED
            if record.tls is not None:
                record.tls = self._tls_version() or record.tls
            record.ended = self.clock.seconds()
            self.observer.session_closed(record)

    # -- IPushProducer: the transport tells us when its buffer is full --------

    def pauseProducing(self) -> None:
        self._write_paused = True

    def resumeProducing(self) -> None:
        self._write_paused = False
        self._reset_timeout()  # a slow reader is still a live client
        self._pump()

    def stopProducing(self) -> None:
        self._closed = True
        self._close_message()

    # -- the loop -------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not (self._closed or self._write_paused or self._waiting):
                if self._message is not None:
                    self._stream_chunk()
                elif self._rest is not None:
                    self._send_rest()
                elif not self._handle_next_event():
                    break
        finally:
            self._pumping = False

    def _handle_next_event(self) -> bool:
        """Act on the session's next event; False when it needs data."""
        assert self.session is not None
        event = self.session.next_event()
        if event is NEED_DATA:
            if self._read_paused:
                self._read_paused = False
                self.transport.resumeProducing()
            return False
        self._dispatch(event)
        return True

    def _dispatch(self, event: object) -> None:
        if isinstance(event, Reply):
            self._send(event)
        elif isinstance(event, Authenticate):
            self._authenticate(event)
        elif isinstance(event, Retrieve):
            self._retrieve(event)
        elif isinstance(event, Commit):
            self._commit(event)
        elif isinstance(event, StartTLS):
            self._start_tls(event)
        elif isinstance(event, LookupSecret):
            self._lookup_secret(event)
        elif isinstance(event, LoginRefused):
            self._login_refused(event)
        elif isinstance(event, Forward):
            self._forward(event)

    def _send(self, reply: Reply) -> None:
        data = reply.encode()
        size = self.config.chunk_size
        if len(data) > size and "list-progress" in self.config.workarounds:
            # A long LIST or UIDL as the client reads it: a chunk per turn
            # of the pump, which stops while the transport is paused.
            self._rest = memoryview(data)[size:]
            data = data[:size]
        self._write([data])
        if reply.close:
            record = self.record
            if record is not None and record.end is None:
                record.end = EndReason.QUIT if reply.ok else EndReason.BAD_COMMANDS
            self._closed = True
            # A TLS transport only shuts down once no producer is registered.
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def _await(self, deferred: Any, on_success: Callable[[Any], None],
               role: str | None = BackendRole.STORE) -> None:
        """Run a backend call (of a ``role`` backend: its failures are
        counted; None: the login pipeline counts them); its outcome
        becomes the next reply.  A Deferred that has fired already (most
        logins, QUIT with nothing to delete) is answered at once, without
        the callback hops (issue 18)."""
        if fired(deferred):
            if not self._closed:
                on_success(deferred.result)
                self._pump()
            return
        self._waiting = True

        def succeeded(result: object) -> None:
            self._waiting = False
            if not self._closed:
                on_success(result)
                self._pump()

        def failed(failure: Failure) -> None:
            self._waiting = False
            if not self._closed:
                error = as_pop3_error(failure)
                if role is not None and isinstance(error, TemporaryFailure):
                    self.observer.backend_failed(role, backend_failure_kind(failure))
                self._fail_request(error)
                self._pump()

        deferred.addCallbacks(succeeded, failed)

    def _fail_request(self, error: POP3Error) -> None:
        """Answer the outstanding request with ``error``; after
        ``TooManyFailures`` (the throttle's drop) or ``TooManySessions``
        hang up."""
        assert self.session is not None and self.record is not None
        limit = isinstance(error, (TooManySessions, TooManyConnections))
        reply = self.session.request_failed(
            error, close=limit or isinstance(error, TooManyFailures))
        if reply.close and self.record.end is None:
            self.record.end = (EndReason.TOO_MANY_FAILURES if isinstance(error, TooManyFailures)
                               else EndReason.LIMIT if limit else EndReason.ERROR)
        self._send(reply)

    # -- XCLIENT -----------------------------------------------------------------

    def _forward(self, request: Forward) -> None:
        """A trusted proxy named its client: from now on the connection is
        counted, throttled and logged as that address."""
        assert self.session is not None and self.record is not None
        assert self._logins is not None
        peer = self._logins.peer()
        if request.address is not None:
            kind = IPv6Address if ":" in request.address else IPv4Address
            peer = kind("TCP", request.address, request.port or 0)
        elif request.port is not None and isinstance(peer, (IPv4Address, IPv6Address)):
            peer = type(peer)("TCP", peer.host, request.port)
        self._logins.forwarded = peer
        self.record.peer = _address_text(peer)
        self._forget_address()
        if not self._count_address(peer):
            self._refused(LimitKind.PER_ADDRESS, self.record.peer)
            self._fail_request(TooManyConnections())
            return
        log.info("client forwarded by XCLIENT peer={peer} proxy={proxy}", peer=self.record.peer,
                 proxy=peer_text(self.transport))
        self._send(self.session.forwarded())

    # -- logging in -------------------------------------------------------------

    def _authenticate(self, request: Authenticate) -> None:
        assert self._logins is not None and self.session is not None
        d = self._logins.attempt(request, self.session.tls_active, self._peer_certificate())
        self._await(d, lambda result: self._logged_in(result, request.mechanism), None)

    def _logged_in(self, result: LoggedIn, mechanism: str) -> None:
        assert self.session is not None and self.record is not None
        self._maildrop, self._logout = result.maildrop, result.logout
        self._cancel_login_deadline()
        record = self.record
        record.user = result.user or self.session.user
        record.mechanism = mechanism
        if record.tls is not None:  # the handshake is over: its version is known
            record.tls = self._tls_version() or record.tls
        self._send(self.session.logged_in(result.maildrop.listing(), result.login_delay,
                                          result.expire))

    def _login_refused(self, request: LoginRefused) -> None:
        assert self._logins is not None and self.session is not None
        d = self._logins.refused(request, self.session.tls_active)
        self._await(d, self._fail_request, None)

    def _lookup_secret(self, request: LookupSecret) -> None:
        assert self.session is not None
        session = self.session
        d = lookup_secret(self.portal, request.user, request.kind)
        self._await(d, lambda secret: self._dispatch(session.secret_found(secret)),
                    BackendRole.AUTH)

    def _tls_connection(self) -> SSL.Connection | None:
        """The pyOpenSSL connection under a TLS transport: what its
        ``getHandle()`` (``ISystemHandle``'s, which ``ISSLTransport`` does
        not extend) gives; None without TLS.  After STLS behind
        ``haproxy:`` the TCP transport under the PROXY wrapper is the one
        that started TLS (the wrapper copied its interfaces before)."""
        system: Any = self.transport
        if not ISSLTransport.providedBy(system):
            system = getattr(system, "transport", None) if behind_proxy(system) else None
            if system is None or not ISSLTransport.providedBy(system):
                return None
        handle: Any = system  # ISystemHandle's getHandle(), which ISSLTransport lacks
        connection: SSL.Connection = handle.getHandle()
        return connection

    def _tls_version(self) -> str | None:
        """The negotiated TLS version (``TLSv1.3``), once known."""
        try:
            connection = self._tls_connection()
            version = connection.get_protocol_version_name() if connection is not None else None
        except Exception:  # a connection torn down before its handshake
            return None
        return version if version and version != "Unknown" else None

    def _peer_certificate(self) -> x509.Certificate | None:
        connection = self._tls_connection()
        if connection is None:
            return None
        return connection.get_peer_certificate(as_cryptography=True)

    def _channel_binding(self, kind: str) -> bytes | None:
        """RFC 5929 / RFC 9266 channel-binding data of this TLS connection."""
        connection = self._tls_connection()
        if connection is None:
            return None
        if kind == "tls-exporter":
            return connection.export_keying_material(b"EXPORTER-Channel-Binding", 32)
        if kind == "tls-unique":
            # Undefined for TLS 1.3 (RFC 9266); tls-exporter replaces it.
            if connection.get_protocol_version_name() == "TLSv1.3":
                return None
            return connection.get_peer_finished()
        if kind == "tls-server-end-point":
            certificate = connection.get_certificate(as_cryptography=True)
            if certificate is None:
                return None
            algorithm = certificate.signature_hash_algorithm
            if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
                algorithm = hashes.SHA256()
            return certificate.fingerprint(algorithm)
        return None

    # -- RETR and TOP -------------------------------------------------------------

    def _retrieve(self, request: Retrieve) -> None:
        assert self._maildrop is not None
        self._sending = ("RETR" if request.body_lines is None else "TOP", self.clock.seconds())
        self._sent = 0
        self._await(self._maildrop.open_message(request.message.uid),
                    lambda opened: self._start_message(opened, request))

    def _send_rest(self) -> None:
        assert self._rest is not None
        size = self.config.chunk_size
        piece, rest = self._rest[:size], self._rest[size:]
        self._rest = rest if rest else None
        self._write([bytes(piece)])

    def _start_message(self, opened: IO[bytes] | IMessageBody, request: Retrieve) -> None:
        assert self.session is not None
        reply = self.session.message_follows()
        self._message_head = reply.encode()
        self._message = (as_body(opened, request.stored_size()), request.encoder())

    def _stream_chunk(self) -> None:
        assert self._message is not None
        body = self._message[0]
        size = self.config.chunk_size
        if isinstance(body, AsyncBody):
            self._waiting = True
            body.read(size).addCallbacks(self._chunk_arrived, self._read_failed)
            return
        try:
            chunk = body.read_now(size)
        except OSError:
            self._read_failed(Failure())
            return
        self._send_chunk(chunk)

    def _chunk_arrived(self, chunk: Chunk) -> None:
        self._waiting = False
        if self._message is None:  # the client left meanwhile
            return
        self._send_chunk(chunk)
        self._pump()

    def _read_failed(self, failure: Failure) -> None:
        """The +OK is out, or the client waits for it: the only honest
        signal left is to hang up."""
        self._waiting = False
        if self._closed:
            return
        log.failure("reading a message failed; dropping the connection", failure)
        self.observer.backend_failed(BackendRole.STORE, backend_failure_kind(failure))
        if self.record is not None:
            self.record.end = EndReason.ERROR
        self._closed = True
        self._close_message()
        self.transport.abortConnection()

    def _send_chunk(self, chunk: Chunk) -> None:
        assert self._message is not None and self.session is not None
        data, ended = chunk
        encoder = self._message[1]
        pieces = [self._message_head] if self._message_head else []
        self._message_head = b""
        if data:
            encoded = encoder.feed(data)
            if encoded:
                pieces.append(encoded)
                self._sent += len(encoded)
        finished = ended or encoder.done
        if finished:
            end = encoder.finish()
            pieces.append(end)
            self._sent += len(end)
        self._write(pieces)
        if finished:
            self._close_message()
            self.session.request_done()
            self._message_sent()

    def _message_sent(self) -> None:
        """A RETR or TOP is out: count it (the octets sent, dot-stuffing
        included, without the terminating ``.CRLF``)."""
        record = self.record
        assert record is not None
        command, started = self._sending
        octets = self._sent - 3
        if command == "RETR":
            record.retrieved += 1
            record.retrieved_octets += octets
        else:
            record.top += 1
            record.top_octets += octets
        self.observer.message_sent(record, command, octets, self.clock.seconds() - started)

    def _write(self, pieces: list[bytes]) -> None:
        """Send ``pieces`` in order: on plain TCP with nothing queued, to
        the kernel now in one ``sendmsg`` (``twisted_internals.send_now``);
        what it does not take, and everything on other transports (TLS,
        PROXY), through the transport, so order and back-pressure stay
        Twisted's."""
        if self._tcp is not None:
            sent = send_now(self._tcp, pieces)
            if sent:
                pieces = _after(pieces, sent)
        for piece in pieces:
            self.transport.write(piece)

    def _close_message(self) -> None:
        if self._message is not None:
            self._message[0].close()
            self._message = None

    # -- QUIT, STLS -------------------------------------------------------------

    def _commit(self, request: Commit) -> None:
        assert self._maildrop is not None and self.session is not None
        maildrop = self._maildrop
        deleted = list(request.deleted)
        if request.retrieved and IExpiringMaildrop.providedBy(maildrop):
            # EXPIRE: date what RETR sent, then commit; a failure to date
            # is logged and deletes nothing less.
            dated = maildrop.record_retrieved(list(request.retrieved), self.clock.seconds())
            dated.addErrback(lambda failure: log.failure("dating retrievals failed", failure))
            d = dated.addCallback(lambda _: maildrop.commit(deleted))
        else:
            d = maildrop.commit(deleted)
        self._await(d, lambda _: self._committed(len(request.deleted)))

    def _committed(self, deleted: int) -> None:
        assert self.session is not None and self.record is not None
        record = self.record
        record.end = EndReason.QUIT
        record.deleted = deleted
        self.observer.deletions_committed(record, deleted)
        self._send(self.session.committed())

    def _start_tls(self, request: StartTLS) -> None:
        assert self.session is not None and self.record is not None
        self._send(request.reply)
        self.transport.startTLS(self.config.tls)
        self.session.tls_started()
        self.record.tls = "TLS"
        self.observer.tls_started(self.record)

    def _release_maildrop(self) -> None:
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    # -- idle timeout (RFC 1939 section 3) ------------------------------------

    def _reset_timeout(self) -> None:
        """Note activity.  Called for every read and resumed write, so it
        only stamps the time; the one timer re-arms itself when it fires
        early (cancelling and re-scheduling a timer per command cost 5% of
        the reactor in a login-heavy benchmark)."""
        timeout = self.config.idle_timeout
        if not timeout or self._closed:
            return
        self._active_at = self.clock.seconds()
        if self._timeout is None:
            self._timeout = self.clock.callLater(timeout, self._check_idle)

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _check_idle(self) -> None:
        self._timeout = None
        remaining = self._active_at + self.config.idle_timeout - self.clock.seconds()
        if remaining > 0:
            self._timeout = self.clock.callLater(remaining, self._check_idle)
            return
        log.info("idle timeout peer={peer}", peer=peer_text(self.transport))
        if self.record is not None:
            self.record.end = EndReason.TIMEOUT
        self._hang_up(self._error_line(_IDLE))

    def _hang_up(self, line: bytes) -> None:
        """Say why and close cleanly, so the line arrives (abortConnection
        would discard it), but abort a client that does not read it within
        seconds."""
        self._closed = True
        self._cancel_timeout()
        self.transport.write(line)
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._timeout = self.clock.callLater(HANG_UP_GRACE, self.transport.abortConnection)

    # -- pre-authentication timeout (slowloris) --------------------------------

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None

    def _login_timed_out(self) -> None:
        """--preauth-timeout: no login within that many seconds of connect,
        however the client trickled its bytes."""
        self._login_deadline = None
        session = self.session
        if self._closed or session is None or session.state is not SessionState.AUTHORIZATION:
            return
        log.info("login timeout peer={peer}", peer=peer_text(self.transport))
        if self.record is not None:
            self.record.end = EndReason.LOGIN_TIMEOUT
        self._hang_up(self._error_line(_LOGIN_TIMEOUT))

    def _error_line(self, error: POP3Error) -> bytes:
        """``error`` as its ``-ERR`` line, in the session's language."""
        session = self.session
        reply = session.error_reply(error) if session is not None else error_reply(error)
        return reply.encode()


def _address_text(peer: object) -> str:
    """``host:port`` of an address, for the session record."""
    host = getattr(peer, "host", None)
    if host is None:
        name = getattr(peer, "name", None)  # a UNIX socket's client
        return "unix" if not name else f"unix:{name!r}"
    return f"{host}:{getattr(peer, 'port', '')}"


def _after(pieces: list[bytes], sent: int) -> list[bytes]:
    """What is left of ``pieces`` once ``sent`` octets of them went out."""
    for i, piece in enumerate(pieces):
        if sent < len(piece):
            return [piece[sent:], *pieces[i + 1:]]
        sent -= len(piece)
    return []


def _no_delay(transport: Any) -> None:
    """Send replies at once (TCP_NODELAY): a POP3 dialogue is many small
    replies, which Nagle's algorithm holds back (+20-36% drain throughput
    measured).  TLS and PROXY wrappers hide the TCP transport a level down."""
    for _ in range(3):
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:  # not a TCP socket after all (unix:)
                pass
            return
        transport = getattr(transport, "transport", None)
        if transport is None:
            return

