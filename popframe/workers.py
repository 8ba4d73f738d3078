"""``--workers N``: N processes serving the same listening sockets.

The parent (``twistd pop3``) opens every ``--listen`` socket itself and
never accepts on it.  Each worker runs :func:`main` (``python -c ...``),
spawned with ``reactor.spawnProcess``; it inherits the sockets as file
descriptors, parses the same ``pop3`` arguments with the same
:class:`popframe.tap.Options` (so the options stay the one source of
truth), builds its own factory, portal, checkers and store, and adopts the
sockets.  The kernel hands each new connection to one of the workers.

Endpoints: each ``--listen`` string is parsed with ``serverFromString``
in both processes, against a stand-in for the reactor
(:class:`_BindingReactor` in the parent, :class:`_AdoptingReactor` in a
worker).  So whatever an endpoint wraps around the factory (TLS for
``ssl:`` and ``tls:``, the PROXY protocol for ``haproxy:``) is applied in
the worker exactly as Twisted applies it, and only the final
``listenTCP``/``listenSSL``/``listenUNIX``/``adoptStreamPort`` call is
redirected: the parent binds, the worker adopts what the parent bound.
``tcp:``, ``tcp6:``, ``ssl:``, ``tls:``, ``unix:`` and ``systemd:``
(alone or behind ``haproxy:``) are shared this way; any other endpoint
type is refused at start-up with a message suggesting ``--workers 1``.

Life cycle:

- A worker that exits while the pool runs is restarted after a back-off
  (0.5 s, doubling for each quick death in a row, at most 30 s); every
  exit and restart is logged.
- SIGTERM (or SIGINT) to the parent: it sends SIGTERM to every worker,
  waits up to ``STOP_TIMEOUT`` seconds, sends SIGKILL to the stragglers,
  then closes its own copies of the sockets (removing ``unix:`` socket
  files) and exits.  SIGHUP is forwarded to every worker, which logs it
  (nothing is reloaded yet).
- A worker never outlives its parent: on Linux it asks the kernel for
  SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); everywhere, it
  stops when its standard input, a pipe only the parent holds, reaches
  end of file.
- Workers log as JSON on a pipe to the parent, which logs each event with
  ``worker-ID`` at the front of its system field (``[worker-2
  popframe.server#info] login ok ...``), wherever twistd's log goes.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error, fdesc, tcp, unix
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError

log = Logger(namespace="popframe.workers")

#: Endpoint types whose sockets the parent opens and the workers share.
SHARED_TYPES = ("tcp", "tcp6", "ssl", "tls", "unix", "systemd")
#: Endpoint types that wrap another endpoint string (``haproxy:tcp:110``).
WRAPPER_TYPES = ("haproxy",)

#: Seconds the parent waits for workers to stop before SIGKILL.
STOP_TIMEOUT = 10.0
#: Seconds the parent waits for SIGKILLed workers to be reaped.
KILL_TIMEOUT = 5.0
#: Restart back-off: first delay, ceiling, and the uptime after which a
#: worker counts as healthy again (its next death restarts at the first delay).
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
HEALTHY_UPTIME = 30.0

# File descriptors in a worker.
LIFELINE_FD = 0  # stdin: a pipe from the parent; end of file = the parent is gone
LOG_FD = 3  # JSON log events to the parent
FIRST_LISTENER_FD = 4  # the shared sockets, in --listen order
_MAX_LINE = 1 << 20  # a longer unterminated worker log line is logged in pieces
# python -c BOOTSTRAP ROOT SPEC: the worker process.
_BOOTSTRAP = (
    "import sys; root = sys.argv[1]; root in sys.path or sys.path.insert(0, root); "
    "from popframe.workers import main; main(sys.argv[2:])"
)


def check_shareable(description: str) -> None:
    """Raise ``ConfigurationError`` unless worker processes can share the
    socket of the ``--listen`` endpoint ``description``."""
    kind, _, rest = description.partition(":")
    kind = kind.strip().lower()
    if kind in WRAPPER_TYPES:
        check_shareable(rest)
        return
    if kind not in SHARED_TYPES:
        shared = ", ".join(f"{name}:" for name in SHARED_TYPES)
        raise ConfigurationError(
            "--listen",
            f"{kind or description!r}: endpoints cannot be shared by worker processes "
            f"(shared: {shared}, also behind haproxy:); use --workers 1 to serve it",
        )


# -- the parent ----------------------------------------------------------------------


class _NoConnections(Factory):
    """The factory of the parent's own copy of a shared socket.  The parent
    stops reading the socket as soon as it is bound, so this never runs."""

    noisy = False

    def logPrefix(self) -> str:
        return "shared listener"

    def buildProtocol(self, addr: object) -> None:
        return None  # refuse: connections are for the workers


class _BindingReactor:
    """The reactor, for one endpoint in the parent: the endpoint's final
    listen call binds a socket the parent will not accept on (TLS is the
    workers' business, so ``listenSSL`` binds plain TCP)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.ports: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _bound(self, port: Any) -> Any:
        port.stopReading()  # synchronously, before the reactor could accept
        self.ports.append(port)
        return port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        return self._bound(self._reactor.listenTCP(port, factory, backlog, interface))

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address: Any, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> Any:
        return self._bound(self._reactor.listenUNIX(address, factory, backlog, mode, wantPID))

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Any:
        return self._bound(self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory))


