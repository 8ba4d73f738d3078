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
import json
import os
import signal
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReadDescriptor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.workers.contract import FAKE_KEY_VARIABLE, LIFELINE_FD, LOG_FD
from popframe.workers.logs import start_logging

log = Logger(namespace="popframe.workers")


@implementer(IReadDescriptor)
class _Lifeline:
    """Reads the worker's stdin, a pipe whose other end only the parent
    holds: end of file means the parent is gone, however it went."""

    def __init__(self, reactor: Any, fd: int, on_lost: Any) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_lost = on_lost
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


def run_worker(spec: dict[str, Any]) -> int:
    """The worker process: adopt the sockets, serve until told to stop."""
    _die_with_parent(int(spec["parent"]))
    start_logging(LOG_FD)
    # Imported once the log goes to the parent, so what importing them
    # says (a warning) is logged there like everything after it.
    from twisted.internet import reactor

    from popframe.assembly import make_factory, make_lmtp_factory
    from popframe.options import Options
    from popframe.settings import Settings
    from popframe.workers.sockets import adopt_listener

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
    settings = Settings.from_options(options)
    factories: dict[str, Any] = {"pop3": make_factory(settings, reactor)}
    if settings.lmtp:
        factories["lmtp"] = make_lmtp_factory(settings, reactor)
    ports = []
    for listener in spec["listeners"]:
        kind = listener.get("kind", "pop3")
        try:
            ports.append(adopt_listener(reactor, listener["description"], int(listener["fd"]),
                                        spec["systemd"], factories[kind]))
        except Exception:
            log.failure("cannot serve {kind} listener {description}", kind=kind,
                        description=listener["description"])
            return 1

    stopping: list[bool] = []

    def parent_gone() -> None:
        if not stopping:  # not the reactor closing the pipe as it stops
            log.warn("the parent process is gone: stopping")
            reactor.stop()

    def stop_listening() -> defer.Deferred[Any]:
        stopping.append(True)
        return defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports],
                                  consumeErrors=True)

    reactor.addReader(_Lifeline(reactor, LIFELINE_FD, parent_gone))
    reactor.addSystemEventTrigger("before", "shutdown", stop_listening)
    threads = IReactorThreads(reactor)  # as Twisted's typing of the global reactor asks
    signal.signal(signal.SIGHUP, lambda signum, frame: threads.callFromThread(
        log.info, "SIGHUP received: nothing to reload yet"))
    log.info("ready (pid {pid}): serving {count} listeners", pid=os.getpid(), count=len(ports))
    reactor.run()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m popframe.workers SPEC (twistd pop3 --workers starts it)")
    sys.exit(run_worker(json.loads(args[0])))
