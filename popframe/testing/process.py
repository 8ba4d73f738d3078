"""A real ``twistd pop3`` process on loopback, for tests with real clients
(poplib, curl, openssl) and for benchmarks.  Ports are read from the
server's own log, so a test neither guesses free ports nor sleeps, and a
server that never says it listens fails the test at a deadline."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from popframe.testing.polling import POLL_TIMEOUT, wait_until

__all__ = ["POP3", "TWISTD", "ServerProcess", "run_twistd", "start_server", "wait_for_log"]

#: twistd from the interpreter running this code (whatever PATH says).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
#: What goes between twistd and ``pop3``'s own arguments in a test: in the
#: foreground, no pid file, the log to stdout (``[*TWISTD, *POP3, ...]``).
POP3 = ["-n", "--pidfile=", "--logfile=-", "pop3"]
_LISTENING = re.compile(rb"POP3Factory(?: \(TLS\))?(?: \(PROXY\))? starting on (\d+)")
#: The longest log line read for a port; longer ones are not scanned whole.
_MAX_LINE = 65536


@dataclass
class ServerProcess:
    """A ``twistd pop3`` process; its output goes to ``log`` as it comes."""

    process: subprocess.Popen[bytes]
    ports: list[int]
    log: Path
    _drain: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The twistd process's (the parent of any workers)."""
        return self.process.pid

    def children(self) -> list[int]:
        """The pids of this process's children (its workers), from /proc."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                found.append(int(entry.name))
        return sorted(found)

    @property
    def port(self) -> int:
        """The first listener."""
        return self.ports[0]

    @property
    def tls_port(self) -> int:
        """The second listener (implicit TLS, by convention)."""
        return self.ports[1]

    def text(self) -> str:
        """The log so far."""
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str | re.Pattern[str], count: int = 1,
                     timeout: float = POLL_TIMEOUT) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the log, waiting
        for them (see :func:`wait_for_log`)."""
        return wait_for_log(self.process, self.log, pattern, count, timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the log is complete after."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._drain is not None:
            self._drain.join(10)


def run_twistd(*args: str, cwd: Path | None = None, timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``twistd ARGS`` to its end and return what it printed, as text:
    for what it says when it refuses to start (``run_twistd(*POP3,
    "--store", "mine:bad")``) or its ``--help``.  ``timeout``: a server
    that starts after all fails the test instead of hanging it."""
    return subprocess.run([*TWISTD, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def wait_for_log(process: subprocess.Popen[bytes], log: Path, pattern: str | re.Pattern[str],
                 count: int = 1, timeout: float = POLL_TIMEOUT) -> list[re.Match[str]]:
    """The first ``count`` matches of ``pattern`` in the file ``log`` that
    ``process`` writes, read again until they are there.  Fails (with the
    log) at once when the process has exited without writing them, or
    after ``timeout`` seconds."""
    compiled = re.compile(pattern)

    def found() -> list[re.Match[str]]:
        exited = process.poll() is not None  # before reading: its last words count
        matches = list(compiled.finditer(log.read_text(errors="replace")))[:count]
        if len(matches) < count and exited:
            raise AssertionError(f"the process exited (status {process.returncode}) before "
                                 f"{count} x {compiled.pattern!r} in its log:\n"
                                 f"{log.read_text(errors='replace')}")
        return matches if len(matches) == count else []

    try:
        return wait_until(found, f"{count} x {compiled.pattern!r} in {log}", timeout)
    except AssertionError as error:
        if process.poll() is not None:
            raise
        raise AssertionError(f"{error}:\n{log.read_text(errors='replace')}") from None


class _OutputReader(threading.Thread):
    """Copies the server's output to the log file as it comes, for its whole
    life (so the server never blocks on a full pipe), and collects the
    ports of the first ``wanted`` listeners it announces.  Reading here,
    not in the caller, is what lets the caller give up at its deadline
    even when the server prints nothing."""

    def __init__(self, output: IO[bytes], log: Path, wanted: int) -> None:
        super().__init__(name="twistd-log", daemon=True)
        self._output = output
        self._log = log
        self._wanted = wanted
        self._changed = threading.Condition()
        self._ended = False
        self.ports: list[int] = []

    def run(self) -> None:
        line = b""
        try:
            with open(self._log, "wb") as sink:
                for chunk in iter(lambda: self._output.read1(65536), b""):  # type: ignore[attr-defined]
                    sink.write(chunk)
                    sink.flush()
                    if len(self.ports) < self._wanted:
                        *lines, line = (line + chunk).split(b"\n")
                        line = line[-_MAX_LINE:]
                        self._found([m for text in lines if (m := _LISTENING.search(text))])
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _found(self, matches: Sequence[re.Match[bytes]]) -> None:
        if matches:
            with self._changed:
                missing = self._wanted - len(self.ports)
                self.ports.extend(int(m.group(1)) for m in matches[:missing])
                self._changed.notify_all()

    @property
    def ended(self) -> bool:
        """Whether the server's output has closed."""
        with self._changed:
            return self._ended

    def wait_for_ports(self, seconds: float) -> bool:
        """Whether all the listeners were announced within ``seconds``;
        False as soon as the output ends without them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.ports) >= self._wanted or self._ended, seconds)
            return len(self.ports) >= self._wanted


def start_server(
    args: list[str],
    cwd: Path,
    listeners: int = 1,
    startup_seconds: float = 30,
    twistd: Sequence[str] = TWISTD,
) -> ServerProcess:
    """Run ``twistd -n pop3 ARGS`` in ``cwd`` and return once ``listeners``
    ports are open (read from its log, so no guessing at timing).  The log
    is ``cwd/twistd.log``.  If the ports are not announced within
    ``startup_seconds`` (the server failed, or hangs printing nothing),
    kills it and raises ``RuntimeError`` with the log.  ``twistd``: the
    command that runs twistd (tests give a stand-in)."""
    log = Path(cwd) / "twistd.log"
    command = [*twistd, *POP3, *args]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    reader = _OutputReader(process.stdout, log, listeners)
    reader.start()
    if not reader.wait_for_ports(startup_seconds):
        exited = process.poll()
        if exited is None and reader.ended:  # the output closed: it is exiting
            try:
                exited = process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait()
        reader.join(10)  # the log is complete unless a child still holds the pipe
        how = f"exited with status {exited}" if exited is not None else "was killed"
        raise RuntimeError(
            f"server did not start within {startup_seconds} s "
            f"({len(reader.ports)} of {listeners} listeners after "
            f"{time.monotonic() - started:.1f} s; it {how}): {log.read_text(errors='replace')}"
        )
    return ServerProcess(process, reader.ports, log, reader)
