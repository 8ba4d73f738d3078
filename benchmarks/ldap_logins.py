#!/usr/bin/env python3
"""LDAP logins per second, with the checker's cache of successful binds
off and on, against a real slapd on loopback.

Starts one slapd (tests/ldap_support.py: its own config and database,
seeded with ``--users`` users ``user0``.. besides the test users) and
measures two things, each with ``cache_ttl = 0`` and ``cache_ttl = 300``:

- **checker**: ``LDAPChecker.requestAvatarId`` in this process, with
  ``--concurrency`` logins in flight, users taken round-robin: the
  directory work per login (a search as the service account and a bind
  as the user) and the checker's own overhead.  With the cache on, every
  user logs in once first (not timed), so the timed logins are all hits.
- **pop3**: whole sessions (connect, greeting, USER, PASS, STAT, QUIT)
  against ``twistd pop3 --workers 1 --auth ldap:FILE`` with empty
  Maildirs, ``--concurrency`` sessions at once from asyncio clients; the
  throttle is off (every login here succeeds anyway).  With the cache on,
  one untimed round first.

Every loop is bounded by ``--logins`` and ``--seconds``.  TLS: ``--mode``
plain (loopback ldap://), starttls or ldaps.  Prints a markdown table.

    python benchmarks/ldap_logins.py --users 200 --logins 4000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ldap_support import (  # noqa: E402
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Slapd,
    numbered_users,
    reactor_runner,
    start_slapd,
)
from twisted.cred.credentials import UsernamePassword  # noqa: E402

from popframe.auth.ldap import LDAPChecker  # noqa: E402
from popframe.auth.ldap.settings import settings_from_mapping  # noqa: E402
from popframe.testing import start_server, stop_reactor  # noqa: E402

FILTER = "(&(objectClass=inetOrgPerson)(uid=%u))"
FAILURES: list[str] = []  # the first bad reply of each failed session


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPU:
    """CPU seconds that processes spend between start() and stop()."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}

    def __enter__(self) -> CPU:
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {name: cpu_seconds(pid) - self.started[name] for name, pid in self.pids.items()}


def settings(slapd: Slapd, mode: str, cache_ttl: float) -> dict[str, Any]:
    return {
        "url": slapd.ldaps_url if mode == "ldaps" else slapd.url,
        "starttls": mode == "starttls", "ca_file": str(slapd.ca_file),
        "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD, "base": SUFFIX,
        "filter": FILTER, "cache_ttl": cache_ttl, "timeout": 10,
    }


