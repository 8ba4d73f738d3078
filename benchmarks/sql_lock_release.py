#!/usr/bin/env python3
"""How soon is a maildrop lock free after its holder is SIGKILLed?

    python benchmarks/sql_lock_release.py [--runs 20]

For PostgreSQL and MariaDB (the test servers on 127.0.0.1): a child
process takes a maildrop lock with the locker popframe uses for the
engine (``locker_for``: ``ReactorLocker`` on PostgreSQL, ``DatabaseLocker``
on MariaDB; their lock connection: ``pg_try_advisory_lock`` /
``GET_LOCK``), says so, and waits;
this process SIGKILLs it and tries the same lock from another connection
every 0.2 ms until it is granted.  Prints the time from the kill to the
grant: the kernel closing the dead process's socket, and the database
server noticing and dropping the session's locks.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from popframe.db import Database, parse_url  # noqa: E402
from popframe.db.locks import DatabaseLocker  # noqa: E402

URLS = {"postgresql": "postgresql://postgres@127.0.0.1:5432/test",
        "mariadb": "mysql://root@127.0.0.1:3306/test"}

HOLDER = """
import sys, time
from twisted.internet import reactor
from popframe.db import Database, parse_url
from popframe.db.locks import locker_for
locker = locker_for(Database(parse_url(sys.argv[1])))
def held(lock):
    print("held", flush=True)
locker.acquire("release-test").addCallbacks(held, lambda f: (print(f), reactor.stop()))
reactor.run()
"""


def once(url: str) -> float:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__)
                                                                            .resolve().parent.parent)})
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    locker = DatabaseLocker(Database(parse_url(url)))
    token = locker.token("release-test")
    connection = locker.engine.connect()
    cursor = connection.cursor()
    assert not locker._try_lock(cursor, token)
    os.kill(child.pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 30
    while not locker._try_lock(cursor, token):
        if time.monotonic() > deadline:
            raise RuntimeError("not freed within 30 s")
        time.sleep(0.0002)
    freed = time.monotonic() - killed
    locker._unlock(cursor, token)
    connection.close()
    child.wait()
    return freed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    a = p.parse_args()
    print("| database | runs | freed after SIGKILL: median | max |")
    print("| --- | --- | --- | --- |")
    for name, url in URLS.items():
        times = [once(url) for _ in range(a.runs)]
        print(f"| {name} | {a.runs} | {statistics.median(times) * 1000:.2f} ms | "
              f"{max(times) * 1000:.2f} ms |", flush=True)


if __name__ == "__main__":
    main()