class _SharedListener:
    """One ``--listen`` endpoint: parsed at start-up, bound by the parent."""

    def __init__(self, description: str, reactor: Any) -> None:
        from twisted.internet.endpoints import serverFromString

        check_shareable(description)
        self.description = description
        self._reactor = _BindingReactor(reactor)
        try:
            self._endpoint = serverFromString(self._reactor, description)
        except (ValueError, KeyError, TypeError, OSError, IndexError) as e:
            raise ConfigurationError("--listen", f"{description!r}: {e}") from None
        self.port: Any = None

    def bind(self) -> None:
        result = self._endpoint.listen(_NoConnections())
        failures: list[Failure] = []
        result.addErrback(failures.append)
        if failures:
            failures[0].raiseException()
        if len(self._reactor.ports) != 1:
            for port in self._reactor.ports:
                port.stopListening()
            raise ConfigurationError(
                "--listen", f"{self.description!r}: cannot be shared by worker processes "
                "(it did not open exactly one socket); use --workers 1 to serve it")
        self.port = self._reactor.ports[0]

    def fileno(self) -> int:
        return self.port.fileno()

    def address(self) -> str:
        host = self.port.getHost()
        if hasattr(host, "port"):
            return f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"
        name = host.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    def close(self) -> defer.Deferred[None]:
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)


def _systemd_descriptors() -> dict[str, Any]:
    """How many descriptors systemd passed the parent, and their names, so
    a worker can parse ``systemd:`` endpoint strings the same way."""
    from twisted.internet.endpoints import _SystemdParser

    listen_fds = getattr(_SystemdParser, "_sddaemon", None)
    if listen_fds is None:
        return {"count": 0, "names": []}
    return {
        "count": len(listen_fds.inheritedDescriptors()),
        "names": list(listen_fds.inheritedNamedDescriptors()),
    }


@dataclass
class _Slot:
    """Worker ``id``: the process currently in that slot, and its history."""

    id: int
    process: Any = None
    pid: int | None = None
    started: float = 0.0
    quick_deaths: int = 0  # deaths in a row before HEALTHY_UPTIME
    restart: Any = None  # the pending IDelayedCall


