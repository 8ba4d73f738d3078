"""The Twisted adapter: sockets, TLS, timeouts and back-pressure around the
sans-IO core in :mod:`popframe.protocol`.

The protocol is the transport's only producer.  One loop (``_pump``) either
streams the current message or takes the next event from the session, and
stops whenever the transport's write buffer is full (``pauseProducing``), a
backend call is outstanding, or the connection is closing.  So replies stay
in order, a client that stops reading makes nothing grow, and a 1 GB RETR
goes out in ``chunk_size`` pieces.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass, field
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet import tcp
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IPushProducer, IReactorTime, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.auth.credentials import (
    DEFAULT_MECHANISMS,
    IVerifiedLogin,
    VerifiedLoginChecker,
    as_cred_credentials,
    login,
    lookup_secret,
    serviceable,
)
from popframe.errors import AuthenticationFailed, POP3Error, TemporaryFailure
from popframe.interfaces import IMaildrop
from popframe.protocol import (
    NEED_DATA,
    Authenticate,
    Commit,
    Limits,
    LookupSecret,
    MessageEncoder,
    Reply,
    Retrieve,
    Session,
    SessionConfig,
    StartTLS,
)
from popframe.protocol.session import SessionState
from dataclasses import replace

from popframe.errors import LoginDelayed, ResponseCode
from popframe.logindelay import IUserSettings, LoginDelay
from popframe.protocol.replies import error_reply
from popframe.throttle import Throttle, TooManyFailures, Verdict, address_key
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater

log = Logger()

#: Seconds a client gets to read a timeout's -ERR before it is cut off.
HANG_UP_GRACE = 5.0


@dataclass(frozen=True)
class ServerConfig:
    """Settings shared by every connection of one listener."""

    # CertificateOptions for STLS; None means STLS is not offered.
    tls: Any = None
    idle_timeout: float = 600.0
    # Seconds from connect to a successful login (slowloris); None: only
    # the idle timeout applies.  RFC 1939's 10-minute minimum is for the
    # autologout timer of a logged-in session.
    preauth_timeout: float | None = None
    # Connections at once from one address (an IPv6 /64), per factory (so
    # per worker process); 0: no limit.  Not applied behind haproxy:.
    max_connections_per_ip: int = 0
    allow_plaintext_auth: bool = False
    # SASL mechanisms (and APOP) to offer where the checkers can serve them.
    mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS
    # Users who may log in as someone else (a PLAIN authorization identity).
    master_users: frozenset[str] = frozenset()
    hostname: str = "localhost"
    implementation: str = "popframe"
    limits: Limits = field(default_factory=Limits)
    chunk_size: int = 64 * 1024
    # Failed-login throttling (popframe.throttle); None answers failures at once.
    throttle: Throttle | None = None
    # RFC 2449 LOGIN-DELAY (popframe.logindelay); None: not enforced.
    login_delay: LoginDelay | None = None


def as_pop3_error(failure: Failure) -> POP3Error:
    """Map a backend failure to the error the client sees; anything
    unexpected is logged with its traceback and answered [SYS/TEMP]."""
    error = failure.value
    if isinstance(error, POP3Error):
        return error
    if isinstance(error, (UnauthorizedLogin, UnhandledCredentials, LoginFailed)):
        return AuthenticationFailed()
    log.failure("unexpected backend failure", failure)
    return TemporaryFailure()


def is_loopback(address: object) -> bool:
    if isinstance(address, UNIXAddress):
        return True
    return _is_loopback_host(getattr(address, "host", ""))


@functools.lru_cache(maxsize=1024)
def _is_loopback_host(host: str) -> bool:
    """Cached: parsing the address was 3% of the reactor in a login-heavy
    benchmark, and clients come back from the same few addresses."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@implementer(IPushProducer)
