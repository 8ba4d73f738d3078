#!/usr/bin/env python3
"""One node vs two nodes behind HAProxy (examples/cluster/run.py), and the
maildrop-lock handover after a node is SIGKILLed.

    python benchmarks/cluster.py [--duration 8] [--concurrency 16] [--rounds 2] [--json OUT]

It starts the example cluster (two nodes, each ``--workers 2``, its own
PostgreSQL database and Redis prefix), loads ``--users`` users with
``--messages`` messages of about 4 KB each (CRLF, no dots, so the wire
form is the stored one), and after an uncounted 2-second warm-up runs
benchmarks/loadgen.py through HAProxy's pop3 port, alternating, for
``--rounds`` rounds: one node (node2 disabled in HAProxy through its
stats socket) then two nodes, each with ``check`` (USER/PASS, STAT,
UIDL, QUIT) and ``drain`` (also LIST and every RETR), ``--duration``
seconds each.  Alternating on one cluster (same processes, same
database) keeps the background load of a shared machine from favouring
one side; each round's ratio is two nodes over the one-node phase just
before it.  Passwords are SHA512-CRYPT with 1000 rounds, so logins cost
what a real site's would, not more.  The load generator runs on the
same machine.

Then, ``--handovers`` times: a session holds a maildrop on node1, node1
is SIGKILLed (the parent and its workers), and node2 is asked for the
maildrop every 5 ms with a full login until it grants it: the time from
the kill to the ``+OK`` is the handover (PostgreSQL drops a dead
connection's advisory locks when the kernel closes its socket).  node1
is started again between rounds.

Bounded: every step has a timeout and the cluster is stopped in
``finally``.  The machine is shared: compare the ratios of one run, not
absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import poplib
import signal
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "popframe_cluster_example", HERE.parent / "examples" / "cluster" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def message(user: str, n: int) -> bytes:
    line = (f"{user} message {n} " * 8)[:76] + "\r\n"
    return f"Subject: {n}\r\nFrom: bench@example.org\r\n\r\n".encode() + line.encode() * 52


def load_users(cluster: Any, users: int, messages: int) -> dict[str, dict]:
    from popframe.auth.schemes import make_hash
    from popframe.cli.user import add_user
    from popframe.db import Database, parse_url
    from popframe.stores.sql.queries import store_message

    database = Database(parse_url(cluster.dsn))
    manifest: dict[str, dict] = {}
    try:
        for i in range(users):
            user, password = f"bench{i:03d}", f"password {i}"
            database.call(add_user, user, make_hash("SHA512-CRYPT", password.encode(),
                                                    rounds=1000))
            by_uid = {}
            for n in range(messages):
                data, uid = message(user, n), f"m{n:04d}"
                database.call(store_message, user, uid, io.BytesIO(data))
                by_uid[uid] = (len(data), zlib.crc32(data))
            manifest[user] = {"password": password, "by_uid": by_uid}
    finally:
        database.close()
    return manifest


def load(cluster: Any, users: dict[str, dict], scenario: str, args: argparse.Namespace) -> dict:
    result = asyncio.run(loadgen.run_load(
        "127.0.0.1", cluster.pop3_port, users, scenario, args.concurrency, args.duration,
        1_000_000, 30.0, True))
    keep = ("sessions_ok", "sessions_failed", "sessions_per_s", "messages_per_s",
            "session_p50_ms", "session_p99_ms", "errors")
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in result.items()
            if k in keep}


class NodeClient(poplib.POP3):
    """Straight to a node, with the PROXY v1 header HAProxy would send."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float) -> Any:
        sock = super()._create_socket(timeout)
        sock.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 50000 110\r\n")
        return sock


def login(port: int, user: str, password: str) -> NodeClient:
    client = NodeClient(port)
    client.user(user)
    client.pass_(password)
    return client


def handover(example: Any, cluster: Any, user: str, password: str) -> float:
    node1, node2 = cluster.nodes
    holder = login(node1.pop3_port, user, password)
    holder.stat()
    os.killpg(node1.pid, signal.SIGKILL)
    killed = time.monotonic()
    node1.process.wait(10)
    deadline = killed + 30
    while True:
        try:
            login(node2.pop3_port, user, password).quit()
            took = time.monotonic() - killed
            break
        except poplib.error_proto as error:
            if b"[IN-USE]" not in error.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    cluster.start_node(1)
    cluster.wait_serving(node1)
    example.wait_until(lambda: cluster.servers_up() == {"node1", "node2"}, 30, "node1 back")
    return took


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--messages", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--handovers", type=int, default=3)
    p.add_argument("--json", help="write the result here too")
    args = p.parse_args(argv)
    example = load_example()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg(),
                               "rounds": []}
    with tempfile.TemporaryDirectory(prefix="popframe-bench-cluster-") as tmp:
        cluster = example.Cluster(Path(tmp), nodes=2, workers=2)
        try:
            cluster.start()
            users = load_users(cluster, args.users, args.messages)
            # Not counted: each worker's first connections to PostgreSQL and Redis.
            asyncio.run(loadgen.run_load("127.0.0.1", cluster.pop3_port, users, "check",
                                         args.concurrency, 2.0, 1_000_000, 60.0, False))
            for _ in range(args.rounds):
                measured = {}
                for nodes, command in ((1, "disable"), (2, "enable")):
                    for backend in ("pop3_nodes", "pop3s_nodes"):
                        cluster.haproxy_command(f"{command} server {backend}/node2")
                    measured[f"{nodes}_node"] = {
                        scenario: load(cluster, users, scenario, args)
                        for scenario in ("check", "drain")}
                for scenario in ("check", "drain"):
                    for what in ("sessions", "messages"):
                        if scenario == "check" and what == "messages":
                            continue
                        one = measured["1_node"][scenario][f"{what}_per_s"]
                        two = measured["2_node"][scenario][f"{what}_per_s"]
                        measured[f"ratio_{scenario}_{what}"] = round(two / max(one, 1e-9), 2)
                results["rounds"].append(measured)
                print(json.dumps(measured), flush=True)
            user = next(iter(users))
            results["handover_ms"] = [
                round(handover(example, cluster, user, users[user]["password"]) * 1000)
                for _ in range(args.handovers)]
        finally:
            cluster.stop()
    results["load_after"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