def toml(values: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(f"{key} = {value(v)}\n" for key, v in values.items())


# -- checker ---------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    cache_ttl: float
    logins: int
    seconds: float
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process


def checker_rate(slapd: Slapd, mode: str, cache_ttl: float, users: list[tuple[str, str]],
                 logins: int, concurrency: int, seconds: float) -> Row:
    reactor = reactor_runner()
    checker = LDAPChecker(settings_from_mapping(settings(slapd, mode, cache_ttl), "bench.toml"),
                          reactor=reactor.reactor)

    def run(count: int) -> Any:
        from twisted.internet.defer import Deferred

        done: Deferred[tuple[float, int]] = Deferred()
        state = {"next": 0, "finished": 0, "errors": 0, "running": 0, "launching": False}
        started = time.perf_counter()
        deadline = started + seconds

        def finished(result: Any) -> None:
            state["running"] -= 1
            state["finished" if isinstance(result, bytes) else "errors"] += 1
            launch()

        def launch() -> None:
            # A loop, not recursion: cache hits fire at once.
            if state["launching"]:
                return
            state["launching"] = True
            while (state["running"] < concurrency and state["next"] < count
                   and time.perf_counter() < deadline):
                user, password = users[state["next"] % len(users)]
                state["next"] += 1
                state["running"] += 1
                checker.requestAvatarId(
                    UsernamePassword(user.encode(), password.encode())).addBoth(finished)
            state["launching"] = False
            if state["running"] == 0 and not done.called:
                done.callback((time.perf_counter() - started, state["finished"]))

        launch()
        return done

    if cache_ttl:
        reactor.call(run, len(users), timeout=seconds + 60)  # warm: every user once
    assert slapd.process is not None
    with CPU(popframe=os.getpid(), slapd=slapd.process.pid) as cpu:
        elapsed, finished = reactor.call(run, logins, timeout=seconds + 60)
    reactor.call(checker.close)
    return Row("checker", cache_ttl, finished, elapsed, logins - finished, cpu.used)


# -- pop3 -------------------------------------------------------------------------------


async def _session(port: int, user: str, password: str) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        replies = []
        replies.append(await reader.readline())
        for command in (f"USER {user}", f"PASS {password}", "STAT", "QUIT"):
            writer.write(command.encode() + b"\r\n")
            replies.append(await reader.readline())
        bad = [reply for reply in replies if not reply.startswith(b"+OK")]
        if bad:
            FAILURES.append(bad[0].decode(errors="replace").strip())
        return not bad
    finally:
        writer.close()


async def _sessions(port: int, users: list[tuple[str, str]], count: int, concurrency: int,
                    seconds: float) -> tuple[float, int, int]:
    queue = list(range(count))
    ok = errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal ok, errors
        while queue and time.perf_counter() < deadline:
            n = queue.pop()
            user, password = users[n % len(users)]
            try:
                if await asyncio.wait_for(_session(port, user, password), 30):
                    ok += 1
                else:
                    errors += 1
            except (TimeoutError, OSError) as error:
                FAILURES.append(repr(error))
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, ok, errors


def pop3_rate(slapd: Slapd, mode: str, cache_ttl: float, users: list[tuple[str, str]],
              logins: int, concurrency: int, seconds: float) -> Row:
    with tempfile.TemporaryDirectory(prefix="popframe-ldap-bench-") as root:
        config = Path(root) / "ldap.toml"
        config.write_text(toml(settings(slapd, mode, cache_ttl)))
        for user, _ in users:
            for sub in ("new", "cur", "tmp"):
                (Path(root) / "mail" / user / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        server = start_server(
            ["--listen", "tcp:0:interface=127.0.0.1:backlog=1024", "--workers", "1",
             "--store", f"maildir:{root}/mail/%u/Maildir", "--auth", f"ldap:{config}",
             "--throttle-base", "0", "--max-auth-failures", "0", "--max-ip-failures", "0",
             "--max-connections-per-ip", "0"], Path(root))
        try:
            port = server.ports[0]
            if cache_ttl:
                asyncio.run(_sessions(port, users, len(users), concurrency, seconds))
            assert slapd.process is not None
            with CPU(popframe=server.process.pid, slapd=slapd.process.pid) as cpu:
                elapsed, ok, errors = asyncio.run(
                    _sessions(port, users, logins, concurrency, seconds))
        finally:
            server.stop()
    return Row("pop3 sessions", cache_ttl, ok, elapsed, errors, cpu.used)


# -- python-ldap, for comparison ------------------------------------------------------------


def python_ldap_rate(slapd: Slapd, mode: str, users: list[tuple[str, str]], logins: int,
                     threads: int, seconds: float) -> Row:
    """The same search-then-bind with python-ldap (libldap) in ``threads``
    threads, each with its own two connections: the best case for a
    blocking library (no hand-off to and from a reactor).  TLS verified as
    popframe does it (libldap's own hostname check)."""
    import threading

    import ldap  # python-ldap: not a popframe dependency

    url = slapd.ldaps_url if mode == "ldaps" else slapd.url

    def connection() -> Any:
        conn = ldap.initialize(url)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)
        conn.set_option(ldap.OPT_TIMEOUT, 10)
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(slapd.ca_file))
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        if mode == "starttls":
            conn.start_tls_s()
        return conn

    lock = threading.Lock()
    counter = {"next": 0, "ok": 0}
    deadline = time.perf_counter() + seconds

    def work() -> None:
        searcher, binder = connection(), connection()
        searcher.simple_bind_s(SERVICE_DN, SERVICE_PASSWORD)
        while time.perf_counter() < deadline:
            with lock:
                n = counter["next"]
                if n >= logins:
                    break
                counter["next"] = n + 1
            user, password = users[n % len(users)]
            [(dn, _)] = searcher.search_ext_s(SUFFIX, ldap.SCOPE_SUBTREE, f"(&(objectClass=inetOrgPerson)(uid={user}))",
                                              ["1.1"], sizelimit=2)
            binder.simple_bind_s(dn, password)
            with lock:
                counter["ok"] += 1
        searcher.unbind_s()
        binder.unbind_s()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    assert slapd.process is not None
    with CPU(popframe=os.getpid(), slapd=slapd.process.pid) as cpu:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(seconds + 30)
    return Row(f"python-ldap, {threads} threads", 0, counter["ok"],
               time.perf_counter() - started, 0, cpu.used)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--logins", type=int, default=4000, help="timed logins per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60, help="upper bound per measurement")
    parser.add_argument("--mode", choices=("plain", "starttls", "ldaps"), default="plain")
    parser.add_argument("--ttl", type=float, default=300, help="cache_ttl when the cache is on")
    parser.add_argument("--python-ldap", action="store_true",
                        help="also time python-ldap in threads (pip install python-ldap)")
    args = parser.parse_args()
    os.environ.setdefault("PATH", "/usr/bin:/bin")
    users = [(u.uid, u.password) for u in numbered_users(args.users)]
    slapd_run = start_slapd(extra_users=args.users)
    slapd = next(slapd_run)
    rows: list[Row] = []
    try:
        for cache_ttl in (0.0, args.ttl):
            rows.append(checker_rate(slapd, args.mode, cache_ttl, users, args.logins,
                                     args.concurrency, args.seconds))
        if args.python_ldap:
            rows.append(python_ldap_rate(slapd, args.mode, users, args.logins, args.concurrency,
                                         args.seconds))
        for cache_ttl in (0.0, args.ttl):
            rows.append(pop3_rate(slapd, args.mode, cache_ttl, users, args.logins,
                                  args.concurrency, args.seconds))
    finally:
        next(slapd_run, None)
        stop_reactor()  # its resolver's threads would keep the process alive
    print(f"{args.users} users, {args.concurrency} at once, {args.mode}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| what | cache_ttl | logins/s | logins | errors | CPU ms per login: client side | slapd |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        per = {name: 1000 * used / max(row.logins, 1) for name, used in row.cpu.items()}
        print(f"| {row.what} | {row.cache_ttl:g} | {row.logins / row.seconds:,.0f} | {row.logins} "
              f"| {row.errors} | {per.get('popframe', 0):.3f} | {per.get('slapd', 0):.3f} |")
    for reply in sorted(set(FAILURES)):
        print(f"\n{FAILURES.count(reply)} sessions failed with: {reply}")
    return 1 if any(row.errors for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
