"""One connection to a directory: connect (TLS verified), bind, search,
each bounded by the ``timeout`` setting.

ldaptor supplies the LDAP messages (BER) and the client protocol; what it
leaves unsafe is done here: TLS always gets explicit options from
``optionsForClientTLS`` (the certificate checked against ``ca_file`` or
the system store, and the host name or IP address with
service-identity), StartTLS waits for the finished handshake before
anything else is sent, and every step has a deadline (ldaptor has none).
A step that misses its deadline aborts the connection, which fails every
operation on it with :class:`DirectoryUnavailable`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ldaptor.protocols import pureber, pureldap
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.auth.ldap.settings import DirectoryURL, LDAPSettings
from popframe.errors import TemporaryFailure

__all__ = ["BindRefused", "Connection", "DirectoryUnavailable", "Entry", "connect", "tls_options"]

#: Bind results that mean "these credentials do not log in": wrong
#: password or no such DN (49), and what directories answer for accounts
#: that may not log in (disabled, locked, expired: 48, 50, 53, 19).
_REFUSED = frozenset({19, 48, 49, 50, 53})
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32


class DirectoryUnavailable(TemporaryFailure):
    """The directory cannot answer now (down, hung, TLS refused, an
    unexpected result): ``[SYS/TEMP]``.  ``reason`` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class BindRefused(Exception):
    """The directory refused a bind's credentials (the result code is
    one of :data:`_REFUSED`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"result {code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Entry:
    """One search result entry: its DN and the attributes asked for,
    each a list of raw values."""

    dn: str
    attributes: dict[str, list[bytes]]

    def first(self, name: str) -> str | None:
        """The first value of ``name`` (attribute names are
        case-insensitive) as text, or None."""
        for key, values in self.attributes.items():
            if key.lower() == name.lower() and values:
                return values[0].decode("utf-8", "replace")
        return None


def tls_options(settings: LDAPSettings, url: DirectoryURL) -> Any:
    """Client TLS options for ``url``: the certificate must chain to
    ``ca_file``'s certificates (read at start-up) or the system's CAs,
    and name the URL's host."""
    if settings.ca_certificates:
        trust = ssl.trustRootFromCertificates(list(settings.ca_certificates))
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(url.host, trustRoot=trust)


#: How ldaptor decodes what a server sends (its client's own recipe).
_DECODER = pureldap.LDAPBERDecoderContext_TopLevel(
    inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
        fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
    )
)

#: A server message larger than this drops the connection (we ask for a
#: few attributes of at most two entries).
MAX_MESSAGE = 1 << 20


@implementer(IHandshakeListener)
class _Client(Protocol):
    """The LDAP client protocol, on ldaptor's message classes: requests
    with ids of this connection, their responses gathered until the final
    one.  (ldaptor's own LDAPClient imports the global reactor, which a
    twistd plugin must not, and trusts the server with asserts.)"""

    transport: Any  # a TCP or TLS transport, set by makeConnection

    def __init__(self) -> None:
        self._buffer = b""
        self._next_id = 1
        self._pending: dict[int, tuple[Deferred[list[Any]], list[Any]]] = {}
        self.handshake: Deferred[None] | None = None
        self.lost: list[Callable[[Failure], None]] = []
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True

    def send(self, request: Any) -> Deferred[list[Any]]:
        """Send ``request``; fires with its responses, the final one last
        (a search's entries and references, then its result)."""
        message_id, self._next_id = self._next_id, self._next_id + 1
        d: Deferred[list[Any]] = Deferred()
        self._pending[message_id] = (d, [])
        self.transport.write(pureldap.LDAPMessage(request, id=message_id).toWire())
        return d

    def send_only(self, request: Any) -> None:
        message_id, self._next_id = self._next_id, self._next_id + 1
        self.transport.write(pureldap.LDAPMessage(request, id=message_id).toWire())

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer:
            try:
                message, used = pureber.berDecodeObject(_DECODER, self._buffer)
            except pureber.BERExceptionInsufficientData:
                if len(self._buffer) > MAX_MESSAGE:
                    self.transport.abortConnection()
                return
            except Exception:  # a malformed message: this connection is done
                self.transport.abortConnection()
                return
            self._buffer = self._buffer[used:]
            if message is not None:
                self._received(message)

    def discard_buffered(self) -> None:
        """Forget what was received and not yet handled (at StartTLS)."""
        self._buffer = b""

    def _received(self, message: Any) -> None:
        pending = self._pending.get(message.id)
        if pending is None:  # id 0: a Notice of Disconnection; or nonsense
            self.transport.loseConnection()
            return
        d, responses = pending
        responses.append(message.value)
        if not isinstance(message.value, (pureldap.LDAPSearchResultEntry,
                                          pureldap.LDAPSearchResultReference)):
            del self._pending[message.id]
            d.callback(responses)

    def handshakeCompleted(self) -> None:
        handshake, self.handshake = self.handshake, None
        if handshake is not None:
            handshake.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        for notify in self.lost:  # first: the operations' errbacks ask why
            notify(reason)
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(reason)
        handshake, self.handshake = self.handshake, None
        if handshake is not None:
            handshake.errback(reason)


