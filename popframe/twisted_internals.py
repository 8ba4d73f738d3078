"""Every use popframe makes of a Twisted private API lives here.

Twisted may rename or change anything whose name starts with ``_`` in any
release, and no deprecation warning will say so.  So each use is one small
named function or class below, whose docstring says what it relies on,
and each has a test in ``tests/test_twisted_internals.py`` that checks the
*behaviour* popframe needs (not only that a name exists) and so fails when
Twisted changes under it.  ``setup.cfg`` bounds Twisted to the releases
those tests passed on.

To add one: a section below, a function or class with a docstring naming
the private API, and a test beside the others.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints, tcp, unix
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.systemd import ListenFDs

__all__ = [
    "SharedUNIXPort",
    "adopt_shared_unix_port",
    "behind_haproxy",
    "classic_line",
    "classic_log_text",
    "classic_system",
    "dispatch_directly",
    "faster_text_logs",
    "fired",
    "inherited_systemd_descriptors",
    "plain_tcp",
    "raise_listen_errors_synchronously",
    "replace_tls_options",
    "send_now",
    "stop_accepting",
    "systemd_descriptors_replaced",
    "then",
    "text_log_files",
    "tls_options",
    "wrapped_endpoint",
]


# -- twisted.application.internet ---------------------------------------------------


def raise_listen_errors_synchronously(service: StreamServerEndpointService) -> None:
    """Make ``service.privilegedStartService()`` raise when its endpoint
    cannot listen (a port in use, no permission), so twistd stops at
    start-up instead of logging the error and running without the port.

    Relies on ``StreamServerEndpointService._raiseSynchronously`` (since
    Twisted 10.2), which Twisted's own ``twistd`` plugins set the same way.
    """
    service._raiseSynchronously = True


# -- twisted.internet.endpoints: what serverFromString built ---------------------------


def wrapped_endpoint(endpoint: object) -> object | None:
    """The endpoint a wrapping server endpoint (``haproxy:``) listens
    with, or None for an endpoint that wraps none.

    Relies on ``_WrapperServerEndpoint._wrappedEndpoint``."""
    return getattr(endpoint, "_wrappedEndpoint", None)


def tls_options(endpoint: object) -> object | None:
    """The context factory an ``ssl:`` server endpoint will pass to
    ``listenSSL``, or None for other endpoints.

    Relies on ``SSL4ServerEndpoint._sslContextFactory``."""
    return getattr(endpoint, "_sslContextFactory", None)


def replace_tls_options(endpoint: object, options: object) -> None:
    """Have an ``ssl:`` server endpoint listen with ``options`` instead of
    the context factory its endpoint string made.

    Relies on ``SSL4ServerEndpoint.listen`` reading
    ``self._sslContextFactory`` when it is called."""
    if tls_options(endpoint) is None:
        raise TypeError(f"{endpoint!r} is not an ssl: server endpoint")
    endpoint._sslContextFactory = options  # type: ignore[attr-defined]


# -- systemd socket activation ---------------------------------------------------------


def inherited_systemd_descriptors() -> ListenFDs | None:
    """The descriptors systemd passed this process (``LISTEN_FDS``,
    ``LISTEN_FDNAMES``) as the ``systemd:`` endpoint parser reads them.

    Relies on ``endpoints._SystemdParser._sddaemon``, a ``ListenFDs`` made
    from the environment when ``twisted.internet.endpoints`` is imported."""
    return getattr(endpoints._SystemdParser, "_sddaemon", None)


@contextmanager
def systemd_descriptors_replaced(descriptors: ListenFDs) -> Iterator[None]:
    """Within the block, ``systemd:`` endpoint strings name
    ``descriptors`` (by index and by name) instead of this process's own.

    Relies on ``endpoints._SystemdParser`` reading its ``_sddaemon`` class
    attribute each time it parses a string."""
    parser: Any = endpoints._SystemdParser
    saved = parser.__dict__.get("_sddaemon")
    parser._sddaemon = descriptors
    try:
        yield
    finally:
        if saved is None:
            del parser._sddaemon
        else:
            parser._sddaemon = saved


# -- listening ports -----------------------------------------------------------------------


def stop_accepting(port: Any) -> None:
    """Keep a listening ``tcp.Port`` or ``unix.Port`` bound while this
    process never accepts on it (it is for other processes to accept on).

    Relies on a port accepting when the reactor tells it its descriptor is
    readable (``FileDescriptor.stopReading`` takes it out of the reactor's
    readers) and on ``stopListening`` still closing it afterwards."""
    port.stopReading()


class SharedUNIXPort(unix.Port):
    """A copy of a listening ``unix:`` socket that another process owns:
    stopping it must not unlink the path, nor shut the socket down (which
    would refuse connections in every process).  Make one with
    :func:`adopt_shared_unix_port`.

    Relies on ``_shouldShutdown`` (which ``tcp.Port`` clears for adopted
    sockets and ``unix.Port`` does not) and on ``unix.Port.connectionLost``
    doing nothing but the unlink (and a lock file's unlock) before
    ``tcp.Port.connectionLost``."""

    def startListening(self) -> None:
        super().startListening()
        self._shouldShutdown = False

    def connectionLost(self, reason: Failure) -> None:
        tcp.Port.connectionLost(self, reason)


def adopt_shared_unix_port(reactor: Any, fd: int, factory: Any) -> SharedUNIXPort:
    """Listen with ``factory`` on the listening ``AF_UNIX`` socket ``fd``
    (non-blocking), as ``reactor.adoptStreamPort`` would, but as a
    :class:`SharedUNIXPort`, and keeping the mode the owner gave the path.

    Relies on ``unix.Port._fromListeningDescriptor``, which
    ``adoptStreamPort`` itself uses (the port takes a duplicate of ``fd``),
    and on ``startListening`` chmodding the path to the port's ``mode``."""
    with socket.socket(fileno=os.dup(fd)) as probe:
        path = probe.getsockname()
    port = SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    try:
        port.mode = stat.S_IMODE(os.stat(path).st_mode)
    except (OSError, TypeError, ValueError):
        pass  # an abstract or unnamed socket: no file to chmod
    port.startListening()
    return port


# -- twisted.internet.tcp: the direct writer (popframe.server.protocol._write) ---------


def plain_tcp(transport: object) -> tcp.Connection | None:
    """``transport`` if it is Twisted's own TCP connection (not a
    PROXY-protocol wrapper), which :func:`send_now` may write to while it
    is not TLS."""
    return transport if isinstance(transport, tcp.Connection) else None


def send_now(transport: tcp.Connection, pieces: Sequence[bytes]) -> int:
    """Send ``pieces`` straight to the kernel in one ``sendmsg`` when the
    transport holds nothing unsent; return the octets sent (0: nothing was,
    write them through the transport).

    Twisted's own ``write`` waits for the next reactor turn (an epoll round
    and two ``epoll_ctl`` per reply).  Relies on ``tcp.Connection``'s
    ``dataBuffer``, ``offset`` and ``_tempDataLen`` (its unsent output),
    ``TLS`` (set by ``startTLS``: STLS) and ``socket``; whatever the kernel
    does not take must then go through ``transport.write`` so order and
    back-pressure stay Twisted's."""
    if (not transport.connected or transport.disconnecting or transport.TLS
            or transport._tempDataLen or transport.offset != len(transport.dataBuffer)):
        return 0
    try:
        return transport.socket.sendmsg(pieces)
    except OSError:  # EAGAIN, or an error the transport will report
        return 0


# -- twisted.internet.epollreactor: dispatching ready descriptors ---------------------


def dispatch_directly(reactor: Any) -> bool:
    """Have an epoll reactor call each ready descriptor's ``doRead`` /
    ``doWrite`` (through its own ``_doReadOrWrite``: errors are logged and
    disconnect as before) without wrapping each call in the legacy log
    context (``log.callWithLogger``, which names the descriptor in
    ``twisted.python.log`` messages logged meanwhile: popframe logs with
    ``twisted.logger`` namespaces).  That wrapping was 5-7% of a worker's
    reactor-thread CPU in a drain (issue 11).  Returns whether the reactor
    was changed (only ``EPollReactor``, the default on Linux).

    Relies on ``EPollReactor.doPoll``'s body (``_poller.poll`` with at most
    ``len(_selectables)`` events), ``_selectables`` (fd to
    descriptor, changed in place) and ``_doReadOrWrite``, and on
    ``mainLoop`` calling ``self.doIteration`` at each turn."""
    from twisted.internet.epollreactor import EPollReactor

    if not isinstance(reactor, EPollReactor):
        return False
    poll, selectables = reactor._poller.poll, reactor._selectables
    handle = reactor._doReadOrWrite

    def do_poll(timeout: float | None) -> None:
        # EINTR: Python's epoll.poll retries by itself (PEP 475).
        for fd, event in poll(-1 if timeout is None else timeout, len(selectables)):
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)

    reactor.doPoll = do_poll  # type: ignore[method-assign]
    reactor.doIteration = do_poll  # type: ignore[method-assign]
    return True


