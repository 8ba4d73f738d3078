"""Delivery throughput, side by side in one run: popframe's LDA
(``popframe deliver``) and LMTP listener against Dovecot's ``dovecot-lda``
and LMTP server, into Maildir and mbox, on this machine.

    sudo bash benchmarks/setup.sh        # Dovecot, dovecot-lmtpd, the popbench user
    python3 benchmarks/delivery.py [--messages 300] [--concurrency 4]

Each case delivers the same 10 KB message ``--messages`` times to one of
``--users`` users, ``--concurrency`` at a time (an MTA runs several local
deliveries at once: Postfix's default is 20 per transport, 2 cores here):
the LDAs as one process per message, LMTP as that many connections each
sending one transaction after another (as Postfix reuses connections).
Every delivered message is counted on disk afterwards.  Both servers
flush each message to disk before they answer (popframe always, Dovecot
with ``mail_fsync = optimized``, its default).  The cases run one after
another, twice, interleaved; the table gives the median.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import REPO, free_port, twistd  # noqa: E402

DOVECOT_USER = "popbench"
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"


def message(size: int = 10 * 1024) -> bytes:
    head = (b"From: Sender <sender@example.net>\nTo: user@example.test\nSubject: benchmark\n"
            b"Message-ID: <bench@example.net>\nDate: Thu, 04 Jan 2024 10:00:00 +0000\n\n")
    line = b"The quick brown fox jumps over the lazy dog; From here. 0123456789\n"
    return head + line * ((size - len(head)) // len(line) + 1)


def run_parallel(count: int, concurrency: int, one: Callable[[int], None]) -> float:
    """Call ``one(i)`` for i in range(count) in ``concurrency`` threads;
    the wall time."""
    lock = threading.Lock()
    next_index = [0]
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= count or errors:
                return
            try:
                one(i)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


# -- the LDAs ---------------------------------------------------------------------------------


def lda_case(argv_for: Callable[[int], list[str]], data: bytes, **popen: object) -> Callable[[int], None]:
    def one(i: int) -> None:
        result = subprocess.run(argv_for(i), input=data, capture_output=True, **popen)  # type: ignore[call-overload]
        if result.returncode != 0:
            raise RuntimeError(f"{argv_for(i)[:3]}: exit {result.returncode}: {result.stderr!r}")
    return one


# -- LMTP -----------------------------------------------------------------------------------


def lmtp_case(connect: Callable[[], smtplib.LMTP], users: list[str], data: bytes,
              concurrency: int, count: int) -> float:
    local = threading.local()

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = connect()
            client.ehlo("bench.example.test")
        client.sendmail("sender@example.net", [users[i % len(users)]], data)

    try:
        return run_parallel(count, concurrency, one)
    finally:
        pass


class Process:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log = open(cwd / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def wait_for(path_or_port: Path | int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if isinstance(path_or_port, Path):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path_or_port))
            else:
                socket.create_connection(("127.0.0.1", path_or_port), 2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {path_or_port}")


def dovecot_conf(base: Path, mail_location: str, port: int) -> str:
    return f"""\