class Connection:
    """A connected, usable client; at most one operation at a time (a
    bind must be alone on its connection, RFC 4511 4.2.1)."""

    def __init__(self, client: _Client, url: DirectoryURL, timeout: float, reactor: Any) -> None:
        self.client = client
        self.url = url
        self.timeout = timeout
        self.reactor = reactor
        self.broken: str | None = None  # why it may not be used again
        self.uses = 0  # operations lent it (a pool retries a lost reused one)
        self._timed_out = False
        client.lost.append(self._lost)

    def __repr__(self) -> str:
        return f"<LDAP connection to {self.url.url}{' (broken)' if self.broken else ''}>"

    @property
    def usable(self) -> bool:
        return self.broken is None

    def _lost(self, reason: Failure) -> None:
        if self.broken is None:
            self.broken = f"connection lost: {_describe(reason)}"

    def close(self) -> None:
        """Unbind and disconnect (politely; nothing waits for it)."""
        if self.broken is None:
            self.broken = "closed"
            if self.client.connected:
                self.client.send_only(pureldap.LDAPUnbindRequest())
                self.client.transport.loseConnection()

    def abort(self, why: str) -> None:
        if self.broken is None:
            self.broken = why
        self.client.transport.abortConnection()

    def _bounded(self, d: Deferred[Any], what: str) -> Deferred[Any]:
        """``d`` with a deadline: when it passes, the connection is
        aborted, which fails ``d`` (and anything else on it)."""
        timer = self.reactor.callLater(self.timeout, self._time_out, what)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if self._timed_out:
                    raise DirectoryUnavailable(
                        f"{self.url.url}: no answer to {what} within {self.timeout:g} s")
                if not isinstance(result.value, (BindRefused, DirectoryUnavailable)):
                    self.abort(f"{what} failed")
                    raise DirectoryUnavailable(f"{self.url.url}: {what}: {_describe(result)}")
            return result

        return d.addBoth(done)

    def _time_out(self, what: str) -> None:
        self._timed_out = True
        self.abort(f"no answer to {what}")

    def _send(self, request: Any) -> Deferred[Any]:
        if not self.usable or not self.client.connected:
            raise DirectoryUnavailable(f"{self.url.url}: {self.broken or 'not connected'}")
        return self.client.send(request)

    def bind(self, dn: str, password: bytes) -> Deferred[None]:
        """A simple bind; fails with :class:`BindRefused` for credentials
        the directory refuses, :class:`DirectoryUnavailable` otherwise.
        Never sends an empty password (that is an anonymous bind, which
        succeeds)."""
        if not password:
            raise ValueError("an empty password is an anonymous bind")
        d = self._send(pureldap.LDAPBindRequest(dn=dn.encode("utf-8"), auth=password))

        def result(responses: list[Any]) -> None:
            response = responses[-1]
            code = response.resultCode
            if code == _SUCCESS:
                return
            message = _text(response.errorMessage)
            if code in _REFUSED:
                raise BindRefused(code, message)
            raise DirectoryUnavailable(f"{self.url.url}: bind: result {code}: {message}")

        return self._bounded(d, "a bind").addCallback(result)

    def search(self, base: str, scope: int, filter: Any, attributes: tuple[str, ...],
               size_limit: int = 0) -> Deferred[list[Entry]]:
        """Entries under ``base`` matching ``filter``; search result
        references (referrals) are ignored, never chased.  With
        ``size_limit``, at most that many (the directory stops there)."""
        request = pureldap.LDAPSearchRequest(
            baseObject=base.encode("utf-8"), scope=scope, sizeLimit=size_limit,
            timeLimit=max(1, int(self.timeout)), filter=filter,
            attributes=[name.encode("ascii") for name in attributes] or [b"1.1"])

        def result(responses: list[Any]) -> list[Entry]:
            *entries, done = responses
            code = getattr(done, "resultCode", None)
            if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED, _NO_SUCH_OBJECT):
                message = _text(getattr(done, "errorMessage", ""))
                raise DirectoryUnavailable(f"{self.url.url}: search: result {code}: {message}")
            return [Entry(_text(entry.objectName), {_text(name): list(values)
                                                     for name, values in entry.attributes})
                    for entry in entries if isinstance(entry, pureldap.LDAPSearchResultEntry)]

        return self._bounded(self._send(request), "a search").addCallback(result)

    def start_tls(self, options: Any) -> Deferred[None]:
        """StartTLS (RFC 4513 3): the extended operation, then the
        handshake; fires once the certificate was verified."""
        d = self._send(pureldap.LDAPStartTLSRequest())

        def accepted(responses: list[Any]) -> Deferred[None]:
            response = responses[-1]
            if response.resultCode != _SUCCESS:
                raise DirectoryUnavailable(
                    f"{self.url.url}: StartTLS refused: result {response.resultCode}: "
                    f"{_text(response.errorMessage)}")
            # Bytes that came after the answer came in plaintext: a
            # forged response must not pass for one from inside TLS.
            self.client.discard_buffered()
            self.client.handshake = Deferred()
            handshake = self.client.handshake
            self.client.transport.startTLS(options)
            return handshake

        return self._bounded(d.addCallback(accepted), "StartTLS")

    def wait_for_handshake(self) -> Deferred[None]:
        """For ldaps://: fires once TLS is up and verified."""
        handshake = self.client.handshake
        assert handshake is not None
        return self._bounded(handshake, "the TLS handshake")


