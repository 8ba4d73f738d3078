#!/usr/bin/env python3
"""Memory of the server while RETR streams one huge message.

Starts ``twistd -n pop3`` on 127.0.0.1 (a fresh Maildir, passwd-file and
certificate in a temporary directory), delivers one message of
``--size-mb`` MiB, then measures the server process from ``/proc``:

(a) a fast client: USER/PASS, RETR 1, read to the terminating CRLF.CRLF,
    check the byte count against the wire size, report MiB/s and the
    server's RSS (sampled every ``--interval`` s, plus VmHWM) during the
    transfer;
(b) a stalled client: RETR 1 and read nothing; sample the server's RSS,
    what it has sent (the client's unread receive queue plus the server
    socket's send queue: ``/proc/<pid>/io`` wchar does not count send() on
    sockets) and what it has read of the file (rchar) until neither moves
    for ``--settle`` s (giving up after ``--stall-timeout`` s), then hang
    up and check that the server serves a new session.

    python benchmarks/big_message.py --size-mb 1024

Prints a markdown table; exits 1 if a check fails or the RSS growth of
either phase reaches ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from popframe.auth.schemes import make_hash
from popframe.protocol.encoding import wire_size
from popframe.testing import ServerProcess as Server
from popframe.testing import start_server
from popframe.tls import make_self_signed

MiB = 1024 * 1024
USER, PASSWORD = "alice", "alice password"
TERMINATOR = b"\r\n.\r\n"
LOGIN_SECONDS = 120  # the first login computes the 1 GB message's size
RECV_SECONDS = 60  # one recv() on the fast client
READ_CHUNK = 1 << 16


# -- the message ----------------------------------------------------------------


def make_pool(blocks: int, seed: int) -> list[bytes]:
    """Distinct ~1 MiB blocks of 76-character base64 lines (LF ends), some
    lines turned into '.'-lines: '.xxx' (~1/64), '..xx' and '.' alone."""
    rng = random.Random(seed)
    pool = []
    for _ in range(blocks):
        block = base64.encodebytes(rng.randbytes(57 * 13618))  # 13618 lines of 77 octets
        block = block.replace(b"\n+", b"\n.").replace(b"\n//", b"\n..").replace(b"\n/A", b"\n.\n")
        pool.append(block)
    return pool


def headers(size: int) -> bytes:
    return (
        "Return-Path: <bob@example.org>\n"
        "From: Bob <bob@example.org>\n"
        "To: Alice <alice@example.org>\n"
        f"Subject: a message of {size} octets\n"
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        "Message-ID: <big-message@example.org>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: application/octet-stream; name=big.bin\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        ".a body line starting with a dot\n"
        ".\n"
    ).encode()


def write_message(path: Path, size: int, seed: int = 1) -> None:
    """Exactly ``size`` octets, LF line ends, ending in LF."""
    pool = make_pool(16, seed)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        remaining = size
        head = headers(size)[:remaining]
        f.write(head)
        remaining -= len(head)
        while remaining > 0:
            block = pool[rng.randrange(len(pool))][:remaining]
            f.write(block)
            remaining -= len(block)
        if size:
            f.seek(size - 1)
            f.write(b"\n")


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            yield chunk


def expected_wire(path: Path) -> tuple[int, int]:
    """(wire size as LIST reports it, number of lines RETR dot-stuffs)."""
    dots = 0
    last = b"\n"  # the file's start is a line start

    def counting() -> Iterator[bytes]:
        nonlocal dots, last
        for chunk in file_chunks(path):
            dots += chunk.count(b"\n.") + (last == b"\n" and chunk[:1] == b".")
            last = chunk[-1:]
            yield chunk

    return wire_size(counting()), dots


# -- the server -----------------------------------------------------------------


def setup_home(root: Path) -> list[str]:
    """Maildir, passwd-file and certificate; the server's arguments."""
    maildir = root / "mail" / USER / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (root / "users").write_text(f"{USER}:{make_hash('SHA512-CRYPT', PASSWORD.encode())}::::::\n")
    make_self_signed(root / "cert.pem", root / "key.pem")
    return [
        "--listen", "tcp:0:interface=127.0.0.1",
        "--store", f"maildir:{root / 'mail' / '%u' / 'Maildir'}",
        "--auth", f"passwd-file:{root / 'users'}",
        "--tls-cert", str(root / "cert.pem"), "--tls-key", str(root / "key.pem"),
    ]


