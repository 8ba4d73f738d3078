"""The Twisted private APIs popframe relies on (``popframe.twisted_internals``)
still behave as it needs.

Each test checks the behaviour, not just that a name exists, so a Twisted
release that changes any of them fails here first.  ``setup.cfg`` bounds
Twisted to the releases this file passed on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import tcp, unix
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python.systemd import ListenFDs

from popframe import twisted_internals as internals
from popframe.tls import make_self_signed

pytestmark = pytest.mark.adapter


def a_factory() -> Factory:
    return Factory.forProtocol(Protocol)


# -- StreamServerEndpointService._raiseSynchronously -----------------------------------


class RefusingReactor(MemoryReactor):
    """Every listenTCP fails, as binding a port in use does."""

    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError("address in use"))


def test_listen_errors_raise_at_start_up() -> None:
    service = StreamServerEndpointService(TCP4ServerEndpoint(RefusingReactor(), 110), a_factory())
    internals.raise_listen_errors_synchronously(service)
    with pytest.raises(CannotListenError):
        service.privilegedStartService()


def test_without_it_listen_errors_are_only_logged() -> None:
    """Twisted's default, which the function exists to change.  Should
    Twisted ever raise by default, this fails and the function can go."""
    service = StreamServerEndpointService(TCP4ServerEndpoint(RefusingReactor(), 110), a_factory())
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.privilegedStartService()  # no exception
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e.get("log_failure") or e.get("failure") for e in events]  # new or legacy log
    assert [f for f in failures if f is not None and f.check(CannotListenError)]


# -- ssl: and haproxy: server endpoints ------------------------------------------------------


@pytest.fixture
def ssl_arguments(tmp_path: Path) -> str:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key)
    return f"995:privateKey={key}:certKey={cert}"


def replace_the_options(endpoint: object) -> CertificateOptions:
    """Give an ``ssl:`` endpoint new options; return them."""
    made = internals.tls_options(endpoint)
    assert type(made) is CertificateOptions
    replacement = CertificateOptions(privateKey=made.privateKey, certificate=made.certificate)
    internals.replace_tls_options(endpoint, replacement)
    return replacement


def test_an_ssl_endpoint_listens_with_the_replaced_options(ssl_arguments: str) -> None:
    reactor = MemoryReactor()
    endpoint = serverFromString(reactor, f"ssl:{ssl_arguments}")
    replacement = replace_the_options(endpoint)
    endpoint.listen(a_factory())
    ((port, _, context_factory, _, _),) = reactor.sslServers
    assert port == 995
    assert context_factory is replacement


def test_haproxy_wraps_the_endpoint_that_listens(ssl_arguments: str) -> None:
    reactor = MemoryReactor()
    endpoint = serverFromString(reactor, f"haproxy:ssl:{ssl_arguments}")
    assert internals.tls_options(endpoint) is None
    replacement = replace_the_options(internals.wrapped_endpoint(endpoint))
    endpoint.listen(a_factory())
    ((_, factory, context_factory, _, _),) = reactor.sslServers
    assert context_factory is replacement
    assert type(factory).__name__ == "HAProxyWrappingFactory"


def test_other_endpoints_have_neither() -> None:
    endpoint = serverFromString(MemoryReactor(), "tcp:110")
    assert internals.wrapped_endpoint(endpoint) is None
    assert internals.tls_options(endpoint) is None
    with pytest.raises(TypeError):
        internals.replace_tls_options(endpoint, object())


# -- systemd: endpoints ---------------------------------------------------------------------


SHOW_INHERITED = (
    "from popframe.twisted_internals import inherited_systemd_descriptors as i; "
    "d = i(); print(d.inheritedDescriptors(), sorted(d.inheritedNamedDescriptors().items()))"
)


@pytest.mark.process
def test_inherited_descriptors_come_from_the_environment() -> None:
    """What systemd sets (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), read
    when Twisted's endpoints module is imported."""
    command = 'LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=plain:proxied exec "$0" -c "$1"'
    result = subprocess.run(["sh", "-c", command, sys.executable, SHOW_INHERITED],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[3, 4] [('plain', 3), ('proxied', 4)]"


@pytest.mark.process
def test_systemd_strings_name_the_replaced_descriptors() -> None:
    before = internals.inherited_systemd_descriptors()
    sockets = [socket.socket(socket.AF_INET), socket.socket(socket.AF_INET6)]
    fds = [os.dup(s.fileno()) for s in sockets]  # each endpoint closes the one it adopts
    reactor = MemoryReactor()
    try:
        with internals.systemd_descriptors_replaced(ListenFDs(fds, ["plain", "proxied"])):
            serverFromString(reactor, "systemd:domain=INET6:index=1").listen(a_factory())
            serverFromString(reactor, "systemd:domain=INET:name=plain").listen(a_factory())
    finally:
        for s in sockets:
            s.close()
    assert [(fd, family) for fd, family, _ in reactor.adoptedPorts] == [
        (fds[1], socket.AF_INET6), (fds[0], socket.AF_INET)]
    assert internals.inherited_systemd_descriptors() is before


# -- listening ports ----------------------------------------------------------------------------


@pytest.mark.process
def test_a_port_that_stops_accepting_stays_bound_and_closes() -> None:
    reactor = MemoryReactorClock()
    port = tcp.Port(0, a_factory(), interface="127.0.0.1", reactor=reactor)
    port.startListening()
    assert port in reactor.readers  # readable = a connection to accept
    internals.stop_accepting(port)
    assert port not in reactor.readers
    address = port.getHost()
    with socket.create_connection((address.host, address.port), timeout=5):
        pass  # still bound and listening: the kernel queues the connection
    port.stopListening()
    reactor.advance(0)
    with pytest.raises(OSError):
        socket.create_connection((address.host, address.port), timeout=5)


@pytest.fixture
def unix_listener(tmp_path: Path):
    path = tmp_path / "pop3.sock"
    owner = socket.socket(socket.AF_UNIX)
    owner.bind(str(path))
    owner.listen(8)
    os.chmod(path, 0o600)
    yield path, owner
    owner.close()


def adopted(port_type, fd: int):
    copy = os.dup(fd)
    os.set_blocking(copy, False)
    reactor = MemoryReactorClock()
    if port_type is internals.SharedUNIXPort:
        port = internals.adopt_shared_unix_port(reactor, copy, a_factory())
    else:
        port = unix.Port._fromListeningDescriptor(reactor, copy, a_factory())
        port.startListening()
    os.close(copy)  # the port holds its own duplicate
    return port, reactor


@pytest.mark.process
def test_a_shared_unix_port_leaves_the_socket_to_its_owner(unix_listener) -> None:
    path, owner = unix_listener
    port, reactor = adopted(internals.SharedUNIXPort, owner.fileno())
    assert port in reactor.readers
    assert os.stat(path).st_mode & 0o777 == 0o600  # not chmodded
    port.stopListening()
    reactor.advance(0)
    assert port.connected is False
    assert path.exists()  # not unlinked
    with socket.socket(socket.AF_UNIX) as client:  # not shut down
        client.settimeout(5)
        client.connect(str(path))
        owner.settimeout(5)
        owner.accept()[0].close()


@pytest.mark.process
def test_a_plain_adopted_unix_port_would_unlink_and_chmod(unix_listener) -> None:
    """Why SharedUNIXPort exists: Twisted's own Port takes the path over."""
    path, owner = unix_listener
    port, reactor = adopted(unix.Port, owner.fileno())
    assert os.stat(path).st_mode & 0o777 == 0o666
    port.stopListening()
    reactor.advance(0)
    assert not path.exists()


# -- Deferred results already there ---------------------------------------------------


def test_a_fired_deferred_gives_its_result_without_a_callback() -> None:
    from twisted.internet.defer import Deferred, succeed

    assert internals.fired(succeed(3))
    assert internals.then(succeed(3), lambda value, more: value + more, 4) == 7
    assert internals.then(3, lambda value: value * 2) == 6
    pending: Deferred[int] = Deferred()
    assert not internals.fired(pending)
    chained = internals.then(pending, lambda value: value + 1)
    assert isinstance(chained, Deferred) and not chained.called
    pending.callback(1)
    assert internals.fired(chained) and chained.result == 2


def test_a_failed_or_paused_deferred_is_not_taken_now() -> None:
    from twisted.internet.defer import Deferred, fail, succeed

    failed = fail(ValueError("no"))
    assert not internals.fired(failed)
    kept = internals.then(failed, lambda value: pytest.fail("called with a failure"))
    assert isinstance(kept, Deferred)
    errors: list[object] = []
    kept.addErrback(errors.append)
    assert len(errors) == 1
    waiting: Deferred[int] = Deferred()
    outer = succeed(0).addCallback(lambda _: waiting)  # paused on ``waiting``
    assert outer.called and not internals.fired(outer)
    waiting.callback(5)
    assert internals.fired(outer) and outer.result == 5


# -- the epoll reactor's dispatch -------------------------------------------------------


class _Descriptor:
    """One end of a socket pair, as the reactor sees a connection."""

    def __init__(self, sock: socket.socket, fail: bool = False) -> None:
        self.sock, self.fail = sock, fail
        self.read: list[bytes] = []
        self.lost: list[object] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
        return "descriptor"

    def doRead(self) -> None:  # noqa: N802
        if self.fail:
            raise ValueError("a bug in doRead")
        self.read.append(self.sock.recv(100))

    def connectionLost(self, reason: object) -> None:  # noqa: N802
        self.lost.append(reason)


def test_direct_dispatch_reads_and_disconnects_on_errors() -> None:
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    pairs = [socket.socketpair(), socket.socketpair()]
    good, bad = _Descriptor(pairs[0][0]), _Descriptor(pairs[1][0], fail=True)
    errors: list[dict[str, object]] = []
    legacy_log.addObserver(errors.append)  # where _doReadOrWrite's log.err() goes
    try:
        assert internals.dispatch_directly(reactor)
        reactor.addReader(good)
        reactor.addReader(bad)
        pairs[0][1].send(b"one")
        pairs[1][1].send(b"two")
        reactor.doIteration(1)
        assert good.read == [b"one"] and not good.lost
        assert bad.lost and "a bug in doRead" in str(bad.lost[0])  # disconnected
        assert bad not in reactor.getReaders() and good in reactor.getReaders()
        assert any(isinstance(getattr(event.get("failure"), "value", None), ValueError)
                   for event in errors)  # logged
        reactor.doIteration(0)  # nothing ready: returns
        assert good.read == [b"one"]
    finally:
        legacy_log.removeObserver(errors.append)
        reactor.removeAll()
        reactor._poller.close()
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_other_reactors_are_left_alone() -> None:
    reactor = MemoryReactorClock()
    assert not internals.dispatch_directly(reactor)
    assert not hasattr(reactor, "doIteration")


# -- the text log's timestamps ----------------------------------------------------------


def test_faster_text_logs_write_the_same_lines() -> None:
    import io

    from twisted.logger import LogLevel, LogPublisher, textFileLogObserver

    faster, other, plain_reference = io.StringIO(), io.StringIO(), io.StringIO()
    publisher = LogPublisher(textFileLogObserver(faster), textFileLogObserver(other, "%H"))
    assert internals.faster_text_logs(publisher) == 1  # not the one with a format of its own
    untouched = LogPublisher(textFileLogObserver(plain_reference))
    # Within a second, across seconds, a microsecond before one, an hour on.
    times = [1_700_000_000.25, 1_700_000_000.75, 1_700_000_000.9999997, 1_700_000_001.0,
             1_700_003_600.5, 1_700_000_000.5, None]
    for when in times:
        event = {"log_format": "line {n}", "n": when, "log_time": when,
                 "log_namespace": "popframe.test", "log_level": LogLevel.info}
        publisher(dict(event))
        untouched(dict(event))
    assert faster.getvalue() == plain_reference.getvalue()
    assert len(faster.getvalue().splitlines()) == len(times)
    assert other.getvalue().splitlines()[0][:2].isdigit()  # its own format still


def test_classic_log_text_writes_what_twisted_writes() -> None:
    from twisted.logger import LogLevel, formatEventAsClassicLogText
    from twisted.python.failure import Failure

    try:
        raise ValueError("broken")
    except ValueError:
        failure = Failure()
    made = {"log_format": "{log_text}", "log_time": 1_700_000_000.5, "log_level": LogLevel.warn,
            "log_namespace": "popframe.test"}
    events = [
        dict(made, log_text="logout user='u1' {not a field}", log_system="worker-1 x#info"),
        dict(made, log_text="two\nlines"),  # no log_system: namespace#level
        dict(made, log_text=""),  # nothing to write
        dict(made, log_text="no level", log_level=None),
        dict(made, log_text="failed", log_failure=failure),
        dict(made, log_text="a system that is no str", log_system=7),
        {"log_format": "line {n}", "n": 3, "log_time": None},  # not made: formatted
        dict(made, log_format="{login_text}", login_text="login ok {user}"),  # made elsewhere
        dict(made, log_format="{n}", n=3),  # names a field that is no text
        dict(made, log_format="{a}{b}", a="x", b="y"),
        dict(made, log_format="{login_text}"),  # names a field the event lacks
        dict(made, log_format="{text!r}", text="quoted"),
    ]
    for event in events:
        assert internals.classic_log_text(event, internals._rfc3339_per_second()) == \
            formatEventAsClassicLogText(event)


def test_text_log_files_only_when_every_observer_is_a_faster_text_log() -> None:
    import io

    from twisted.logger import LogPublisher, jsonFileLogObserver, textFileLogObserver

    out = io.StringIO()
    text = textFileLogObserver(out)
    assert internals.text_log_files(LogPublisher(text)) is None  # not made faster yet
    made_faster = LogPublisher(text)
    assert internals.faster_text_logs(made_faster) == 1
    assert internals.faster_text_logs(made_faster) == 0  # once is enough
    [(file, format_time)] = internals.text_log_files(made_faster) or []
    assert file is out and format_time(1_700_000_000.5).startswith("2023-11-1")
    assert internals.text_log_files(LogPublisher(text, jsonFileLogObserver(io.StringIO()))) is None
    assert internals.text_log_files(LogPublisher(text, lambda event: None)) is None
    own_format = LogPublisher(text, textFileLogObserver(io.StringIO(), "%H"))
    internals.faster_text_logs(own_format)
    assert internals.text_log_files(own_format) is None  # its own time format: left alone
    assert internals.text_log_files(LogPublisher()) is None
