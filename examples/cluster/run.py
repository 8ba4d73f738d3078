#!/usr/bin/env python3
"""A popframe cluster on one machine: HAProxy in front of two nodes (each
``twistd pop3 --workers 2``) that share PostgreSQL and Redis.

    python examples/cluster/run.py            # Ctrl-C (or SIGTERM) stops it all

- PostgreSQL (``--postgresql``, an admin URL; default the local server):
  a database of its own, ``popframe_cluster_<random>``, holds the users,
  the mail and the maildrop locks; it is dropped at the end.
- Redis (``--redis``, default ``redis://127.0.0.1:6379/7``): failed-login
  counts and LOGIN-DELAY, under a key prefix of its own, deleted at the
  end.
- Each node: ``popframe.toml`` here, rendered into the run directory with
  the node's ports (listeners are ``haproxy:`` endpoints; TLS is the
  node's own), and ``--metrics`` with ``GET /health``.
- HAProxy (``haproxy.cfg`` here): TCP mode, PROXY v2 to the nodes,
  round robin, an HTTP check of ``/health`` every 0.5 s.

It prints the client-facing ports, then waits; on Ctrl-C, SIGTERM, the
end of ``--duration``, or an error, it stops everything it started, each
step bounded (SIGKILL after a few seconds).  ``tests/test_cluster.py``
drives the same :class:`Cluster`, and ``benchmarks/cluster.py`` measures
it.  Needs the ``haproxy`` Debian package and popframe's ``[test]`` extras
(psycopg, redis).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/7"
#: The demo users: password, and a LOGIN-DELAY of their own (seconds) or None.
USERS: dict[str, tuple[str, int | None]] = {
    "alice": ("alice's password", None),
    "bob": ("bob's password", None),
    "carol": ("carol's password", 60),
}
#: Seconds any one start or stop step may take.
STEP = 60.0


#: Ports this process has handed out: never twice (a port is only bound
#: by the server it was handed to some time later).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768 and up
    by default), so no outgoing connection takes it before the server
    that is handed it binds it; not one handed out before."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` until it is true; RuntimeError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:g} s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL to its process group (its workers) after ``grace``."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@dataclass
class Node:
    """One ``twistd pop3`` with its ports and run directory."""

    name: str
    directory: Path
    pop3_port: int
    pop3s_port: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where this start's lines begin in the log

    @property
    def log(self) -> Path:
        return self.directory / "twistd.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def health(self) -> int:
        """HTTP status of ``/health`` (0: no answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health",
                                        timeout=5) as page:
                return int(page.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as page:
            return str(page.read().decode())


class Cluster:
    """HAProxy, ``nodes`` popframe nodes, a database and a Redis prefix.

    ``node_dsn(index, dsn)`` may give a node another URL for the same
    database (tests put a TCP proxy they can cut in between);
    ``extra_config``: TOML lines added to every node's configuration."""

    def __init__(self, directory: Path, *, nodes: int = 2, workers: int = 2,
                 postgresql: str = POSTGRESQL, redis: str = REDIS,
                 node_dsn: Callable[[int, str], str] | None = None,
                 extra_config: str = "") -> None:
        self.directory = directory
        self.workers = workers
        self.postgresql = postgresql
        self.redis = redis
        self.prefix = f"popframe-cluster:{uuid.uuid4().hex[:12]}:"
        self.database_name = f"popframe_cluster_{uuid.uuid4().hex[:12]}"
        self.node_dsn = node_dsn or (lambda index, dsn: dsn)
        self.extra_config = extra_config
        self.nodes = [Node(f"node{i}", directory / f"node{i}", free_port(), free_port(),
                           free_port()) for i in range(1, nodes + 1)]
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.stats_socket = directory / "haproxy.sock"
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.dsn = ""
        self._created = False

    # -- the whole -------------------------------------------------------------------

    def start(self) -> None:
        """Everything, in order; on any failure, stop what started."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._make_database()
            from popframe.tls import make_self_signed

            make_self_signed(self.cert, self.key)
            for index in range(1, len(self.nodes) + 1):
                self.start_node(index)
            for index, node in enumerate(self.nodes, 1):
                self._serving_on_free_ports(index, node)
            self._start_haproxy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop what was started, each step bounded; idempotent."""
        stop_process(self.haproxy)
        for node in self.nodes:
            stop_process(node.process)
        self._drop_database()
        self._forget_redis_keys()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the database ------------------------------------------------------------------

    def _make_database(self) -> None:
        from popframe.auth.schemes import make_hash
        from popframe.cli.user import add_user
        from popframe.db import Database, parse_url
        from popframe.db.schema import upgrade

        admin_url = parse_url(self.postgresql)
        admin = Database(admin_url).engine.connect()
        try:
            admin.cursor().execute(f"CREATE DATABASE {self.database_name}")
        finally:
            admin.close()
        self._created = True
        base, mark, query = self.postgresql.partition("?")
        self.dsn = base.rsplit("/", 1)[0] + "/" + self.database_name + mark + query
        database = Database(parse_url(self.dsn))
        try:
            database.call(upgrade)
            for user, (password, delay) in USERS.items():
                database.call(add_user, user, make_hash("SCRAM-SHA-256", password.encode()),
                              None, delay)
        finally:
            database.close()

    def _drop_database(self) -> None:
        if not self._created:
            return
        from popframe.db import Database, parse_url

        with suppress(Exception):  # best effort: the server may be gone
            admin = Database(parse_url(self.postgresql)).engine.connect()
            try:
                admin.cursor().execute(
                    f"DROP DATABASE IF EXISTS {self.database_name} WITH (FORCE)")
                self._created = False
            finally:
                admin.close()

    def _forget_redis_keys(self) -> None:
        with suppress(Exception):  # best effort: Redis may be gone
            import redis

            client = redis.Redis.from_url(self.redis, socket_timeout=2,
                                          socket_connect_timeout=2)
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()

    def deliver(self, user: str, message: bytes) -> None:
        """Into ``user``'s maildrop, as an MTA would (``popframe deliver``)."""
        subprocess.run([sys.executable, "-m", "popframe", "deliver", "--store",
                        f"sql:dsn={self.dsn}", "--user", user], input=message, check=True,
                       timeout=STEP, capture_output=True)

    # -- the nodes ---------------------------------------------------------------------

    def config_text(self, index: int) -> str:
        node = self.nodes[index - 1]
        template = (HERE / "popframe.toml").read_text()
        return template.format(
            pop3_port=node.pop3_port, pop3s_port=node.pop3s_port,
            metrics_port=node.metrics_port, workers=self.workers, cert=self.cert,
            key=self.key, dsn=self.node_dsn(index, self.dsn), redis=self.redis,
            prefix=self.prefix) + self.extra_config

    def start_node(self, index: int) -> Node:
        """Start (or start again) node ``index`` (1-based); do not wait."""
        node = self.nodes[index - 1]
        node.directory.mkdir(parents=True, exist_ok=True)
        config = node.directory / "popframe.toml"
        config.write_text(self.config_text(index))
        node.log_offset = node.log.stat().st_size if node.log.exists() else 0
        with open(node.log, "ab") as log:
            node.process = subprocess.Popen(
                [*TWISTD, "-n", "--pidfile=", "pop3", "--config", str(config)],
                cwd=node.directory, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        return node

    def _serving_on_free_ports(self, index: int, node: Node, attempts: int = 3) -> None:
        """Wait for ``node``; if another process took one of its ports
        after it was picked (the node exits: address already in use),
        start it again on fresh ports, ``attempts`` times in all."""
        for attempt in range(attempts):
            try:
                self.wait_serving(node)
                return
            except RuntimeError as error:
                if "Address already in use" not in str(error) or attempt == attempts - 1:
                    raise
            node.pop3_port, node.pop3s_port, node.metrics_port = (
                free_port(), free_port(), free_port())
            self.start_node(index)

    def wait_serving(self, node: Node) -> None:
        """Until every worker said it is ready, ``/health`` says 200 and
        the POP3 ports accept (the parent binds them before its workers
        start: a connection would wait in the backlog)."""
        def up() -> bool:
            assert node.process is not None
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {node.log.read_text()[-3000:]}")
            with open(node.log, "rb") as log:
                log.seek(node.log_offset)
                ready = log.read().count(b"] ready (pid")
            return (ready >= self.workers or self.workers == 1) and node.health() == 200 and all(
                _accepts(port) for port in (node.pop3_port, node.pop3s_port))

        wait_until(up, STEP, f"{node.name} serving")

    # -- HAProxy -----------------------------------------------------------------------

    def haproxy_config(self) -> str:
        def servers(port: str) -> str:
            return "\n".join(
                f"    server {n.name} 127.0.0.1:{getattr(n, port)} port {n.metrics_port}"
                for n in self.nodes)

        return (HERE / "haproxy.cfg").read_text().format(
            stats_socket=self.stats_socket, pop3_port=self.pop3_port,
            pop3s_port=self.pop3s_port, pop3_servers=servers("pop3_port"),
            pop3s_servers=servers("pop3s_port"))

    def _start_haproxy(self) -> None:
        config = self.directory / "haproxy.cfg"
        config.write_text(self.haproxy_config())
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True,
                               timeout=STEP, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stderr.decode(errors='replace')}")
        with open(self.directory / "haproxy.log", "ab") as log:
            self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)],
                                            cwd=self.directory, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.servers_up() == {n.name for n in self.nodes}, STEP,
                   "HAProxy seeing every node up")

    def haproxy_command(self, command: str) -> str:
        """One command on HAProxy's stats socket (level admin), its answer:
        ``show stat``, ``disable server pop3_nodes/node2``..."""
        if self.haproxy is not None and self.haproxy.poll() is not None:
            raise RuntimeError("haproxy exited: "
                               + (self.directory / "haproxy.log").read_text()[-3000:])
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def server_states(self) -> dict[tuple[str, str], str]:
        """``(backend, server) -> status`` (UP, DOWN, ...) from HAProxy's
        stats socket; empty while it does not answer."""
        try:
            lines = self.haproxy_command("show stat").splitlines()
        except OSError:
            return {}
        if not lines or not lines[0].startswith("# "):
            return {}
        columns = lines[0][2:].split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(columns, line.split(","), strict=False))
            if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
                states[(row["pxname"], row["svname"])] = row["status"]
        return states

    def servers_up(self) -> set[str]:
        """The nodes HAProxy sends clients to, in both backends."""
        states = self.server_states()
        return {n.name for n in self.nodes
                if all(states.get((backend, n.name), "").startswith("UP")
                       for backend in ("pop3_nodes", "pop3s_nodes"))}


    def servers_down(self) -> set[str]:
        """The nodes HAProxy has marked down in both backends."""
        states = self.server_states()
        return {n.name for n in self.nodes
                if all(states.get((backend, n.name), "").startswith("DOWN")
                       for backend in ("pop3_nodes", "pop3s_nodes"))}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def run_directory(given: str | None) -> Iterator[Path]:
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="popframe-cluster-") as made:
        yield Path(made)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="per node")
    parser.add_argument("--postgresql", default=POSTGRESQL,
                        help="an admin URL: its server gets a database of the cluster's own")
    parser.add_argument("--redis", default=REDIS, help="a Redis URL (its database number)")
    parser.add_argument("--dir", help="run directory (default: a temporary one, removed)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop by itself after this many seconds")
    args = parser.parse_args(argv)

    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with run_directory(args.dir) as directory:
        cluster = Cluster(directory, nodes=args.nodes, workers=args.workers,
                          postgresql=args.postgresql, redis=args.redis)
        try:
            cluster.start()
            cluster.deliver("alice", b"Subject: welcome\r\n\r\nHello from the cluster.\r\n")
            print(f"popframe cluster up in {directory}", flush=True)
            print(f"  pop3  (STLS)         127.0.0.1:{cluster.pop3_port}", flush=True)
            print(f"  pop3s (implicit TLS) 127.0.0.1:{cluster.pop3s_port}", flush=True)
            assert cluster.haproxy is not None
            print(f"  haproxy: pid {cluster.haproxy.pid}; database {cluster.database_name}; "
                  f"Redis keys {cluster.prefix}*", flush=True)
            for node in cluster.nodes:
                print(f"  {node.name}: pid {node.pid}, health and metrics at "
                      f"http://127.0.0.1:{node.metrics_port}/health", flush=True)
            print("  users: " + ", ".join(f"{u} / {p!r}" for u, (p, _) in USERS.items()),
                  flush=True)
            print(f"  e.g. curl -k --ssl-reqd -u alice:\"alice's password\" "
                  f"pop3://127.0.0.1:{cluster.pop3_port}/1", flush=True)
            print("Ctrl-C stops it all.", flush=True)
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not stopping and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
        finally:
            cluster.stop()
            print("popframe cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
