"""Open a 100,000-message maildrop again and again: PASS → STAT → UIDL.

    python benchmarks/huge_open.py [--messages 100000] [--workers 1 2]
        [--sessions 5] [--into new|cur] [--root DIR] [--keep]

Makes one maildrop of small messages (in ``new/``, as a first session
finds fresh mail, or in ``cur/``), then for each ``--workers`` value runs
``twistd -n pop3`` on 127.0.0.1 (port 0) over a fresh copy of it and times
sessions back to back, each from sending PASS: its reply (sent once the
maildrop is open), the STAT reply, and the end of the UIDL listing.  Session 1 lists the maildrop from scratch (and
reads every message once for its size); session 2 starts right after it;
with ``--workers 2`` the sessions alternate between the two workers
(the other one SIGSTOPped, so the kernel hands the connection to this
one), so session 2 is served by a process that has never seen the
maildrop.  Then the server is restarted and two more sessions run.

``--dovecot`` also times Dovecot (Debian's dovecot-pop3d, the settings of
``servers.dovecot_config``) on its own fresh copy of the same maildrop:
its first open and the sessions after it, from PASS the same way.  The
messages' names carry no ``,S=``/``,W=`` (as Postfix writes them), so
each server's first open reads every message once to size it.
``--cold`` evicts the copy's files from the page cache before the first
session (``posix_fadvise(DONTNEED)``), as after a migration or a reboot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from popframe.auth.schemes import make_hash
from popframe.testing import start_server

USER = "huge"
PASSWORD = "huge-password"


def make_maildrop(maildir: Path, count: int, into: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    suffix = ":2," if into == "cur" else ""
    for n in range(count):
        name = f"{1700000000 + n // 4}.V801I{n:x}M{n * 7919 % 1000003}.bench{suffix}"
        # Half LF (as Postfix stores mail), half CRLF (wire-ready).
        body = (
            b"Subject: message %d\r\n\r\nhello\r\n" % n
            if n % 2
            else b"Subject: message %d\n\nhello\n" % n
        )
        (maildir / into / name).write_bytes(body)


def make_home(root: Path, count: int, into: str) -> Path:
    """A pristine maildrop and passwd-file under ``root`` (made once)."""
    pristine = root / f"pristine-{count}-{into}"
    if not (pristine / "done").exists():
        shutil.rmtree(pristine, ignore_errors=True)
        started = time.monotonic()
        make_maildrop(pristine / USER / "Maildir", count, into)
        (pristine / "users").write_text(f"{USER}:{make_hash('PLAIN', PASSWORD.encode())}::::::\n")
        (pristine / "done").write_text("")
        print(f"made {count} messages in {time.monotonic() - started:.1f}s", flush=True)
    return pristine


def read_until(sock: socket.socket, buffer: bytearray, end: bytes) -> bytes:
    searched = 0  # what was searched already (a 4 MB UIDL comes in many reads)
    while True:
        at = buffer.find(end, searched)
        if at >= 0:
            reply = bytes(buffer[: at + len(end)])
            del buffer[: at + len(end)]
            return reply
        searched = max(0, len(buffer) - len(end) + 1)
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {end!r}")
        buffer += chunk


def session(port: int) -> tuple[float, float, float, int]:
    """(PASS → +OK ms, PASS → STAT ms, PASS → UIDL end ms, messages)."""
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        buffer = bytearray()
        read_until(sock, buffer, b"\r\n")
        sock.sendall(f"USER {USER}\r\n".encode())
        read_until(sock, buffer, b"\r\n")
        started = time.perf_counter()
        sock.sendall(f"PASS {PASSWORD}\r\n".encode())
        reply = read_until(sock, buffer, b"\r\n")
        pass_at = time.perf_counter()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"PASS: {reply!r}")
        sock.sendall(b"STAT\r\n")
        stat = read_until(sock, buffer, b"\r\n")
        stat_at = time.perf_counter()
        sock.sendall(b"UIDL\r\n")
        read_until(sock, buffer, b"\r\n.\r\n")
        uidl_at = time.perf_counter()
        sock.sendall(b"QUIT\r\n")
        read_until(sock, buffer, b"\r\n")
    times = [(at - started) * 1e3 for at in (pass_at, stat_at, uidl_at)]
    return times[0], times[1], times[2], int(stat.split()[1])


@contextmanager
def only(pids: list[int], chosen: int | None) -> Iterator[None]:
    """SIGSTOP every worker but ``chosen`` (None: run them all)."""
    others = [pid for pid in pids if chosen is not None and pid != chosen]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        for pid in others:
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "Tt":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {pid} did not stop")
                time.sleep(0.001)
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def run(root: Path, pristine: Path, workers: int, sessions: int, cold: bool = False) -> None:
    home = root / f"w{workers}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(pristine, home, symlinks=True)
    if cold:
        evict(home / USER)
    args = [
        "--listen", "tcp:0:interface=127.0.0.1",
        "--store", f"maildir:{home}/%u/Maildir",
        "--auth", f"passwd-file:{home}/users",
        "--workers", str(workers),
        "--max-connections-per-ip", "0",
    ]  # fmt: skip
    for phase in ("fresh", "restarted"):
        server = start_server(args, home)
        try:
            pids = server.children() if workers > 1 else [server.pid]
            for n in range(1, (sessions if phase == "fresh" else 2) + 1):
                chosen = pids[(n - 1) % len(pids)] if workers > 1 else None
                with only(pids, chosen):
                    pass_ms, stat_ms, uidl_ms, count = session(server.port)
                print(
                    f"workers={workers} {phase:9} session {n}: served by {chosen or server.pid}"
                    f"  PASS→+OK {pass_ms:8.1f} ms  →STAT {stat_ms:8.1f} ms"
                    f"  →UIDL end {uidl_ms:8.1f} ms"
                    f"  ({count} messages)",
                    flush=True,
                )
        finally:
            server.stop()


def evict(directory: Path) -> None:
    """Drop ``directory``'s files from the page cache (where the kernel
    lets us: clean pages of files we can open)."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_dovecot(root: Path, pristine: Path, sessions: int, cold: bool) -> None:
    """Dovecot on its own copy of the maildrop, timed like popframe."""
    import pwd
    import subprocess

    from servers import DOVECOT_USER, dovecot_config, free_port, wait_for_greeting

    home = root / "dovecot"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(pristine, home, symlinks=True)
    owner = pwd.getpwnam(DOVECOT_USER)
    for path in [home, *home.rglob("*")]:
        os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    for path in (root, home):
        path.chmod(0o755)
    (home / "run").mkdir()
    (home / "state").mkdir()
    port = free_port()
    config = home / "dovecot.conf"
    config.write_text(dovecot_config(home, port, home, home / "users", home / "dovecot.log"))
    if cold:
        evict(home / USER)
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(config)])
    try:
        wait_for_greeting(port, proc=proc)
        for n in range(1, sessions + 1):
            pass_ms, stat_ms, uidl_ms, count = session(port)
            print(f"dovecot             session {n}:  PASS→+OK {pass_ms:8.1f} ms"
                  f"  →STAT {stat_ms:8.1f} ms  →UIDL end {uidl_ms:8.1f} ms  ({count} messages)",
                  flush=True)
    finally:
        subprocess.run(["dovecot", "-c", str(config), "stop"], capture_output=True, timeout=60)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--into", choices=["new", "cur"], default="new")
    parser.add_argument("--root", type=Path, help="work here (default: a new directory in /tmp)")
    parser.add_argument("--keep", action="store_true", help="leave the directory behind")
    parser.add_argument("--dovecot", action="store_true",
                        help="also time Dovecot's opens of the same maildrop")
    parser.add_argument("--cold", action="store_true",
                        help="evict the maildrop from the page cache before the first open")
    a = parser.parse_args()
    root = a.root or Path(tempfile.mkdtemp(prefix="popframe-huge-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        pristine = make_home(root, a.messages, a.into)
        for workers in a.workers:
            run(root, pristine, workers, a.sessions, a.cold)
        if a.dovecot:
            run_dovecot(root, pristine, a.sessions, a.cold)
    finally:
        if not a.keep and a.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