def connect(reactor: Any, settings: LDAPSettings, url: DirectoryURL) -> Deferred[Connection]:
    """A connection to ``url``, secured as the settings say (ldaps:// or
    StartTLS, verified), not yet bound.  Fails with
    :class:`DirectoryUnavailable`."""
    # (the endpoint's own timeout is whole seconds; ours, below, is exact)
    endpoint: Any = HostnameEndpoint(reactor, url.host, url.port,
                                     timeout=max(1, math.ceil(settings.timeout)))
    options: Any = tls_options(settings, url) if url.ldaps or settings.starttls else None
    if url.ldaps:
        endpoint = wrapClientTLS(options, endpoint)
    client = _Client()
    if url.ldaps:
        client.handshake = Deferred()
    connected = connectProtocol(endpoint, client)
    timer = reactor.callLater(settings.timeout, connected.cancel)

    def made(client: _Client) -> Deferred[Connection] | Connection:
        if timer.active():
            timer.cancel()
        connection = Connection(client, url, settings.timeout, reactor)
        if url.ldaps:
            return connection.wait_for_handshake().addCallback(lambda _: connection)
        if settings.starttls:
            return connection.start_tls(options).addCallback(lambda _: connection)
        return connection

    def failed(failure: Failure) -> None:
        if timer.active():
            timer.cancel()
        if isinstance(failure.value, DirectoryUnavailable):
            raise failure.value
        raise DirectoryUnavailable(f"{url.url}: cannot connect: {_describe(failure)}")

    return connected.addCallback(made).addErrback(failed)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


def _describe(failure: Failure) -> str:
    """A failure in one line, for the log."""
    error = failure.value
    if isinstance(error, CancelledError):
        return "timed out"
    text = str(error) or type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."
