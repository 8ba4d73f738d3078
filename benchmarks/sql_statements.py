#!/usr/bin/env python3
"""PostgreSQL's own CPU per statement of a POP3 session on the SQL store:
what the database adds to each login and drain, beside popframe's CPU.

    python benchmarks/sql_statements.py [--users 300 --messages 20 --seed 1] [-n 1500]

Loads the benchmark corpus into a fresh database (as ``run.py`` does for
``sql-postgresql``), then runs each statement the store and the SQL checker
send, one at a time on one connection (prepared, binary rows, as
``popframe.db.pq`` sends them), and prints the CPU of the PostgreSQL server's
processes per statement (``/proc``, so run it on a quiet machine) and the
client's.  "a user's messages": part 0 of every message of a user in one
statement (what the read-ahead asks, here all at once); "the same user
again": one user's, so its pages stay in ``shared_buffers``.  "..., in
N-octet rows": the same octets from a copy of the part 0s split into rows
of ``--part-size`` octets (small enough to stay in the heap row: no TOAST
chunks to reassemble).  ``--socket``: over PostgreSQL's Unix-domain socket
instead of TCP to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus as corpus_mod  # noqa: E402
import servers as srv  # noqa: E402

from popframe.db.engines import engine_for  # noqa: E402
from popframe.db.url import parse_url  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import psycopg

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-n", type=int, default=1500, help="statements per kind")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/popbench"))
    p.add_argument("--part-size", type=int, default=8000,
                   help="octets per row of the re-split copy of the part 0s (0: no copy)")
    p.add_argument("--socket", action="store_true",
                   help="connect over the Unix-domain socket instead of TCP")
    a = p.parse_args(argv)
    corpus = a.workdir / f"corpus-s{a.seed}-u{a.users}-m{a.messages}-sha512-crypt-b0-h0"
    manifest = corpus_mod.load_or_generate(corpus, users=a.users, messages=a.messages, seed=a.seed,
                                           scheme="SHA512-CRYPT", big_mb=0, huge=0,
                                           lf_fraction=0.05)
    users = sorted(u for u in manifest["users"] if u.startswith("u"))
    kind = "sql-postgresql+socket" if a.socket else "sql-postgresql"
    server = srv.make_server(kind, a.workdir / "sql-statements", corpus, srv.REPO)
    shutil.rmtree(server.dir, ignore_errors=True)
    server.prepare()  # the database and its rows; no popframe process is needed
    try:
        server.copy_users(users)
        # popframe's own URL (socket=...) as libpq's connection string
        conninfo = engine_for(parse_url(server.dsn)).conninfo().decode()  # type: ignore[attr-defined]
        with psycopg.connect(conninfo, autocommit=True, prepare_threshold=0) as connection:
            cursor = connection.cursor(binary=True)
            ids = {user: [row[0] for row in cursor.execute(
                "SELECT id FROM popframe_messages WHERE maildrop = %s ORDER BY id",
                (user,)).fetchall()] for user in users}
            sizes = dict(cursor.execute(
                "SELECT m.maildrop, sum(octet_length(p.data)) FROM popframe_message_parts p "
                "JOIN popframe_messages m ON m.id = p.message_id WHERE p.part = 0 "
                "GROUP BY m.maildrop").fetchall())
            octets = sum(sizes.values())
            buffers = cursor.execute("SHOW shared_buffers").fetchone()[0]
            if a.part_size:
                resplit(cursor, a.part_size)

            def run(sql: str, params: Callable[[str], tuple[Any, ...]]) -> Callable[[str], None]:
                return lambda user: cursor.execute(sql, params(user)).fetchall()

            # name, statement, how many, the octets of part 0s it reads per user
            kinds: list[tuple[str, Callable[[str], Any], int, Callable[[str], int]]] = [
                ("SELECT 1", run("SELECT 1", lambda u: ()), a.n, lambda u: 0),
                ("the login's lookup", run(
                    "SELECT password, maildrop, login_delay, expire, enabled FROM popframe_users "
                    "WHERE name = %s", lambda u: (u,)), a.n, lambda u: 0),
                ("lock and unlock", lambda u: (
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", (hash(u) & 0xFFFFFF,)),
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (hash(u) & 0xFFFFFF,))), a.n,
                 lambda u: 0),
                ("the listing", run(
                    "SELECT id, uid, size, ready, parts FROM popframe_messages "
                    "WHERE maildrop = %s AND hidden = %s ORDER BY id", lambda u: (u, False)), a.n,
                 lambda u: 0),
                ("a user's messages", run(
                    "SELECT message_id, data FROM popframe_message_parts "
                    "WHERE part = 0 AND message_id = ANY(%s)", lambda u: (ids[u],)), a.n // 3,
                 lambda u: sizes[u]),
                ("the same user again", run(
                    "SELECT message_id, data FROM popframe_message_parts "
                    "WHERE part = 0 AND message_id = ANY(%s)", lambda u: (ids[users[0]],)), a.n // 3,
                 lambda u: sizes[users[0]]),
            ]
            if a.part_size:
                kinds.append((f"a user's messages, in {a.part_size}-octet rows", run(
                    "SELECT message_id, part, data FROM popframe_parts_resplit "
                    "WHERE message_id = ANY(%s) ORDER BY message_id, part", lambda u: (ids[u],)),
                    a.n // 3, lambda u: sizes[u]))
            print(f"corpus: {len(users)} users, part 0s {octets / len(users) / 1024:.0f} KiB "
                  f"per user on average; shared_buffers {buffers}\n")
            print("| statement | PostgreSQL CPU µs | per KiB read | client CPU µs | wall µs |")
            print("| --- | --- | --- | --- | --- |")
            for name, call, count, read in kinds:
                for user in users[:30]:
                    call(user)
                database, client, wall = server.database_cpu(), time.process_time(), time.perf_counter()
                for i in range(count):
                    call(users[i % len(users)])
                database = server.database_cpu() - database
                client, wall = time.process_time() - client, time.perf_counter() - wall
                kib = sum(read(users[i % len(users)]) for i in range(count)) / 1024
                per_kib = f"{database * 1e6 / kib:.2f}" if kib else "–"
                print(f"| {name} | {database / count * 1e6:.0f} | {per_kib} "
                      f"| {client / count * 1e6:.0f} | {wall / count * 1e6:.0f} |")
    finally:
        server.stop()


def resplit(cursor: Any, size: int) -> None:
    """A copy of every part 0 in rows of ``size`` octets, stored as the
    store's parts are (no compression; rows up to 8160 octets in the heap)."""
    cursor.execute("CREATE TABLE popframe_parts_resplit (message_id BIGINT, part INTEGER, "
                   "data BYTEA NOT NULL, PRIMARY KEY (message_id, part))")
    cursor.execute("ALTER TABLE popframe_parts_resplit ALTER COLUMN data SET STORAGE EXTERNAL")
    cursor.execute("ALTER TABLE popframe_parts_resplit SET (toast_tuple_target = 8160)")
    cursor.execute(
        "INSERT INTO popframe_parts_resplit SELECT p.message_id, k, substring(p.data FROM k * %s + 1 "
        "FOR %s) FROM popframe_message_parts p, generate_series(0, (octet_length(p.data) - 1) / %s) k "
        "WHERE p.part = 0", (size, size, size))
    cursor.execute("VACUUM ANALYZE popframe_parts_resplit")


if __name__ == "__main__":
    main()