class POP3ServerProtocol(Protocol):
    # The mechanisms (and "USER") this server's checkers can serve; set by
    # the factory.
    factory_mechanisms: tuple[str, ...] = ("USER",)
    # Whether a checker may give a user a LOGIN-DELAY of their own.
    factory_login_delay_per_user = False

    def __init__(self, portal: Portal, config: ServerConfig, clock: IReactorTime) -> None:
        self.portal = portal
        self.config = config
        self.clock = clock
        self.session: Session | None = None
        self._maildrop: IMaildrop | None = None
        self._logout: Any = None
        self._message: tuple[IO[bytes], MessageEncoder] | None = None
        self._message_head = b""  # RETR's +OK line, sent with the first chunk
        self._message_left: int | None = None  # stored octets still to read, if known
        self._tcp: Any = None  # the plain TCP transport, for _write's direct path
        self._waiting = False  # a backend call is outstanding
        self._write_paused = False  # the transport's buffer is full
        self._read_paused = False  # we stopped reading: too much pipelined
        self._pumping = False
        self._closed = False
        self._timeout: Any = None  # the idle timer
        self._active_at = 0.0  # when the client last did something
        self._login_deadline: Any = None
        self._address: str | None = None  # counted in the factory's per-address table
        self._auth_failures = 0  # failed logins on this connection
        self._secret_user: str | None = None  # whose secret the core is checking
        self._user_login_delay: int | None = None
        # A failed login answered with a SASL failure challenge (RFC 7628's
        # error JSON): its final -ERR [AUTH] is the same login, not another.
        self._failure_round = False

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        if not self._admit_address(peer):
            return
        tls_active = ISSLTransport.providedBy(self.transport)
        offered = self.factory_mechanisms
        random = os.urandom
        self.session = Session(
            SessionConfig(
                implementation=self.config.implementation,
                stls_available=self.config.tls is not None,
                tls_active=tls_active,
                plaintext_auth_allowed=self.config.allow_plaintext_auth
                or (is_loopback(peer) and not _behind_proxy(self.transport)),
                mechanisms=tuple(m for m in offered if m != "USER"),
                user_pass="USER" in offered,
                apop_timestamp=(f"<{os.getpid()}.{random(8).hex()}@{self.config.hostname}>"
                                if "APOP" in offered else None),
                channel_binding=self._channel_binding,
                client_certificate=lambda: self._peer_certificate() is not None,
                random=random,
                hostname=self.config.hostname,
                login_delay=self.config.login_delay.default if self.config.login_delay else None,
                login_delay_per_user=self.factory_login_delay_per_user,
                limits=self.config.limits,
            )
        )
        _no_delay(self.transport)
        if isinstance(self.transport, tcp.Connection):
            self._tcp = self.transport
        self.transport.registerProducer(self, True)
        self._reset_timeout()
        if self.config.preauth_timeout:
            self._login_deadline = self.clock.callLater(self.config.preauth_timeout,
                                                        self._login_timed_out)
        self._send(self.session.greeting())

    def _admit_address(self, peer: object) -> bool:
        """Count this connection against its address's limit; over it,
        answer -ERR [SYS/TEMP] and hang up (False)."""
        factory = getattr(self, "factory", None)
        limit = self.config.max_connections_per_ip
        if not limit or not isinstance(factory, POP3Factory) or _behind_proxy(self.transport):
            return True
        address = address_key(peer)
        if address is None or address == "unix":
            return True
        if factory.connections_from.get(address, 0) >= limit:
            log.info("too many connections peer={peer} limit={limit}",
                     peer=_peer(self.transport), limit=limit)
            self._closed = True
            self.transport.write(b"-ERR [SYS/TEMP] too many connections from your address\r\n")
            self.transport.loseConnection()
            return False
        factory.connections_from[address] = factory.connections_from.get(address, 0) + 1
        self._address = address
        return True

    def dataReceived(self, data: bytes) -> None:
        if self.session is None:  # refused in connectionMade
            return
        self._reset_timeout()
        self.session.receive_data(data)
        if self.session.buffered > self.config.limits.max_buffered and not self._read_paused:
            self._read_paused = True
            self.transport.pauseProducing()
        self._pump()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self._cancel_timeout()
        self._cancel_login_deadline()
        self._forget_address()
        if self.session is not None:
            self.session.connection_lost()
        self._close_message()
        self._release_maildrop()

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

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, Reply):
            if not event.ok and event.code == ResponseCode.AUTH and not self._failure_round:
                # The core itself refused a login (a wrong SCRAM proof, a
                # malformed SASL message): throttled and logged like any.
                self._core_login_failed(event)
                return
            if not event.continuation:
                self._secret_user = None
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

    def _send(self, reply: Reply) -> None:
        if not reply.continuation:
            self._failure_round = False
        self._write([reply.encode()])
        if reply.close:
            self._closed = True
            # A TLS transport only shuts down once no producer is registered.
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def _await(self, deferred: Any, on_success: Any) -> None:
        """Run a backend call; its outcome becomes the next reply."""
        self._waiting = True

        def succeeded(result: object) -> None:
            self._waiting = False
            if not self._closed:
                on_success(result)
                self._pump()

        def failed(failure: Failure) -> None:
            self._waiting = False
            if not self._closed:
                assert self.session is not None
                self._send(self.session.request_failed(as_pop3_error(failure)))
                self._pump()

        deferred.addCallbacks(succeeded, failed)

    # -- requests -------------------------------------------------------------

    def _authenticate(self, request: Authenticate) -> None:
        self._secret_user = None
        credentials = as_cred_credentials(request.credentials, self._peer_certificate())
        authzid = getattr(request.credentials, "authzid", None)
        d = self._address_admitted()
        d.addCallback(lambda _: login(self.portal, credentials, authzid,
                                      self.config.master_users, IMaildrop))
        d.addCallback(self._avatar_arrived)
        d.addCallback(self._check_login_delay, request)
        d.addErrback(self._log_login_failure, request)
        self._await(d, lambda maildrop: self._logged_in(maildrop, request))

    def _address_admitted(self) -> Deferred[None]:
        """Fails with TooManyFailures when the client's address reached
        the throttle's limit: its logins are refused without a check."""
        throttle = self.config.throttle
        if throttle is None:
            return succeed(None)

        def check(blocked: bool) -> None:
            if blocked:
                raise TooManyFailures()

        return throttle.blocked(self.transport.getPeer()).addCallback(check)

    def _avatar_arrived(self, result: tuple[Any, IMaildrop, Any]) -> IMaildrop:
        _, maildrop, logout = result
        self._maildrop, self._logout = maildrop, logout
        if self._closed:  # the client left while we were opening it
            self._release_maildrop()
        return maildrop

    def _check_login_delay(self, maildrop: IMaildrop, request: Authenticate) -> Any:
        """RFC 2449 LOGIN-DELAY, once the credentials are proven: a login
        too soon after the last one is refused (and its maildrop released)."""
        policy = self.config.login_delay
        user = _maildrop_owner(request)
        self._user_login_delay = None
        if policy is None or user is None or self._closed:
            return maildrop

        def admit(delay: int | None) -> Deferred[bool]:
            self._user_login_delay = delay
            return policy.admit(user, delay)

        def admitted(ok: bool) -> IMaildrop:
            if not ok:
                raise LoginDelayed()
            return maildrop

        def refused(failure: Failure) -> Failure:
            self._maildrop = None
            self._release_maildrop()
            return failure

        d = policy.delay_for(self.portal.checkers.values(), user)
        return d.addCallback(admit).addCallback(admitted).addErrback(refused)

    def _logged_in(self, maildrop: IMaildrop, request: Authenticate) -> None:
        assert self.session is not None
        log.info(
            "login ok mechanism={mechanism} user={user} peer={peer} tls={tls}",
            mechanism=request.mechanism, user=_as_user(request), peer=_peer(self.transport),
            tls=self.session.tls_active,
        )
        if self.config.throttle is not None:
            self.config.throttle.succeeded(request.user)
        if self._user_login_delay is not None:
            # RFC 2449 section 6.5: CAPA in TRANSACTION gives this user's delay.
            self.session.config = replace(self.session.config, login_delay=self._user_login_delay)
        self._cancel_login_deadline()
        self._send(self.session.logged_in(maildrop.listing()))

    def _log_login_failure(self, failure: Failure, request: Authenticate) -> Any:
        """Log a failed login once; count it and wait out its delay when it
        was a wrong credential; drop the connection when the throttle says."""
        assert self.session is not None
        error = as_pop3_error(failure)  # logs an unexpected traceback, once
        reason = type(failure.value).__name__
        self._failure_round = True  # until a reply that is not a continuation
        if isinstance(error, TooManyFailures):  # the address is blocked
            self._log_failure(request.mechanism, _as_user(request), reason, dropped=True)
            self._drop(error, pending=True)
            return None
        counted = isinstance(error, AuthenticationFailed)
        d = self._login_failed(request.mechanism, request.user, reason, counted)

        def delayed(verdict: Verdict | None) -> Any:
            if verdict is not None and verdict.drop:
                self._drop(TooManyFailures(), pending=True)
                return None
            return Failure(error)

        return d.addCallback(delayed)

    def _core_login_failed(self, reply: Reply) -> None:
        """The core answered a login attempt with [AUTH] itself."""
        user, self._secret_user = self._secret_user, None
        self._waiting = True
        assert self.session is not None
        mechanism = self.session.last_mechanism or "-"
        d = self._login_failed(mechanism, user, "AuthenticationFailed", counted=True)

        def delayed(verdict: Verdict | None) -> None:
            self._waiting = False
            if verdict is not None and verdict.drop:
                self._drop(TooManyFailures(), pending=False)
            elif not self._closed:
                self._send(reply)
                self._pump()

        def broken(failure: Failure) -> None:
            log.failure("throttling a failed login failed", failure)
            return None  # answer at once rather than never

        d.addErrback(broken).addCallback(delayed)

    def _login_failed(self, mechanism: str, user: str | None, reason: str,
                      counted: bool) -> Deferred[Verdict | None]:
        """Log a failed login once; when ``counted`` (a wrong credential)
        and throttling is on, count it and fire with the throttle's verdict
        after its delay."""
        throttle = self.config.throttle
        shown = repr(user) if user is not None else "-"
        if throttle is None or not counted:
            self._log_failure(mechanism, shown, reason)
            return succeed(None)
        self._auth_failures += 1
        d = throttle.failed(self.transport.getPeer(), user, self._auth_failures)

        def wait(verdict: Verdict) -> Any:
            self._log_failure(mechanism, shown, reason, verdict)
            if verdict.delay <= 0:
                return verdict
            return deferLater(self.clock, verdict.delay, lambda: verdict)

        return d.addCallback(wait)

    def _log_failure(self, mechanism: str, user: str, reason: str,
                     verdict: Verdict | None = None, dropped: bool = False) -> None:
        assert self.session is not None
        fields = dict(mechanism=mechanism, user=user, peer=_peer(self.transport),
                      tls=self.session.tls_active, reason=reason)
        text = "login failed mechanism={mechanism} user={user} peer={peer} tls={tls} reason={reason}"
        if verdict is not None:
            text += " failures={failures} delay={delay}"
            fields.update(failures=verdict.failures, delay=f"{verdict.delay:g}s")
            dropped = verdict.drop
        if dropped:
            text += " action=drop"
        log.info(text, **fields)

    def _drop(self, error: POP3Error, pending: bool) -> None:
        """Answer ``-ERR [AUTH] too many failures`` and hang up."""
        if self._closed:
            return
        assert self.session is not None
        if pending:
            self.session.request_failed(error)  # the Authenticate is over
        self._send(error_reply(error, close=True))

    def _lookup_secret(self, request: LookupSecret) -> None:
        assert self.session is not None
        self._secret_user = request.user
        d = lookup_secret(self.portal, request.user, request.kind)
        self._await(d, lambda secret: self._dispatch(self.session.secret_found(secret)))

    def _peer_certificate(self) -> x509.Certificate | None:
        if not ISSLTransport.providedBy(self.transport):
            return None
        certificate = self.transport.getHandle().get_peer_certificate(as_cryptography=True)
        return certificate

    def _channel_binding(self, kind: str) -> bytes | None:
        """RFC 5929 / RFC 9266 channel-binding data of this TLS connection."""
        if not ISSLTransport.providedBy(self.transport):
            return None
        connection = self.transport.getHandle()
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

    def _retrieve(self, request: Retrieve) -> None:
        assert self._maildrop is not None
        self._await(self._maildrop.open_message(request.message.uid),
                    lambda stream: self._start_message(stream, request))

    def _start_message(self, stream: IO[bytes], request: Retrieve) -> None:
        assert self.session is not None
        reply = self.session.message_follows()
        self._failure_round = False
        self._message_head = reply.encode()
        self._message = (stream, request.encoder())
        self._message_left = request.stored_size()

    def _stream_chunk(self) -> None:
        assert self._message is not None and self.session is not None
        stream, encoder = self._message
        size = self.config.chunk_size
        try:
            chunk = stream.read(size)
            ended = not chunk
            if self._message_left is not None:
                self._message_left -= len(chunk)
                ended = ended or self._message_left <= 0
            elif chunk and len(chunk) < size:
                # Usually the end (files read short only there): make sure,
                # so a message of one chunk goes out as +OK, body and "." in
                # one send.
                more = stream.read(size - len(chunk))
                if more:
                    chunk += more
                else:
                    ended = True
        except OSError:
            # The +OK is out, or the client waits for it: the only honest
            # signal left is to hang up.
            log.failure("reading a message failed; dropping the connection")
            self._closed = True
            self._close_message()
            self.transport.abortConnection()
            return
        pieces = [self._message_head] if self._message_head else []
        self._message_head = b""
        if chunk:
            data = encoder.feed(chunk)
            if data:
                pieces.append(data)
        finished = ended or encoder.done
        if finished:
            pieces.append(encoder.finish())
        self._write(pieces)
        if finished:
            self._close_message()
            self.session.request_done()

    def _write(self, pieces: list[bytes]) -> None:
        """Send ``pieces`` in order.  On plain TCP with nothing queued in
        the transport they go to the kernel now, in one ``sendmsg``:
        Twisted's own write waits for the next reactor turn (an epoll round
        and two ``epoll_ctl`` per reply).  What the kernel does not take,
        and everything on other transports (TLS, PROXY), goes through the
        transport, so order and back-pressure stay Twisted's."""
        tcp_transport = self._tcp
        if (tcp_transport is not None and tcp_transport.connected
                and not tcp_transport.disconnecting and not getattr(tcp_transport, "TLS", False)
                and not tcp_transport._tempDataLen
                and tcp_transport.offset == len(tcp_transport.dataBuffer)):
            try:
                sent = tcp_transport.socket.sendmsg(pieces)
            except OSError:  # EAGAIN, or an error the transport will report
                sent = 0
            if sent:
                pieces = _after(pieces, sent)
        for piece in pieces:
            self.transport.write(piece)

    def _close_message(self) -> None:
        if self._message is not None:
            self._message[0].close()
            self._message = None

    def _commit(self, request: Commit) -> None:
        assert self._maildrop is not None and self.session is not None
        d = self._maildrop.commit(list(request.deleted))
        self._await(d, lambda _: self._send(self.session.committed()))  # type: ignore[union-attr]

    def _start_tls(self, request: StartTLS) -> None:
        assert self.session is not None
        self._send(request.reply)
        self.transport.startTLS(self.config.tls)
        self.session.tls_started()

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
        log.info("idle timeout peer={peer}", peer=_peer(self.transport))
        self._hang_up(b"-ERR disconnected for inactivity\r\n")

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
        log.info("login timeout peer={peer}", peer=_peer(self.transport))
        self._hang_up(b"-ERR [SYS/TEMP] login timed out\r\n")

    def _forget_address(self) -> None:
        address, self._address = self._address, None
        factory = getattr(self, "factory", None)
        if address is None or not isinstance(factory, POP3Factory):
            return
        count = factory.connections_from.get(address, 0) - 1
        if count > 0:
            factory.connections_from[address] = count
        else:
            factory.connections_from.pop(address, None)


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