protocols = lmtp
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
instance_name = popbench-lmtp-{port}
ssl = no
mail_location = {mail_location}
mail_uid = {DOVECOT_USER}
mail_gid = {DOVECOT_USER}
first_valid_uid = 1
mail_fsync = optimized
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={DOVECOT_USER} gid={DOVECOT_USER} home={base}/home/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  process_min_avail = 2
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"""


def dovecot_location(kind: str, base: Path, mail: str) -> str:
    if kind == "maildir":
        return f"maildir:{base}/{mail}/%n/Maildir"
    return f"mbox:{base}/home/%n/mail:INBOX={base}/{mail}/%n"


def count_delivered(kind: str, root: Path) -> int:
    if kind == "maildir":
        return sum(len(list(p.iterdir())) for p in root.glob("*/Maildir/new"))
    return sum(f.read_bytes().count(b"\nSubject: benchmark\n") for f in root.iterdir()
               if f.is_file() and not f.name.startswith(".") and not f.name.endswith(".lock"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="per LMTP case")
    parser.add_argument("--lda-messages", type=int, default=100,
                        help="per LDA case (a process each: slower)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not os.path.exists(DOVECOT_LDA) or not os.path.exists("/usr/lib/dovecot/lmtp"):
        raise SystemExit("run benchmarks/setup.sh first (dovecot-core, dovecot-lmtpd)")
    pw = pwd.getpwnam(DOVECOT_USER)
    data = message()
    users = [f"user{n}" for n in range(args.users)]
    python = [sys.executable, "-m", "popframe", "deliver"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    results: dict[str, list[float]] = {}

    def record(name: str, kind: str, root: Path, seconds: float) -> None:
        wanted = args.lda_messages if "lda" in name or "deliver" in name else args.messages
        found = count_delivered(kind, root)
        if found != wanted:
            raise RuntimeError(f"{name}: {found} of {wanted} messages on disk")
        results.setdefault(name, []).append(wanted / seconds)
        print(f"  {name:34} {wanted / seconds:8.1f} messages/s", flush=True)

    for round_number in range(args.rounds):
        print(f"round {round_number + 1}", flush=True)
        for kind in ("maildir", "mbox"):
            base = Path(tempfile.mkdtemp(prefix=f"popframe-delivery-bench-{kind}-"))
            os.chmod(base, 0o755)
            try:
                # popframe deliver
                mail = base / "pf-lda"
                mail.mkdir()
                store = f"maildir:{mail}/%u/Maildir" if kind == "maildir" else f"mbox:{mail}/%u"
                seconds = run_parallel(args.lda_messages, args.concurrency, lda_case(
                    lambda i, store=store: [*python, "--store", store, "--user",  # type: ignore[misc]
                                            users[i % len(users)]],
                    data, env=env))
                record(f"popframe deliver -> {kind}", kind, mail, seconds)
                # Dovecot: one instance (its auth service answers dovecot-lda's
                # user lookups, as on a real host), LMTP and the LDA into
                # mail directories of their own.
                dove = base / "dovecot"
                for sub in ("lda-mail", "lmtp-mail", "home"):
                    (dove / sub).mkdir(parents=True)
                port = free_port()
                (dove / "dovecot.conf").write_text(
                    dovecot_conf(dove, dovecot_location(kind, dove, "lmtp-mail"), port))
                subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(dove)], check=True)
                server = Process(["dovecot", "-F", "-c", str(dove / "dovecot.conf")], dove)
                try:
                    wait_for(port)
                    lda_location = dovecot_location(kind, dove, "lda-mail")
                    seconds = run_parallel(args.lda_messages, args.concurrency, lda_case(
                        lambda i, dove=dove, lda_location=lda_location: [  # type: ignore[misc]
                                   DOVECOT_LDA, "-c", str(dove / "dovecot.conf"),
                                   "-o", f"mail_location={lda_location}",
                                   "-d", users[i % len(users)], "-f", "sender@example.net"], data))
                    record(f"dovecot-lda -> {kind}", kind, dove / "lda-mail", seconds)
                    seconds = lmtp_case(lambda port=port: smtplib.LMTP("127.0.0.1", port), users, data,
                                        args.concurrency, args.messages)
                    record(f"Dovecot LMTP -> {kind}", kind, dove / "lmtp-mail", seconds)
                finally:
                    server.stop()
                # popframe LMTP
                lmtp = base / "pf-lmtp"
                (lmtp / "mail").mkdir(parents=True)
                pstore = (f"maildir:{lmtp}/mail/%u/Maildir" if kind == "maildir"
                          else f"mbox:{lmtp}/mail/%u")
                sock = lmtp / "lmtp.sock"
                server = Process([*twistd(), "-n", "--pidfile=", "--logfile=-", "pop3",
                                  "--listen", "tcp:0:interface=127.0.0.1", "--lmtp", f"unix:{sock}",
                                  "--store", pstore, "--auth", "memory:x:y", "--workers", "1"],
                                 lmtp, env)
                try:
                    wait_for(sock)
                    seconds = lmtp_case(lambda sock=sock: smtplib.LMTP(str(sock)), users, data,
                                        args.concurrency, args.messages)
                finally:
                    server.stop()
                record(f"popframe LMTP -> {kind}", kind, lmtp / "mail", seconds)
            finally:
                shutil.rmtree(base, ignore_errors=True)

    print(f"\n{args.messages} messages per LMTP case, {args.lda_messages} per LDA case, "
          f"{len(data)} octets each, concurrency {args.concurrency}, median of {args.rounds} "
          f"rounds (messages/s):")
    print("| case | Maildir | mbox |\n| --- | --- | --- |")
    for way in ("popframe deliver", "dovecot-lda", "popframe LMTP", "Dovecot LMTP"):
        cells = [f"{statistics.median(results[f'{way} -> {kind}']):.1f}" for kind in ("maildir", "mbox")]
        print(f"| {way} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
