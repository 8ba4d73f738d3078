"""The parent's :class:`WorkerPool`: spawn the workers, restart them with
back-off, forward SIGHUP, stop them.

- A worker that exits while the pool runs is restarted after a back-off
  (0.5 s, doubling for each quick death in a row, at most 30 s); every
  exit and restart is logged.
- SIGTERM (or SIGINT) to the parent: it closes its own copies of the
  sockets (removing ``unix:`` socket files) and sends SIGTERM to every
  worker, which stops accepting and gives its sessions in progress
  ``--shutdown-grace`` seconds; workers still running ``STOP_TIMEOUT``
  seconds after that get SIGKILL.  The parent then exits with status 0.
- SIGHUP is forwarded to every worker, which reloads its settings (see
  :mod:`popframe.ops.serving`).
- Under systemd (``Type=notify``): ``READY=1`` once every worker serves,
  ``RELOADING=1`` until every worker reported its reload, ``STOPPING=1``.
- ``--metrics``: each scrape asks the workers for their counts over their
  lifeline pipes and sums the answers (:mod:`popframe.ops.relay`);
  ``--max-connections``: the workers count their connections in one
  shared memory segment (:mod:`popframe.server.limits`).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from popframe.config import ConfigurationError
from popframe.ops import sdnotify
from popframe.ops.serving import install_signal_handlers
from popframe.twisted_internals import dispatch_directly, faster_text_logs, text_log_files
from popframe.uvloop_reactor import reactor_name
from popframe.workers.contract import (
    FAKE_KEY_VARIABLE,
    FIRST_LISTENER_FD,
    LIFELINE_FD,
    LOG_FD,
    worker_command,
)
from popframe.workers.logs import LogRelay
from popframe.workers.sockets import SharedListener, systemd_descriptors

if TYPE_CHECKING:
    from popframe.ops.relay import WorkerMetrics
    from popframe.settings import Settings

log = Logger(namespace="popframe.workers")

#: Seconds the parent waits for workers to stop, beyond --shutdown-grace,
#: before SIGKILL.
STOP_TIMEOUT = 10.0
#: Seconds the parent waits for the workers to report a reload.
RELOAD_TIMEOUT = 60.0
#: Seconds the parent waits for SIGKILLed workers to be reaped.
KILL_TIMEOUT = 5.0
#: Restart back-off: first delay, ceiling, and the uptime after which a
#: worker counts as healthy again (its next death restarts at the first delay).
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
HEALTHY_UPTIME = 30.0
#: Seconds the parent leaves a worker's log pipe unread after reading it.
#: The lines logged meanwhile wait in the pipe (where a worker's death
#: does not lose them) and are then read and written together: one
#: wake-up of the parent for several lines instead of one each (issue 18).
LOG_PAUSE = 0.005


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

    def __init__(self, settings: Settings, reactor: Any, count: int | None = None) -> None:
        self.count = int(settings.workers if count is None else count)
        if settings.argv is None:
            raise ConfigurationError(
                "--workers", "workers re-read the pop3 arguments: build the options with "
                "popframe.tap.Options.parseOptions, or use --workers 1")
        self.argv = list(settings.argv)
        self.reactor = reactor
        self.cwd = os.getcwd()  # before twistd may chdir: relative paths stay valid
        self.fake_key = secrets.token_bytes(32)
        self.listeners = [SharedListener(d, reactor) for d in settings.listen]
        self.listeners += [SharedListener(d, reactor, "--lmtp") for d in settings.lmtp]
        # Read now, while this may still be root (twistd --uid drops it later).
        self.files = snapshot_files(settings.read_at_start)
        self.slots = [_Slot(number) for number in range(1, self.count + 1)]
        self.stop_timeout = settings.shutdown_grace + STOP_TIMEOUT
        # Descriptors after the listeners and the files: the metrics pipe
        # (--metrics) and the shared connection count (--max-connections,
        # made always: a reload may turn the limit on).
        extra_fd = FIRST_LISTENER_FD + len(self.listeners) + len(self.files)
        self.metrics: WorkerMetrics | None = None
        self.metrics_fd: int | None = None
        if settings.metrics:
            from popframe.ops.relay import WorkerMetrics

            self.metrics = WorkerMetrics(reactor, self._ask_for_metrics)
            self.metrics_fd, extra_fd = extra_fd, extra_fd + 1
        from popframe.server.limits import shared_count_segment

        self._connections: int | None = shared_count_segment(self.count)
        self.connections_fd = extra_fd
        self._stopping = False
        self._ready: set[int] = set()  # workers that said they serve (first start)
        self._announced = False  # READY=1 sent
        self._reloads: set[int] | None = None  # workers whose reload is awaited
        self._reload_timeout: Any = None
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
                "listening on {address} for {count} workers ({key} {description})",
                address=listener.address(), count=self.count, key=listener.key,
                description=listener.description,
            )
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        # The parent writes every worker's lines: twistd's text log, the
        # same lines for less CPU (as one process does, popframe.service),
        # before the workers start (text_log_files), and no legacy log
        # context per ready descriptor.
        faster_text_logs()
        dispatch_directly(self.reactor)
        install_signal_handlers(self.reactor, self.reload, self._stop)
        self._start_all()

    def _stop(self, first: bool) -> None:
        if first:
            self.reactor.stop()
        else:  # a second signal: the workers close their sessions now
            self._forward("TERM")

    def _start_all(self) -> None:
        for slot in self.slots:
            if not self._stopping and slot.process is None:
                self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        text_logs = text_log_files()
        spec = {
            "worker": slot.id,
            "parent": os.getpid(),
            "argv": self.argv,
            "listeners": [
                {"description": listener.description, "fd": FIRST_LISTENER_FD + index,
                 "kind": "lmtp" if listener.key == "--lmtp" else "pop3"}
                for index, listener in enumerate(self.listeners)
            ],
            "systemd": systemd_descriptors(),
            "reactor": reactor_name(self.reactor),
            # The log is text alone: a worker sends just that (workers.logs).
            "log_text_only": text_logs is not None,
        }
        child_fds: dict[int, Any] = {LIFELINE_FD: "w", 1: "r", 2: "r", LOG_FD: "r"}
        for index, listener in enumerate(self.listeners):
            child_fds[FIRST_LISTENER_FD + index] = listener.fileno()
        first_file = FIRST_LISTENER_FD + len(self.listeners)
        spec["files"] = [{"path": path, "fd": first_file + index}
                         for index, path in enumerate(self.files)]
        for index, fd in enumerate(self.files.values()):
            child_fds[first_file + index] = fd
        if self.metrics_fd is not None:
            spec["metrics_fd"] = self.metrics_fd
            child_fds[self.metrics_fd] = "r"
        if self._connections is not None:
            spec["connections"] = {"fd": self.connections_fd, "slot": slot.id - 1,
                                   "slots": self.count}
            child_fds[self.connections_fd] = self._connections
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(sdnotify.NOTIFY_SOCKET, None)  # the parent speaks to systemd
        env[FAKE_KEY_VARIABLE] = self.fake_key.hex()
        args = worker_command(spec)
        protocol = _WorkerProtocol(self, slot)
        protocol.relay.on_event = lambda event: self._worker_event(slot, event)
        protocol.relay.text_logs = text_logs
        try:
            process = self.reactor.spawnProcess(
                protocol, args[0], args, env=env, path=self.cwd, childFDs=child_fds)
        except Exception:
            log.failure("worker-{id}: cannot start a process", id=slot.id)
            self._schedule_restart(slot)
            return
        slot.process, slot.pid, slot.started = process, process.pid, time.monotonic()
        protocol.relay.pid = process.pid
        log.info("worker-{id} started (pid {pid})", id=slot.id, pid=process.pid)

    # -- exits and restarts --------------------------------------------------

    def _ended(self, slot: _Slot, protocol: _WorkerProtocol, reason: Failure) -> None:
        if slot.process is not protocol.transport:
            return
        slot.process = None
        if self.metrics is not None:
            self.metrics.ended(slot.id, restarting=not self._stopping)
        how = _describe_exit(reason)
        uptime = time.monotonic() - slot.started
        if self._stopping:
            log.info("worker-{id} (pid {pid}) {how}", id=slot.id, pid=protocol.relay.pid, how=how)
            self._check_all_ended()
            return
        delay = self._schedule_restart(slot, uptime)
        log.error(
            "worker-{id} (pid {pid}) {how} after {uptime:.1f}s; restarting it in {delay:.1f}s",
            id=slot.id, pid=protocol.relay.pid, how=how, uptime=uptime, delay=delay,
        )

    def _schedule_restart(self, slot: _Slot, uptime: float = 0.0) -> float:
        if uptime >= HEALTHY_UPTIME:
            slot.quick_deaths = 0
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** min(slot.quick_deaths, 16))
        slot.quick_deaths += 1
        slot.restart = self.reactor.callLater(delay, self._spawn, slot)
        return delay

    def bound_ports(self) -> dict[str, int | None]:
        """Each ``--listen`` endpoint's bound port (None: not TCP, or not
        bound yet), for ``--autoconfig``."""
        return {listener.description: getattr(listener.port and listener.port.getHost(),
                                               "port", None)
                for listener in self.listeners if listener.key == "--listen"}

    # -- metrics -------------------------------------------------------------

    def _ask_for_metrics(self, worker: int) -> bool:
        from popframe.ops.relay import REQUEST

        process = self.slots[worker - 1].process
        if process is None:
            return False
        try:
            process.writeToChild(LIFELINE_FD, REQUEST)
        except (KeyError, OSError, error.ProcessExitedAlready):
            return False
        return True

    def metrics_source(self) -> Any:
        """What the ``--metrics`` page gathers from: every running worker."""
        from popframe.ops.relay import worker_source

        assert self.metrics is not None
        return worker_source(self.metrics,
                             lambda: [s.id for s in self.slots if s.process is not None])

    # -- signals ---------------------------------------------------------------

    def _sighup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """SIGHUP: every worker reloads; systemd hears RELOADING=1 until
        all of them reported (or ``RELOAD_TIMEOUT``)."""
        running = {slot.id for slot in self.slots if slot.process is not None}
        sdnotify.reloading()
        self._reloads = running
        if self._reload_timeout is not None and self._reload_timeout.active():
            self._reload_timeout.cancel()
        self._reload_timeout = self.reactor.callLater(RELOAD_TIMEOUT, self._reloaded)
        self._forward("HUP")
        if not running:
            self._reloaded()

    def _reloaded(self) -> None:
        if self._reload_timeout is not None and self._reload_timeout.active():
            self._reload_timeout.cancel()
        if self._reloads:
            log.warn("workers {ids} did not report their reload within {timeout:.0f}s",
                     ids=sorted(self._reloads), timeout=RELOAD_TIMEOUT)
        self._reloads = None
        sdnotify.ready(self._status())

    def _worker_event(self, slot: _Slot, event: dict[str, Any]) -> None:
        if event.get("popframe_ready") and not self._announced:
            self._ready.add(slot.id)
            if len(self._ready) == self.count:
                self._announced = True
                sdnotify.ready(self._status())
        if "popframe_reload" in event and self._reloads is not None:
            self._reloads.discard(slot.id)
            if not self._reloads:
                self._reloaded()

    def _status(self) -> str:
        return f"{self.count} workers serving {len(self.listeners)} listeners"

    def _forward(self, signal_name: str) -> None:
        running = [slot for slot in self.slots if slot.process is not None]
        log.info("SIG{signal} received: forwarding it to {count} workers",
                 signal=signal_name, count=len(running))
        for slot in running:
            _signal(slot.process, signal_name)

    # -- stop ------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        sdnotify.stopping()
        self._stopping = True
        # Stop accepting at once: the kernel would queue connections on the
        # parent's copies that no worker will take.
        closing = defer.DeferredList([listener.close() for listener in self.listeners],
                                     consumeErrors=True)
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
        self._timeouts = [self.reactor.callLater(self.stop_timeout, self._kill_stragglers)]
        self._check_all_ended()

        def ended(_: object) -> defer.Deferred[Any]:
            for timeout in self._timeouts:
                if timeout.active():
                    timeout.cancel()
            if self._connections is not None:
                os.close(self._connections)
                self._connections = None
            return closing

        return self._all_ended.addCallback(ended).addCallback(lambda _: None)

    def _check_all_ended(self) -> None:
        d = self._all_ended
        if d is not None and not d.called and all(s.process is None for s in self.slots):
            d.callback(None)

    def _kill_stragglers(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                log.warn(
                    "worker-{id} (pid {pid}) did not stop within {timeout:.0f}s: sending SIGKILL",
                    id=slot.id, pid=slot.pid, timeout=self.stop_timeout,
                )
                _signal(slot.process, "KILL")
        self._timeouts.append(self.reactor.callLater(KILL_TIMEOUT, self._give_up))

    def _give_up(self) -> None:
        d = self._all_ended
        if d is not None and not d.called:
            left = [str(slot.pid) for slot in self.slots if slot.process is not None]
            log.error("workers {pids} survived SIGKILL; exiting anyway", pids=", ".join(left))
            d.callback(None)


def snapshot_files(paths: tuple[str, ...]) -> dict[str, int]:
    """Each readable file of ``paths`` copied into an anonymous memory
    file, by absolute path: what every worker, started as whatever user,
    reads instead of the file (popframe.config.snapshot)."""
    files = {}
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            continue  # the worker reads it itself, and reports it
        fd = os.memfd_create("popframe-snapshot", os.MFD_CLOEXEC)
        os.write(fd, data)
        files[os.path.abspath(path)] = fd
    return files


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
    """The parent's end of one worker: its output (through a
    :class:`LogRelay`) and its exit."""

    def __init__(self, pool: WorkerPool, slot: _Slot) -> None:
        self.pool = pool
        self.slot = slot
        self.relay = LogRelay(slot.id)
        self._log_paused = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self.pool.metrics_fd and self.pool.metrics is not None:
            self.pool.metrics.received(self.slot.id, data)
            return
        self.relay.data_received(childFD, data)
        if childFD == LOG_FD:
            self._pause_log()

    def _pause_log(self) -> None:
        """Leave the log pipe for :data:`LOG_PAUSE` seconds."""
        reader = getattr(self.transport, "pipes", {}).get(LOG_FD)
        if reader is None or self._log_paused:
            return
        reader.stopReading()
        self._log_paused = True
        self.pool.reactor.callLater(LOG_PAUSE, self._resume_log, reader)

    def _resume_log(self, reader: Any) -> None:
        self._log_paused = False
        if reader.connected and not reader.disconnecting:
            reader.startReading()

    def childConnectionLost(self, childFD: int) -> None:
        self.relay.connection_lost(childFD)

    def processEnded(self, reason: Failure) -> None:
        self.pool._ended(self.slot, self, reason)
