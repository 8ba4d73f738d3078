"""A worker process: :func:`main`, started by the parent's pool.

It parses the same ``pop3`` arguments with the same
:class:`popframe.options.Options` (so the command line stays the one
source of truth), builds its own settings, factory, portal, checkers and
store, and adopts the sockets the parent bound.  It never outlives the
parent: on Linux it asks the kernel for SIGKILL when the parent dies
(``PR_SET_PDEATHSIG``); everywhere, it stops when its standard input, a
pipe only the parent holds, reaches end of file.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.uvloop_reactor import install_named
from popframe.workers.contract import FAKE_KEY_VARIABLE, LIFELINE_FD, LOG_FD
from popframe.workers.logs import start_logging

log = Logger(namespace="popframe.workers")


@implementer(IReadDescriptor)
class _Lifeline:
    """Reads the worker's stdin, a pipe whose other end only the parent
    holds: end of file means the parent is gone, however it went."""

    def __init__(self, reactor: Any, fd: int, on_lost: Any, on_data: Any = None) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_lost = on_lost
        self._on_data = on_data  # requests from the parent (popframe.ops.relay)
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "lifeline"

    def doRead(self) -> Any:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            return CONNECTION_LOST
        if data and self._on_data is not None:
            self._on_data(data)
        return None if data else CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        self._reactor.removeReader(self)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this process when the parent dies, so
    a worker never outlives a SIGKILLed parent, even with a stuck reactor.
    (The parent spawns workers from its reactor thread, which lives as
    long as it does; PR_SET_PDEATHSIG fires when that thread ends.)"""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the lifeline pipe still stops the worker
    if os.getppid() != parent:  # it died before prctl: nothing will tell us
        raise SystemExit(f"popframe worker: parent {parent} is gone")


def _endpoint(serving: Any, stand_in: Any, description: str, key: str) -> Any:
    return serving.endpoint(stand_in, description, key)


def _read_snapshot(files: Any) -> dict[str, bytes]:
    """The contents the parent read before dropping privileges (see
    popframe.config.snapshot), from the descriptors it passed."""
    contents = {}
    for entry in files:
        fd = int(entry["fd"])
        size = os.fstat(fd).st_size
        contents[entry["path"]] = os.pread(fd, size, 0)
        os.close(fd)
    return contents


def run_worker(spec: dict[str, Any]) -> int:
    """The worker process: adopt the sockets, serve until told to stop."""
    _die_with_parent(int(spec["parent"]))
    start_logging(LOG_FD, text_only=bool(spec.get("log_text_only")))
    # Imported once the log goes to the parent, so what importing them
    # says (a warning) is logged there like everything after it.
    reactor_name = spec.get("reactor")
    install_named(reactor_name)
    from twisted.internet import reactor

    from popframe.twisted_internals import dispatch_directly

    if reactor_name:
        log.info("reactor: {name}", name=reactor_name)
    dispatch_directly(reactor)  # no legacy log context per ready descriptor

    from popframe.config.snapshot import SNAPSHOT
    from popframe.ops.serving import Serving, install_signal_handlers
    from popframe.options import Options
    from popframe.settings import Settings
    from popframe.workers.sockets import adopt_listener

    SNAPSHOT.update(_read_snapshot(spec.get("files", ())))
    options = Options()
    try:
        options.parseOptions(spec["argv"])
    except (usage.UsageError, ConfigurationError) as e:
        log.critical("cannot parse the pop3 arguments: {error}", error=e)
        return 2
    key = os.environ.pop(FAKE_KEY_VARIABLE, None)
    if key:
        # Unknown users must get the same fake SCRAM salt whichever worker
        # answers, or the salt changing would tell them from real ones.
        from popframe.protocol.sasl.scram import set_fake_record_key

        set_fake_record_key(bytes.fromhex(key))
    recorder, metrics_requests = _metrics(spec, reactor)
    serving = Serving(Settings.from_options(options), reactor, recorder)
    shared = spec.get("connections")
    if shared:
        from popframe.server.limits import SharedConnectionCount

        serving.factories["pop3"].connection_count = SharedConnectionCount(
            int(shared["fd"]), int(shared["slot"]), int(shared["slots"]))
    ports = []
    for listener in spec["listeners"]:
        kind = listener.get("kind", "pop3")
        option = "--lmtp" if kind == "lmtp" else "--listen"
        try:
            ports.append(adopt_listener(
                reactor, listener["description"], int(listener["fd"]), spec["systemd"],
                serving.factory(kind, listener["description"]),
                functools.partial(_endpoint, serving, key=option)))
        except Exception:
            log.failure("cannot serve {kind} listener {description}", kind=kind,
                        description=listener["description"])
            return 1

    SNAPSHOT.clear()  # a reload reads the files themselves
    stopping: list[bool] = []

    def parent_gone() -> None:
        if not stopping:  # not the reactor closing the pipe as it stops
            log.warn("the parent process is gone: stopping")
            reactor.stop()

    def stop(first: bool) -> None:
        if first:
            reactor.stop()
        else:
            serving.connections.close_all()

    def stop_serving() -> defer.Deferred[Any]:
        """Stop accepting, then let the sessions in progress finish."""
        stopping.append(True)
        stopped = defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports],
                                     consumeErrors=True)
        return stopped.addCallback(lambda _: serving.drain())

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reactor runs: see below
    reactor.addReader(_Lifeline(reactor, LIFELINE_FD, parent_gone, metrics_requests))
    reactor.addSystemEventTrigger("before", "shutdown", stop_serving)
    reactor.callWhenRunning(install_signal_handlers, reactor, serving.reload, stop)
    # popframe_ready: the parent tells systemd once every worker said it.
    reactor.callWhenRunning(log.info, "ready (pid {pid}): serving {count} listeners",
                            pid=os.getpid(), count=len(ports), popframe_ready=True)
    reactor.run()
    return 0


def _metrics(spec: dict[str, Any], reactor: Any) -> tuple[Any, Any]:
    """``--metrics``: this worker's recorder, and what answers the
    parent's requests for its counts (None, None without metrics).  A last
    snapshot goes to the parent once the sessions are closed at exit."""
    fd = spec.get("metrics_fd")
    if fd is None:
        return None, None
    from popframe.ops import MetricsRecorder
    from popframe.ops.relay import answer_requests

    recorder = MetricsRecorder()
    requests, send = answer_requests(recorder, int(fd))
    reactor.addSystemEventTrigger("after", "shutdown", send)
    return recorder, requests


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m popframe.workers SPEC (twistd pop3 --workers starts it)")
    sys.exit(run_worker(json.loads(args[0])))