def _behind_proxy(transport: Any) -> bool:
    """Behind a ``haproxy:`` endpoint ``getPeer()`` names the proxy until
    the PROXY header is read, which is after ``connectionMade``: a proxy
    on loopback must not make every client look local."""
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper

    return isinstance(transport, HAProxyProtocolWrapper)


def _as_user(request: Authenticate) -> str:
    """The user a login was for, printable in one log line."""
    return repr(request.user) if request.user is not None else "-"


def _maildrop_owner(request: Authenticate) -> str | None:
    """Whose maildrop a login opens: the authorization identity if any."""
    return getattr(request.credentials, "authzid", None) or request.user


def _peer(transport: Any) -> str:
    peer = transport.getPeer()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


class POP3Factory(Factory):
    """Builds one :class:`POP3ServerProtocol` per connection."""

    def __init__(self, portal: Portal, config: ServerConfig | None = None,
                 clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.portal = portal
        self.config = config or ServerConfig()
        self.clock = clock
        self.mechanisms = serviceable(portal, ("USER", *self.config.mechanisms))
        # Whether a checker can give a user a LOGIN-DELAY of their own.
        self.login_delay_per_user = any(map(IUserSettings.providedBy, portal.checkers.values()))
        # Open connections per client address (throttle.address_key), for
        # ServerConfig.max_connections_per_ip.
        self.connections_from: dict[str, int] = {}
        if IVerifiedLogin not in portal.checkers:
            portal.registerChecker(VerifiedLoginChecker())

    def buildProtocol(self, addr: object) -> POP3ServerProtocol:
        protocol = POP3ServerProtocol(self.portal, self.config, self.clock)
        protocol.factory = self
        protocol.factory_mechanisms = self.mechanisms
        protocol.factory_login_delay_per_user = self.login_delay_per_user
        return protocol
