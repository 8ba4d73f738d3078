"""HAProxy and the example cluster (examples/cluster/run.py) for the tests.

Locally a missing ``haproxy`` (or PostgreSQL, Redis) skips the tests that
need it; with ``CI=true`` it fails them, so CI never passes without
running them (tests/run.sh installs the ``haproxy`` package)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cluster" / "run.py"


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"cluster tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def load_example() -> ModuleType:
    """examples/cluster/run.py as a module (``Cluster``, ``HAPROXY``...)."""
    name = "popframe_cluster_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def haproxy() -> str:
    """The haproxy binary, or a skip (a failure in CI)."""
    binary = load_example().HAPROXY
    try:
        subprocess.run([binary, "-v"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        unavailable(f"no haproxy ({binary}): {error}")
    return str(binary)


class TCPRelay:
    """A TCP relay on a free loopback port to ``target_port`` that a test
    can cut (every connection closed, new ones closed at once) and restore:
    a database "down" for one node without touching the shared server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.cut_off = False
        self.closed = False
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="relay").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._connections += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_off = True
        with self._lock:
            connections, self._connections = self._connections, []
        for s in connections:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


class RedisProcess:
    """A throwaway ``redis-server`` on a free loopback port (no
    persistence), to stop under a running cluster."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = load_example().free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        try:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(directory)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            unavailable(f"no redis-server: {error}")
            raise
        load_example().wait_until(self.answers, 30, "redis-server answering")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        load_example().stop_process(self.process)