class WorkerPool(Service):
    """The parent's service: shared sockets and ``count`` workers."""

    name = "popframe-workers"

    def __init__(self, options: Any, reactor: Any, count: int | None = None) -> None:
        self.count = int(options["workers"] if count is None else count)
        argv = getattr(options, "argv", None)
        if argv is None:
            raise ConfigurationError(
                "--workers", "workers re-read the pop3 arguments: build the options with "
                "popframe.tap.Options.parseOptions, or use --workers 1")
        self.argv = list(argv)
        self.reactor = reactor
        self.cwd = os.getcwd()  # before twistd may chdir: relative paths stay valid
        self.fake_key = secrets.token_bytes(32)
        self.listeners = [_SharedListener(d, reactor) for d in options["listen"]]
        self.slots = [_Slot(number) for number in range(1, self.count + 1)]
        self._stopping = False
        self._all_ended: defer.Deferred[None] | None = None
        self._previous_sighup: Any = None
        self._timeouts: list[Any] = []

    # -- start ---------------------------------------------------------------

    def privilegedStartService(self) -> None:
        # Bind here, like StreamServerEndpointService: before twistd sheds
        # privileges (port 110), and failing start-up loudly.
        for listener in self.listeners:
            try:
                listener.bind()
            except ConfigurationError as e:
                raise SystemExit(f"popframe: {e}") from None
            log.info(
                "listening on {address} for {count} workers (--listen {description})",
                address=listener.address(), count=self.count, description=listener.description,
            )
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        self.reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        for slot in self.slots:
            if not self._stopping and slot.process is None:
                self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        spec = {
            "worker": slot.id,
            "parent": os.getpid(),
            "argv": self.argv,
            "listeners": [
                {"description": listener.description, "fd": FIRST_LISTENER_FD + index}
                for index, listener in enumerate(self.listeners)
            ],
            "systemd": _systemd_descriptors(),
        }
        child_fds: dict[int, Any] = {LIFELINE_FD: "w", 1: "r", 2: "r", LOG_FD: "r"}
        for index, listener in enumerate(self.listeners):
            child_fds[FIRST_LISTENER_FD + index] = listener.fileno()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # One SCRAM fake-record key for every worker (see run_worker); in
        # the environment, not argv, which other local users can read.
        env[FAKE_KEY_VARIABLE] = self.fake_key.hex()
        # The worker imports the very popframe the parent runs.
        root = str(Path(__file__).resolve().parent.parent)
        args = [sys.executable, "-c", _BOOTSTRAP, root, json.dumps(spec)]
        protocol = _WorkerProtocol(self, slot)
        try:
            process = self.reactor.spawnProcess(
                protocol, sys.executable, args, env=env, path=self.cwd, childFDs=child_fds)
        except Exception:
            log.failure("worker-{id}: cannot start a process", id=slot.id)
            self._schedule_restart(slot)
            return
        slot.process, slot.pid, slot.started = process, process.pid, time.monotonic()
        protocol.pid = process.pid
        log.info("worker-{id} started (pid {pid})", id=slot.id, pid=process.pid)

    # -- exits and restarts --------------------------------------------------

    def _ended(self, slot: _Slot, protocol: _WorkerProtocol, reason: Failure) -> None:
        if slot.process is not protocol.transport:
            return
        slot.process = None
        how = _describe_exit(reason)
        uptime = time.monotonic() - slot.started
        if self._stopping:
            log.info("worker-{id} (pid {pid}) {how}", id=slot.id, pid=protocol.pid, how=how)
            self._check_all_ended()
            return
        delay = self._schedule_restart(slot, uptime)
        log.error(
            "worker-{id} (pid {pid}) {how} after {uptime:.1f}s; restarting it in {delay:.1f}s",
            id=slot.id, pid=protocol.pid, how=how, uptime=uptime, delay=delay,
        )

    def _schedule_restart(self, slot: _Slot, uptime: float = 0.0) -> float:
        if uptime >= HEALTHY_UPTIME:
            slot.quick_deaths = 0
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** min(slot.quick_deaths, 16))
        slot.quick_deaths += 1
        slot.restart = self.reactor.callLater(delay, self._spawn, slot)
        return delay

    # -- signals ---------------------------------------------------------------

    def _sighup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self._forward, "HUP")

    def _forward(self, signal_name: str) -> None:
        running = [slot for slot in self.slots if slot.process is not None]
        log.info("SIG{signal} received: forwarding it to {count} workers",
                 signal=signal_name, count=len(running))
        for slot in running:
            _signal(slot.process, signal_name)

    # -- stop ------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self._stopping = True
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
        running = [slot for slot in self.slots if slot.process is not None]
        self._all_ended = defer.Deferred()
        if running:
            log.info("stopping the workers ({count} running)", count=len(running))
            for slot in running:
                _signal(slot.process, "TERM")
        self._timeouts = [self.reactor.callLater(STOP_TIMEOUT, self._kill_stragglers)]
        self._check_all_ended()

        def closed(_: object) -> defer.Deferred[Any]:
            for timeout in self._timeouts:
                if timeout.active():
                    timeout.cancel()
            return defer.DeferredList(
                [listener.close() for listener in self.listeners], consumeErrors=True)

        return self._all_ended.addCallback(closed).addCallback(lambda _: None)

    def _check_all_ended(self) -> None:
        d = self._all_ended
        if d is not None and not d.called and all(s.process is None for s in self.slots):
            d.callback(None)

    def _kill_stragglers(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                log.warn(
                    "worker-{id} (pid {pid}) did not stop within {timeout:.0f}s: sending SIGKILL",
                    id=slot.id, pid=slot.pid, timeout=STOP_TIMEOUT,
                )
                _signal(slot.process, "KILL")
        self._timeouts.append(self.reactor.callLater(KILL_TIMEOUT, self._give_up))

    def _give_up(self) -> None:
        d = self._all_ended
        if d is not None and not d.called:
            left = [str(slot.pid) for slot in self.slots if slot.process is not None]
            log.error("workers {pids} survived SIGKILL; exiting anyway", pids=", ".join(left))
            d.callback(None)


def _signal(process: Any, name: str) -> None:
    try:
        process.signalProcess(name)
    except (error.ProcessExitedAlready, OSError):
        pass


def _describe_exit(reason: Failure) -> str:
    value = reason.value
    signal_number = getattr(value, "signal", None)
    if signal_number:
        try:
            return f"was killed by {signal.Signals(signal_number).name}"
        except ValueError:
            return f"was killed by signal {signal_number}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


class _WorkerProtocol(ProcessProtocol):
    """The parent's end of one worker: its log, its output, its exit."""

    def __init__(self, pool: WorkerPool, slot: _Slot) -> None:
        self.pool = pool
        self.slot = slot
        self.pid: int | None = None
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > _MAX_LINE:
            lines.append(rest)
        elif rest:
            self._partial[childFD] = rest
        for line in lines:
            self._line(childFD, line)

    def childConnectionLost(self, childFD: int) -> None:
        rest = self._partial.pop(childFD, b"")
        if rest:
            self._line(childFD, rest)

    def processEnded(self, reason: Failure) -> None:
        self.pool._ended(self.slot, self, reason)

    def _line(self, fd: int, line: bytes) -> None:
        system = f"worker-{self.slot.id}"
        if fd == LOG_FD:
            try:
                event = eventFromJSON(line.lstrip(b"\x1e").decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                pass
            else:
                if isinstance(event, dict) and "log_format" in event:
                    self._publish(event, system)
                    return
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            # Output that is not a log event (a crash's traceback, a print).
            level = log.warn if fd == 2 else log.info
            level("{line}", line=text, log_system=system, popframe_worker=self.slot.id)

    def _publish(self, event: dict[str, Any], system: str) -> None:
        original = event.get("log_system")
        if original is None:  # what the text formatter would have shown
            level = event.get("log_level")
            original = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', level)}"
        event["log_system"] = system if original == "-" else f"{system} {original}"
        event["popframe_worker"] = self.slot.id
        event["popframe_worker_pid"] = self.pid
        globalLogPublisher(event)


# -- the worker ------------------------------------------------------------------------


class _AdoptingReactor:
    """The reactor, for one endpoint in a worker: the endpoint's final
    listen call adopts the socket the parent bound (``listenSSL`` adds TLS
    the way the reactor's own ``listenSSL`` does)."""

    def __init__(self, reactor: Any, fd: int, systemd_fd: int | None = None) -> None:
        self._reactor = reactor
        self._fd = fd
        self._systemd_fd = systemd_fd
        self.systemd_fd_consumed = False
        self.ports: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _adopt(self, factory: Any) -> Any:
        probe = socket.socket(fileno=os.dup(self._fd))
        family = probe.family
        probe.close()
        fdesc.setNonBlocking(self._fd)
        if family == socket.AF_UNIX:
            port = _SharedUNIXPort._fromListeningDescriptor(self._reactor, self._fd, factory)
            port.startListening()
        else:
            port = self._reactor.adoptStreamPort(self._fd, family, factory)
        self.ports.append(port)
        return port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        return self._adopt(factory)

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def listenUNIX(self, address: Any, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> Any:
        return self._adopt(factory)

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Any:
        port = self._adopt(factory)
        # A systemd: endpoint closes the descriptor it was given once this
        # returns; it was our duplicate (see _adopt_listener).
        self.systemd_fd_consumed = fileDescriptor == self._systemd_fd
        return port



class _SharedUNIXPort(unix.Port):
    """A worker's copy of a ``unix:`` socket the parent owns: stopping it
    must not unlink the path, nor shut the socket down (which would refuse
    connections in every process), and adopting it must not chmod it."""

    def startListening(self) -> None:
        try:  # keep the mode the parent's listenUNIX gave the path
            self.mode = stat.S_IMODE(os.stat(self._bindPath).st_mode)
        except (OSError, TypeError, ValueError):
            pass
        super().startListening()
        self._shouldShutdown = False

    def connectionLost(self, reason: Failure) -> None:
        tcp.Port.connectionLost(self, reason)


def _adopt_listener(reactor: Any, description: str, fd: int, systemd: dict[str, Any],
                    factory: Any) -> Any:
    """Listen with ``factory`` on the inherited socket ``fd``, wrapped as
    ``--listen description`` wraps it; return the port."""
    from twisted.internet import endpoints
    from twisted.python.systemd import ListenFDs

    names = list(systemd.get("names", ()))
    count = max(int(systemd.get("count", 0)), len(names))
    systemd_fd = os.dup(fd) if count else None
    stand_in = _AdoptingReactor(reactor, fd, systemd_fd)
    saved = endpoints._SystemdParser.__dict__.get("_sddaemon")
    try:
        if systemd_fd is not None:
            # A systemd: endpoint names one of the parent's descriptors by
            # index or name: here each of them leads to the shared socket.
            endpoints._SystemdParser._sddaemon = ListenFDs([systemd_fd] * count, names)
        from popframe.tls import harden_endpoint

        endpoint = harden_endpoint(endpoints.serverFromString(stand_in, description))
        failures: list[Failure] = []
        endpoint.listen(factory).addErrback(failures.append)
        if failures:
            failures[0].raiseException()
    finally:
        if saved is not None:
            endpoints._SystemdParser._sddaemon = saved
        if systemd_fd is not None and not stand_in.systemd_fd_consumed:
            os.close(systemd_fd)
        os.close(fd)  # the port holds a duplicate of its own
    if len(stand_in.ports) != 1:
        raise RuntimeError(f"--listen {description!r} did not adopt exactly one socket")
    return stand_in.ports[0]


@implementer(IReadDescriptor)
class _Lifeline:
    """Reads the worker's stdin, a pipe whose other end only the parent
    holds: end of file means the parent is gone, however it went."""

    def __init__(self, reactor: Any, fd: int, on_lost: Any) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_lost = on_lost
        fdesc.setNonBlocking(fd)

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


def _start_logging(fd: int) -> None:
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(stream)], redirectStandardIO=False)


FAKE_KEY_VARIABLE = "POPFRAME_FAKE_RECORD_KEY"


def run_worker(spec: dict[str, Any]) -> int:
    """The worker process: adopt the sockets, serve until told to stop."""
    _die_with_parent(int(spec["parent"]))
    _start_logging(LOG_FD)
    from twisted.internet import reactor
    from twisted.python import usage

    from popframe.service import make_factory
    from popframe.tap import Options

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
    factory = make_factory(options, reactor)
    ports = []
    for listener in spec["listeners"]:
        try:
            ports.append(_adopt_listener(
                reactor, listener["description"], int(listener["fd"]), spec["systemd"], factory))
        except Exception:
            log.failure("cannot serve --listen {description}", description=listener["description"])
            return 1

    stopping = []

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
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(
        log.info, "SIGHUP received: nothing to reload yet"))
    log.info("ready (pid {pid}): serving {count} listeners", pid=os.getpid(), count=len(ports))
    reactor.run()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m popframe.workers SPEC (twistd pop3 --workers starts it)")
    sys.exit(run_worker(json.loads(args[0])))


if __name__ == "__main__":
    main()