def deliver(root: Path, size: int) -> Path:
    """Write in tmp/, rename into new/, as an MTA does."""
    maildir = root / "mail" / USER / "Maildir"
    name = f"1700000000.M1P{os.getpid()}.bench"
    write_message(maildir / "tmp" / name, size)
    (maildir / "tmp" / name).rename(maildir / "new" / name)
    return maildir / "new" / name


# -- /proc ----------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) * 1024
    return values


def proc_io(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so it is the peak of
    what follows; False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_inode(local_port: int, remote_port: int) -> int:
    """The inode of the TCP socket 127.0.0.1:local -> 127.0.0.1:remote."""
    wanted = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == wanted:
                return int(fields[9])
    raise LookupError(f"no TCP socket {wanted}")


def serving_pid(server_pid: int, port: int, client_port: int) -> int:
    """The process serving our connection: twistd itself, or (with
    ``--workers N``) the child process that accepted it, which is the one
    holding the server end of the connection."""
    target = f"socket:[{tcp_inode(port, client_port)}]"
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    family, todo = [], [server_pid]
    while todo:  # the server and its descendants
        pid = todo.pop()
        family.append(pid)
        todo.extend(children.get(pid, []))
    for pid in family:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    raise LookupError(f"no process of server {server_pid} holds {target}")


class RSSSampler(threading.Thread):
    """Samples VmRSS of ``pid`` every ``interval`` s."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (time, rss)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                rss = proc_status(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return  # the server is gone
            self.samples.append((time.monotonic(), rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    @property
    def peak_rss(self) -> int:
        return max(rss for _, rss in self.samples)


# -- the clients ----------------------------------------------------------------


class Client:
    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def line(self) -> bytes:
        deadline = time.monotonic() + (self.sock.gettimeout() or 60)
        while b"\r\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply line")
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"server closed the connection; got {self.buffer!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0]}: {reply!r}")
        return reply

    def close(self) -> None:
        self.sock.close()


def login(port: int, attempts: int = 50) -> Client:
    """USER/PASS, retrying (bounded) while the previous session still holds
    the maildrop's lock."""
    for _ in range(attempts):
        client = Client(port, LOGIN_SECONDS)
        greeting = client.line()
        assert greeting.startswith(b"+OK"), greeting
        client.command(f"USER {USER}")
        try:
            client.command(f"PASS {PASSWORD}")
            return client
        except RuntimeError as e:
            client.close()
            if "[IN-USE]" not in str(e):
                raise
            time.sleep(0.1)
    raise RuntimeError("the maildrop stayed locked")


@dataclass
class FastResult:
    received: int = 0
    seconds: float = 0.0
    baseline_rss: int = 0
    peak_rss_sampled: int = 0
    peak_rss_hwm: int | None = None
    samples: int = 0
    after_rss: int = 0
    login_seconds: float = 0.0
    server_cpu: float = 0.0
    pid: int = 0


def fast_client(server: Server, expected: int, interval: float) -> FastResult:
    result = FastResult()
    started = time.monotonic()
    client = login(server.port)
    result.login_seconds = time.monotonic() - started
    client.sock.settimeout(RECV_SECONDS)
    pid = result.pid = serving_pid(server.pid, server.port, client.sock.getsockname()[1])
    result.baseline_rss = proc_status(pid)["VmRSS"]
    hwm_reset = reset_hwm(pid)
    sampler = RSSSampler(pid, interval)
    sampler.start()
    cpu = cpu_seconds(pid)
    started = time.monotonic()
    reply = client.command("RETR 1")
    assert reply.endswith(b" octets"), reply
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    received = len(client.buffer)
    tail, client.buffer = client.buffer[-5:], b""
    while not tail.endswith(TERMINATOR):
        if received > expected + MiB:
            raise RuntimeError(f"no terminator after {received} octets")
        n = client.sock.recv_into(view)
        if not n:
            raise ConnectionError(f"server closed the connection after {received} octets")
        received += n
        tail = (tail + bytes(view[max(0, n - 5):n]))[-5:]
    result.seconds = time.monotonic() - started
    result.server_cpu = cpu_seconds(pid) - cpu
    sampler.stop()
    status = proc_status(pid)
    result.received = received - 3  # without the terminating ".\r\n"
    result.peak_rss_sampled = max(sampler.peak_rss, status["VmRSS"])
    result.peak_rss_hwm = status["VmHWM"] if hwm_reset else None
    result.samples = len(sampler.samples)
    result.after_rss = status["VmRSS"]
    client.command("QUIT")
    client.close()
    return result


@dataclass
class StallResult:
    baseline_rss: int = 0
    peak_rss_sampled: int = 0
    peak_rss_hwm: int | None = None
    client_queue: int = 0  # unread in the client's receive buffer
    server_queue: int = 0  # in the server's send buffer
    file_read: int = 0  # rchar: what the server read (the message file)
    wchar: int = 0
    seconds_to_stall: float = 0.0
    stalled: bool = False
    after_close_rss: int = 0
    serves_again: bool = False
    pid: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """What the server handed to the kernel since RETR: nothing was
        read, so it is all still in the two socket buffers."""
        return self.client_queue + self.server_queue


def unread(sock: socket.socket) -> int:
    """Octets waiting in ``sock``'s receive buffer (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def send_queue(pid: int, local_port: int, remote_port: int) -> int:
    """tx_queue of the server's TCP socket 127.0.0.1:local -> :remote, from
    /proc/<pid>/net/tcp: octets written but not yet acknowledged by the
    peer (a peer with a full window acknowledges nothing more)."""
    wanted = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == wanted:
                return int(fields[4].split(":")[0], 16)
    raise LookupError(f"no TCP socket {wanted}")


def stalled_client(server: Server, interval: float, settle: float, limit: float) -> StallResult:
    """RETR and read nothing.  ``/proc/<pid>/io`` wchar does not count
    send() on sockets, so what the server wrote is measured at the sockets
    (client FIONREAD + server tx_queue) and its progress through the file
    by rchar; stalled = neither moved for ``settle`` seconds."""
    result = StallResult()
    client = login(server.port)
    client_port = client.sock.getsockname()[1]
    pid = result.pid = serving_pid(server.pid, server.port, client_port)
    result.baseline_rss = proc_status(pid)["VmRSS"]
    hwm_reset = reset_hwm(pid)
    before = proc_io(pid)
    started = time.monotonic()
    client.sock.sendall(b"RETR 1\r\n")  # and never read
    last, last_change = None, started
    while True:
        time.sleep(interval)
        now = time.monotonic()
        io = proc_io(pid)
        rss = proc_status(pid)["VmRSS"]
        queues = (unread(client.sock), send_queue(pid, server.port, client_port))
        result.samples.append((now - started, rss, sum(queues)))
        state = (io["rchar"], queues)
        if state != last:
            last, last_change = state, now
        elif now - last_change >= settle:
            result.stalled = True
            break
        if now - started > limit:
            break
    status = proc_status(pid)
    result.seconds_to_stall = last_change - started
    result.client_queue, result.server_queue = queues
    result.file_read = io["rchar"] - before["rchar"]
    result.wchar = io["wchar"] - before["wchar"]
    result.peak_rss_sampled = max(max(s[1] for s in result.samples), status["VmRSS"])
    result.peak_rss_hwm = status["VmHWM"] if hwm_reset else None
    client.close()
    # The server notices the hang-up and drops the session and its lock.
    again = login(server.port)
    again.command("STAT")
    again.command("QUIT")
    again.close()
    result.serves_again = server.process.poll() is None
    result.after_close_rss = proc_status(pid)["VmRSS"]
    return result


# -- main -----------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="message size in MiB (1024)")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling period (0.05 s)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="the stalled server is stalled after this long without writing (1 s)")
    parser.add_argument("--stall-timeout", type=float, default=30.0,
                        help="give up waiting for the stall after this long (30 s)")
    parser.add_argument("--limit-mb", type=float, default=32.0,
                        help="fail if RSS grows this much or more (32 MiB)")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir, removed)")
    args = parser.parse_args()
    if sys.platform != "linux":
        parser.error("needs Linux /proc")

    run_started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="popframe-bench-", dir=args.workdir))
    server = None
    try:
        size = args.size_mb * MiB
        server_args = setup_home(root)
        t = time.monotonic()
        path = deliver(root, size)
        write_seconds = time.monotonic() - t
        t = time.monotonic()
        expected, dots = expected_wire(path)
        expected_seconds = time.monotonic() - t
        server = start_server(server_args, root)
        print(f"server pid {server.pid} on 127.0.0.1:{server.port}; message {mib(size)}, "
              f"wire {expected} octets + {dots} stuffed dots", file=sys.stderr)

        fast = fast_client(server, expected + dots, args.interval)
        print(f"fast client: {fast.received} octets in {fast.seconds:.2f} s", file=sys.stderr)
        stall = stalled_client(server, args.interval, args.settle, args.stall_timeout)
        print(f"stalled client: server sent {stall.sent} octets", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    total_seconds = time.monotonic() - run_started

    fast_growth = max(fast.peak_rss_sampled, fast.peak_rss_hwm or 0) - fast.baseline_rss
    stall_growth = max(stall.peak_rss_sampled, stall.peak_rss_hwm or 0) - stall.baseline_rss
    bytes_ok = fast.received == expected + dots
    limit = args.limit_mb * MiB
    ok = bytes_ok and stall.stalled and stall.serves_again and fast_growth < limit and stall_growth < limit

    def who(pid: int) -> str:
        return f"twistd, pid {pid}" if pid == server.pid else f"worker pid {pid} of twistd {server.pid}"

    def hwm(value: int | None) -> str:
        return mib(value) if value is not None else "n/a (clear_refs not allowed)"

    rows = [
        ("message", f"{mib(size)} stored (LF), {expected} octets on the wire + {dots} stuffed dots"),
        ("**(a) fast client**", ""),
        ("server process measured", who(fast.pid)),
        ("login (first: server sizes the message)", f"{fast.login_seconds:.2f} s"),
        ("received (without terminator)", f"{fast.received} octets: {'OK' if bytes_ok else 'MISMATCH'}"),
        ("transfer time", f"{fast.seconds:.2f} s"),
        ("throughput", f"{fast.received / MiB / fast.seconds:.0f} MiB/s"),
        ("server CPU during the transfer",
         f"{fast.server_cpu:.2f} s ({100 * fast.server_cpu / fast.seconds:.0f}% of one core)"),
        ("server RSS baseline (after login)", mib(fast.baseline_rss)),
        (f"server RSS peak, sampled ({fast.samples} samples)", mib(fast.peak_rss_sampled)),
        ("server VmHWM during RETR", hwm(fast.peak_rss_hwm)),
        ("**server RSS growth**", f"**{mib(fast_growth)}**"),
        ("server RSS after RETR", mib(fast.after_rss)),
        ("**(b) stalled client**", ""),
        ("server process measured", who(stall.pid)),
        ("server stopped sending and reading", f"after {stall.seconds_to_stall:.2f} s" if stall.stalled
         else f"NO (still going after {args.stall_timeout:.0f} s)"),
        ("server sent before stalling = client recv queue + server send queue",
         f"{mib(stall.sent)} = {mib(stall.client_queue)} + {mib(stall.server_queue)}"),
        ("server read from the message file (rchar)", mib(stall.file_read)),
        ("server wchar (send() on sockets is not counted)", f"{stall.wchar} octets"),
        ("server RSS baseline (after login)", mib(stall.baseline_rss)),
        (f"server RSS peak, sampled ({len(stall.samples)} samples)", mib(stall.peak_rss_sampled)),
        ("server VmHWM while stalled", hwm(stall.peak_rss_hwm)),
        ("**server RSS growth**", f"**{mib(stall_growth)}**"),
        ("serves a new session after the hang-up", "yes" if stall.serves_again else "NO"),
        ("server RSS after the hang-up", mib(stall.after_close_rss)),
        ("**run**", ""),
        ("writing the message / computing its wire size", f"{write_seconds:.1f} s / {expected_seconds:.1f} s"),
        ("whole run", f"{total_seconds:.1f} s"),
        ("result", f"{'PASS' if ok else 'FAIL'} (growth limit {mib(limit)})"),
    ]
    print("| measurement | value |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
