#!/usr/bin/env python3
"""How should popframe call a database without blocking the reactor?

    python benchmarks/sql_pools.py [--seconds 3] [--concurrency 16] [--pool 4]

Each option runs in a process of its own (so each may pick its reactor) and
keeps ``--concurrency`` point lookups in flight from the reactor thread for
``--seconds``: ``SELECT password, maildrop FROM bench_users WHERE name = ?``
on a 1,000-row table, a different random user each time, the shape of a
login's lookup.  Reported per option: lookups/s, the process's own CPU per
lookup (user + system: on a 2-core machine the database server, the load
and popframe share the cores, so CPU per lookup matters as much as the
rate), and how late a 1 ms reactor timer fires meanwhile (p50/p99: what
every other connection waits).

The options:

- ``adbapi``: ``twisted.enterprise.adbapi.ConnectionPool`` with the sync
  drivers; ``runQuery`` (a transaction per lookup: BEGIN, SELECT, COMMIT)
  and ``runQuery`` on autocommit connections (``cp_openfun``).
- ``own``: a ``ThreadPool`` of our own, one autocommit connection per
  thread (``threading.local``), the lookup run there.
- ``own-queue``: the same with :class:`popframe.threads.ThreadPoolRunner`
  (threads fed by a ``queue.SimpleQueue``) instead of Twisted's
  ``ThreadPool``: what :mod:`popframe.db.pool` does for writes.
- ``pq-reactor``: :mod:`popframe.db.pq`, libpq connections in pipeline
  mode on the reactor thread, no threads (``--pool`` connections):
  what :meth:`popframe.db.Database.query` does on PostgreSQL.
- ``psycopg-async``: psycopg 3's ``AsyncConnection``s (one per in-flight
  lookup slot, up to ``--pool``) under Twisted's asyncio reactor.

PostgreSQL and MariaDB are the test servers on 127.0.0.1 (database
``test``); each run makes its table and drops it.  SQLite is a file in a
temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USERS = 1000
TABLE = f"bench_users_{os.getpid()}"


def _connect(engine: str, sqlite_path: str | None):
    if engine == "postgresql":
        import psycopg

        return psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True)
    if engine == "pymysql":
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
    if engine == "mysqlclient":
        import MySQLdb

        return MySQLdb.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
    import sqlite3

    return sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)


def _placeholder(engine: str) -> str:
    return "?" if engine == "sqlite" else "%s"


def setup(engine: str, table: str, sqlite_path: str | None) -> None:
    conn = _connect(engine, sqlite_path)
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (name VARCHAR(64) PRIMARY KEY, password VARCHAR(200), maildrop VARCHAR(200))")
    p = _placeholder(engine)
    rows = [(f"u{i:04d}", "{SHA512-CRYPT}$6$" + "x" * 86, f"/var/mail/u{i:04d}") for i in range(USERS)]
    cur.executemany(f"INSERT INTO {table} VALUES ({p}, {p}, {p})", rows)
    conn.close()


def teardown(engine: str, table: str, sqlite_path: str | None) -> None:
    conn = _connect(engine, sqlite_path)
    conn.cursor().execute(f"DROP TABLE IF EXISTS {table}")
    conn.close()


# -- one option, in a child process ---------------------------------------------------


def child(option: str, engine: str, table: str, seconds: float, concurrency: int, pool: int,
          sqlite_path: str | None) -> dict:
    if option == "psycopg-async":
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import defer, reactor

    query = f"SELECT password, maildrop FROM {table} WHERE name = {_placeholder(engine)}"
    run = _runner(option, engine, pool, query, sqlite_path)
    done = [0]
    errors: list[str] = []
    lateness: list[float] = []
    stop_at = [0.0]

    def one() -> defer.Deferred:
        name = f"u{random.randrange(USERS):04d}"
        d = run(name)

        def next_(result):
            if not result or len(result[0]) != 2:
                errors.append(repr(result))
            done[0] += 1
            if time.monotonic() < stop_at[0]:
                return one()
            return None

        def failed(f):
            errors.append(f.getErrorMessage())

        return d.addCallback(next_).addErrback(failed)

    def tick(expected: list[float]) -> None:
        now = time.monotonic()
        lateness.append(now - expected[0])
        expected[0] = now + 0.001
        if now < stop_at[0]:
            reactor.callLater(0.001, tick, expected)

    @defer.inlineCallbacks
    def main():
        for _ in range(3):  # warm up the connections
            yield defer.gatherResults([run("u0001") for _ in range(concurrency)])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        stop_at[0] = t0 + seconds
        reactor.callLater(0.001, tick, [t0 + 0.001])
        yield defer.gatherResults([one() for _ in range(concurrency)])
        t1, r1 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        lateness.sort()
        out.update(lookups_per_s=done[0] / (t1 - t0), cpu_us_per_lookup=cpu / max(done[0], 1) * 1e6,
                   cpu_cores=cpu / (t1 - t0), errors=len(errors), first_error=errors[:1],
                   late_p50_ms=lateness[len(lateness) // 2] * 1e3,
                   late_p99_ms=lateness[int(len(lateness) * 0.99)] * 1e3)

    out: dict = {}
    d = defer.ensureDeferred(main()) if option == "psycopg-async" else main()
    d.addErrback(lambda f: out.update(error=f.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return out


def _runner(option: str, engine: str, pool: int, query: str, sqlite_path: str | None):
    from twisted.internet import defer, reactor

    if option.startswith("adbapi"):
        from twisted.enterprise import adbapi

        autocommit = option == "adbapi-autocommit"
        kw: dict = dict(cp_min=pool, cp_max=pool, cp_reconnect=True)
        if autocommit:
            def openfun(conn):
                if engine == "sqlite":
                    conn.isolation_level = None
                else:
                    conn.autocommit(True) if engine in ("pymysql", "mysqlclient") else setattr(conn, "autocommit", True)
            kw["cp_openfun"] = openfun
        if engine == "postgresql":
            cp = adbapi.ConnectionPool("psycopg", "host=127.0.0.1 port=5432 user=postgres dbname=test", **kw)
        elif engine == "pymysql":
            cp = adbapi.ConnectionPool("pymysql", host="127.0.0.1", port=3306, user="root", database="test", **kw)
        elif engine == "mysqlclient":
            cp = adbapi.ConnectionPool("MySQLdb", host="127.0.0.1", port=3306, user="root", database="test", **kw)
        else:
            cp = adbapi.ConnectionPool("sqlite3", sqlite_path, check_same_thread=False, **kw)
        return lambda name: cp.runQuery(query, (name,))

    if option in ("own", "own-queue"):
        import threading

        from twisted.internet.threads import deferToThreadPool
        from twisted.python.threadpool import ThreadPool

        local = threading.local()

        def lookup(name):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = _connect(engine, sqlite_path)
            cur = conn.cursor()
            cur.execute(query, (name,))
            rows = cur.fetchall()
            cur.close()
            return rows

        if option == "own-queue":  # popframe's runner: a SimpleQueue, no ThreadPool
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from popframe.threads import ThreadPoolRunner

            workers = ThreadPoolRunner("bench", pool, reactor)
            return lambda name: workers(lookup, name)
        tp = ThreadPool(minthreads=pool, maxthreads=pool, name="bench")
        tp.start()
        reactor.addSystemEventTrigger("during", "shutdown", tp.stop)
        return lambda name: deferToThreadPool(reactor, tp, lookup, name)

    if option == "pq-reactor":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from popframe.db import pq

        conninfo = os.environ.get("PQ_CONNINFO", "host=127.0.0.1 port=5432 user=postgres dbname=test").encode()
        connections = pq.PipelinedPool(lambda: pq.connect(reactor, conninfo, 5), pool)
        statement = query.replace("%s", "$1").encode()
        return lambda name: connections.query(statement, (name,))

    if option == "psycopg-async":
        import psycopg

        conns: list = []
        free: list = []
        waiting: list = []

        async def get():
            if free:
                return free.pop()
            if len(conns) < pool:
                c = await psycopg.AsyncConnection.connect(
                    "host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True)
                conns.append(c)
                return c
            d = defer.Deferred()
            waiting.append(d)
            return await d

        def put(c):
            if waiting:
                waiting.pop(0).callback(c)
            else:
                free.append(c)

        async def lookup(name):
            c = await get()
            try:
                cur = await c.execute(query, (name,))
                return await cur.fetchall()
            finally:
                put(c)

        return lambda name: defer.Deferred.fromFuture(__import__("asyncio").ensure_future(lookup(name)))
    raise ValueError(option)


# -- the driver -------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2, help="runs per option (the best is shown)")
    p.add_argument("--only", help="options to run, comma-separated (default: all)")
    p.add_argument("--child", nargs=3, metavar=("OPTION", "ENGINE", "SQLITE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        option, engine, sqlite_path = args.child
        print(json.dumps(child(option, engine, TABLE_ARG, args.seconds, args.concurrency, args.pool,
                               sqlite_path)))
        return

    cases = [(o, e) for e in ("postgresql", "pymysql", "mysqlclient", "sqlite")
             for o in ("adbapi", "adbapi-autocommit", "own", "own-queue")]
    cases.insert(4, ("psycopg-async", "postgresql"))
    cases.insert(5, ("pq-reactor", "postgresql"))
    if args.only:
        cases = [(o, e) for o, e in cases if o in args.only.split(",")]
    print(f"{args.concurrency} lookups in flight, pool of {args.pool}, {args.seconds:g} s per run, "
          f"best of {args.repeat}; load average {os.getloadavg()[0]:.2f}\n")
    print("| option | driver | lookups/s | CPU µs / lookup (popframe's process) | reactor timer late p50 / p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_path = str(Path(tmp) / "bench.db")
        for engine in ("postgresql", "pymysql", "sqlite"):
            setup(engine, TABLE, sqlite_path)
        try:
            for option, engine in cases:
                best: dict | None = None
                for _ in range(args.repeat):
                    r = subprocess.run(
                        [sys.executable, __file__, "--seconds", str(args.seconds), "--concurrency",
                         str(args.concurrency), "--pool", str(args.pool), "--child", option, engine,
                         sqlite_path],
                        capture_output=True, text=True, env={**os.environ, "BENCH_TABLE": TABLE})
                    try:
                        result = json.loads(r.stdout.strip().splitlines()[-1])
                    except (IndexError, ValueError):
                        result = {"error": r.stderr[-2000:]}
                    if "error" in result:
                        print(f"{option} {engine}: {result['error']}", file=sys.stderr)
                        break
                    if best is None or result["lookups_per_s"] > best["lookups_per_s"]:
                        best = result
                if best is not None:
                    errors = f" ({best['errors']} errors: {best['first_error']})" if best["errors"] else ""
                    print(f"| {option} | {engine} | {best['lookups_per_s']:,.0f}{errors} | "
                          f"{best['cpu_us_per_lookup']:.0f} | {best['late_p50_ms']:.2f} / "
                          f"{best['late_p99_ms']:.2f} |", flush=True)
        finally:
            for engine in ("postgresql", "pymysql", "sqlite"):
                teardown(engine, TABLE, sqlite_path)


TABLE_ARG = os.environ.get("BENCH_TABLE", TABLE)

if __name__ == "__main__":
    main()
