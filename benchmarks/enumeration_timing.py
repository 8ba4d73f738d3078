#!/usr/bin/env python3
"""Can a client tell unknown user names from wrong passwords by the time
the server takes to say no?

Starts ``twistd -n pop3`` on 127.0.0.1 (a passwd-file of ``--users`` users
with ``--scheme`` hashes, Maildirs, in a temporary directory) with the
failed-login throttle off (``--throttle-base 0 --max-auth-failures 0
--max-ip-failures 0``: its delays are the same for both kinds and would
only hide the difference), then times ``--count`` failed ``PASS`` commands
of each kind, interleaved in a random order over persistent connections:

- unknown:  ``USER <no such user>`` / ``PASS <anything>``
- wrong:    ``USER <existing user>`` / ``PASS <wrong password>``
- control:  the same as "wrong" on a third connection, so the table shows
            how far two identical series differ on this machine (the noise).

Each time is from sending ``PASS`` to reading the ``-ERR`` line.  Prints a
markdown table of median, p90 and mean per series and the differences
between medians; exits 1 if the replies differ or if unknown-vs-wrong
differs by more than ``--limit-percent`` of the median (default 10) and by
more than 3 times control-vs-wrong (the noise of a busy machine).

    python benchmarks/enumeration_timing.py --count 400
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from popframe.auth.schemes import make_hash
from popframe.testing import start_server

FAILED = b"-ERR [AUTH] authentication failed\r\n"


def setup(root: Path, users: int, scheme: str) -> list[str]:
    """A passwd-file of ``users`` users (user0..), Maildirs; the server's arguments."""
    lines = []
    for n in range(users):
        lines.append(f"user{n}:{make_hash(scheme, f'password {n}'.encode())}::::::\n")
        for sub in ("new", "cur", "tmp"):
            (root / "mail" / f"user{n}" / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    (root / "users").write_text("".join(lines))
    return [
        "--listen", "tcp:0:interface=127.0.0.1",
        "--store", f"maildir:{root}/mail/%u/Maildir",
        "--auth", f"passwd-file:{root}/users",
        "--workers", "1",
        "--throttle-base", "0", "--max-auth-failures", "0", "--max-ip-failures", "0",
    ]


class Client:
    """One POP3 connection that keeps failing to log in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.line()  # greeting

    def line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise SystemExit("the server hung up")
        return line

    def attempt(self, user: str, password: str) -> tuple[float, bytes]:
        self.sock.sendall(f"USER {user}\r\n".encode())
        self.line()
        start = time.perf_counter()
        self.sock.sendall(f"PASS {password}\r\n".encode())
        reply = self.line()
        return time.perf_counter() - start, reply

    def close(self) -> None:
        self.sock.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help="failed logins per series")
    parser.add_argument("--users", type=int, default=100, help="users in the passwd-file")
    parser.add_argument("--scheme", default="SHA512-CRYPT", help="their password scheme")
    parser.add_argument("--warmup", type=int, default=20, help="untimed attempts per series first")
    parser.add_argument("--limit-percent", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="keep the files here instead of a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="popframe-enum-") as temporary:
        root = Path(args.workdir or temporary)
        root.mkdir(parents=True, exist_ok=True)
        server = start_server(setup(root, args.users, args.scheme), root)
        try:
            return measure(server.port, args)
        finally:
            server.stop()


def measure(port: int, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    series = {
        # The same password for every series: SHA-crypt's cost depends on
        # the password's length.
        "unknown": lambda: (f"nobody{rng.randrange(10**9)}", "not the password"),
        "wrong": lambda: (f"user{rng.randrange(args.users)}", "not the password"),
        "control": lambda: (f"user{rng.randrange(args.users)}", "not the password"),
    }
    clients = {name: Client(port) for name in series}
    times: dict[str, list[float]] = {name: [] for name in series}
    replies: set[bytes] = set()
    order = [name for name in series for _ in range(args.warmup + args.count)]
    rng.shuffle(order)
    done = dict.fromkeys(series, 0)
    for name in order:
        took, reply = clients[name].attempt(*series[name]())
        replies.add(reply)
        done[name] += 1
        if done[name] > args.warmup:
            times[name].append(took)
    for client in clients.values():
        client.close()

    ms = 1000.0
    print(f"{args.count} failed logins per series, {args.scheme}, {args.users} users, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| series | median ms | p90 ms | mean ms |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * ms:.3f} | "
              f"{percentile(values, 0.9) * ms:.3f} | {statistics.fmean(values) * ms:.3f} |")
    median = {name: statistics.median(values) for name, values in times.items()}
    p90 = {name: percentile(values, 0.9) for name, values in times.items()}
    difference = median["unknown"] - median["wrong"]
    noise = median["control"] - median["wrong"]
    percent = 100 * difference / median["wrong"]
    print()
    print(f"unknown - wrong:   median {difference * ms:+.3f} ms ({percent:+.1f}%), "
          f"p90 {(p90['unknown'] - p90['wrong']) * ms:+.3f} ms")
    print(f"control - wrong:   median {noise * ms:+.3f} ms "
          f"({100 * noise / median['wrong']:+.1f}%), "
          f"p90 {(p90['control'] - p90['wrong']) * ms:+.3f} ms  (two identical series: the noise)")
    print(f"replies seen: {sorted(replies)}")
    if replies != {FAILED}:
        print("FAIL: the replies differ")
        return 1
    # On a busy machine two identical series differ too: only a difference
    # well above that noise counts.
    if abs(percent) > args.limit_percent and abs(difference) > 3 * abs(noise):
        print(f"FAIL: unknown and wrong differ by more than {args.limit_percent}% "
              "and by more than 3 times the noise")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