# -- twisted.internet.defer: results already there (the login and QUIT fast path) ------

_R = TypeVar("_R")


def fired(d: Deferred[Any]) -> bool:
    """Whether ``d`` already holds a result, not a failure, that nothing
    waits on: then ``d.result`` is its value, taken without a callback.

    Relies on ``called``, ``paused`` and ``result``, as ``Deferred.__iter__``
    (``await`` on a fired Deferred) does.  Most backends answer a login at
    once (``succeed``); each ``addCallback`` hop costs a ``_runCallbacks``
    (issue 18: ~17 per session on main)."""
    return d.called and not d.paused and not isinstance(d.result, Failure)


def then(value: Any, f: Callable[..., _R | Deferred[_R]], *args: Any) -> _R | Deferred[_R]:
    """``f(result, *args)`` now when ``value`` is a plain value or a
    :func:`fired` Deferred (an exception from ``f`` is raised to the
    caller); else ``value.addCallback(f, *args)`` (a failure stays in it)."""
    if isinstance(value, Deferred):
        if fired(value):
            return f(value.result, *args)
        return value.addCallback(f, *args)
    return f(value, *args)


# -- twisted.logger: the text log's timestamps ---------------------------------------


def _rfc3339_per_second() -> Callable[[float | None], str]:
    """Twisted's ``formatTime(when)`` (RFC 3339, to the second), made once
    per second: its time zone lookup and ``strftime`` were half of a text
    log line's cost (~18 of ~36 us).  A time within a microsecond of the
    next second is formatted afresh (``fromtimestamp`` may round it up)."""
    from twisted.logger import formatTime

    cached: list[Any] = [None, ""]

    def format_time(when: float | None) -> str:
        if when is None or when < 0:
            return formatTime(when)
        second = int(when)
        if when - second >= 0.999999:
            return formatTime(when)
        if cached[0] != second:
            cached[1] = formatTime(when)
            cached[0] = second
        text: str = cached[1]
        return text

    return format_time


#: What :func:`_text_file_observer_time_format` says of an observer that
#: is no text log, and of one :func:`faster_text_logs` already changed.
_NOT_TEXT, _FASTER = object(), object()


def _text_file_observer_time_format(observer: Any) -> Any:
    """The ``timeFormat`` a ``textFileLogObserver`` was made with, or
    ``_NOT_TEXT`` for any other observer (and for one already changed by
    :func:`faster_text_logs`: ``_FASTER``)."""
    from twisted.logger import FileLogObserver

    if not isinstance(observer, FileLogObserver):
        return _NOT_TEXT
    format_event = observer.formatEvent
    if getattr(format_event, "popframe_faster", False):
        return _FASTER
    if getattr(format_event, "__qualname__", "") != "textFileLogObserver.<locals>.formatEvent":
        return _NOT_TEXT
    cells = dict(zip(format_event.__code__.co_freevars,
                     format_event.__closure__ or (), strict=False))
    cell = cells.get("timeFormat")
    return _NOT_TEXT if cell is None else cell.cell_contents


def faster_text_logs(publisher: Any = None) -> int:
    """Have each text log observer of ``publisher`` (the global one: what
    twistd logs to) format its timestamps once per second, and an event
    whose text is already made (:func:`classic_log_text`) without a
    ``str.format`` pass; the lines stay exactly what
    ``textFileLogObserver`` writes.  Returns how many were changed.

    Relies on ``LogPublisher._observers`` and on ``textFileLogObserver``
    giving a ``FileLogObserver`` whose ``formatEvent`` is its local
    ``formatEvent`` closing over ``timeFormat``; only observers with the
    default (RFC 3339) format are changed, anything else is left alone."""
    from functools import partial

    from twisted.logger import globalLogPublisher, timeFormatRFC3339

    changed = 0
    for observer in list(getattr(publisher or globalLogPublisher, "_observers", ())):
        if _text_file_observer_time_format(observer) != timeFormatRFC3339:
            continue
        format_event = partial(classic_log_text, format_time=_rfc3339_per_second())
        format_event.popframe_faster = True  # type: ignore[attr-defined]
        observer.formatEvent = format_event
        changed += 1
    return changed


def classic_log_text(event: dict[str, Any], format_time: Callable[[float | None], str]
                     ) -> str | None:
    """``formatEventAsClassicLogText(event, formatTime=format_time)``, with
    no ``str.format`` pass for an event whose text is made (its format
    only names a text field: ``logformat.made_text``) and that has no
    failure.  Relies on ``eventAsText``'s layout and on
    ``_formatSystem``'s rule (``log_system``, else ``namespace#level``),
    which a test compares line for line."""
    from twisted.logger import formatEventAsClassicLogText

    from popframe.ops.logformat import made_text

    text = made_text(event)
    system = event.get("log_system")
    if text is None or "log_failure" in event or not (system is None or type(system) is str):
        return formatEventAsClassicLogText(event, formatTime=format_time)
    if not text:
        return None
    return classic_line(format_time(event.get("log_time")), system or classic_system(event), text)


def classic_system(event: dict[str, Any]) -> str:
    """The system a text log shows for an event without ``log_system``:
    ``namespace#level`` (``_formatSystem``'s rule, ``-`` for either one
    missing)."""
    level = event.get("log_level")
    return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"


def classic_line(stamp: str, system: str, text: str) -> str:
    """A text log's line, as ``formatEventAsClassicLogText`` lays it out."""
    text = text.replace("\n", "\n\t")
    return f"{stamp} [{system}] {text}\n"


def text_log_files(publisher: Any = None
                   ) -> list[tuple[Any, Callable[[float | None], str]]] | None:
    """When every observer of ``publisher`` (the global one) is a text log
    :func:`faster_text_logs` changed: the file each writes to and its time
    formatter, so that lines made elsewhere (a worker's) can be written
    there directly, several at a time; else None.  Relies on
    ``FileLogObserver._outFile``."""
    from twisted.logger import globalLogPublisher

    observers = list(getattr(publisher or globalLogPublisher, "_observers", ()))
    if not observers or any(_text_file_observer_time_format(observer) is not _FASTER
                            for observer in observers):
        return None
    return [(observer._outFile, observer.formatEvent.keywords["format_time"])
            for observer in observers]


# -- twisted.protocols.haproxy: the PROXY protocol wrapper ---------------------------


def behind_haproxy(transport: Any) -> bool:
    """Whether ``transport`` is a ``haproxy:`` endpoint's wrapper, whose
    ``getPeer()`` names the proxy until the PROXY header is read (after
    ``connectionMade``).  Relies on the private class
    ``twisted.protocols.haproxy._wrapper.HAProxyProtocolWrapper``.  Also
    through TLS on top of one (``implicit-tls:haproxy:tcp:...``: the PROXY
    header comes before the handshake, so the wrapper is under TLS)."""
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    while isinstance(transport, TLSMemoryBIOProtocol):
        transport = transport.transport
    return isinstance(transport, HAProxyProtocolWrapper)
