"""A huge message through the real server: RETR streams it with flat
memory, and a client that stops reading makes nothing grow.

The server's memory is read from /proc/<pid>/status: VmHWM is the peak RSS
since process start, so where the kernel allows it (Linux >= 4.0, our own
child) it is reset to the current RSS after login by writing 5 to
/proc/<pid>/clear_refs; otherwise growth is VmHWM after minus VmHWM before.
benchmarks/big_message.py does the same at 1 GB.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.process, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

MiB = 1024 * 1024
LIMIT = 32 * MiB
TERMINATOR = b"\r\n.\r\n"
TIMEOUT = 30


@dataclass
class BigMessage:
    size: int  # stored octets
    wire: int  # RETR's octets without dot-stuffing (what LIST reports)
    dots: int  # lines RETR dot-stuffs
    digest: bytes  # sha256 of the message with CRLF line ends


def deliver_big(mail_home, user: str, size: int, seed: int = 7) -> BigMessage:
    """Write ``size`` octets of headers and 76-character base64 lines (LF
    line ends, some lines '.', '.xxx' or '..xx') into tmp/, then rename
    into new/, as an MTA does; streamed, never whole in memory."""
    rng = random.Random(seed)
    pool = []
    for _ in range(8):
        block = base64.encodebytes(rng.randbytes(57 * 13618))  # ~1 MiB of whole lines
        block = block.replace(b"\n+", b"\n.").replace(b"\n//", b"\n..").replace(b"\n/A", b"\n.\n")
        pool.append(block)
    head = (
        b"From: Bob <bob@example.org>\nTo: Alice <alice@example.org>\n"
        b"Subject: big\nMessage-ID: <big@example.org>\n"
        b"Content-Transfer-Encoding: base64\n\n.first body line\n.\n"
    )
    digest = hashlib.sha256()
    wire = dots = 0
    name = f"1700000999.M1P1.big{size}"
    tmp = mail_home.maildir(user) / "tmp" / name
    with open(tmp, "wb") as f:
        remaining = size
        piece = head
        while remaining > 0:
            piece = piece[:remaining]
            if len(piece) == remaining and not piece.endswith(b"\n"):
                piece = piece[:-1] + b"\n"  # the last line ends in LF
            f.write(piece)
            remaining -= len(piece)
            assert b"\r" not in piece
            wire += len(piece) + piece.count(b"\n")
            dots += piece.count(b"\n.") + piece.startswith(b".")  # pieces start lines
            digest.update(piece.replace(b"\n", b"\r\n"))
            piece = pool[rng.randrange(len(pool))]
    tmp.rename(mail_home.maildir(user) / "new" / name)
    return BigMessage(size, wire, dots, digest.digest())


# -- /proc ----------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in octets."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) * 1024
    return values


def file_reads(pid: int) -> int:
    """rchar: octets the process has read (here: from the message file)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(": ")
        if key == "rchar":
            return int(value)
    raise LookupError("no rchar")


def serving_pid(server_pid: int, port: int, client_port: int) -> int:
    """The process holding the server end of our connection: the server
    itself, or a child of it if it runs worker processes.  So the memory
    measured is that of the process doing the work."""
    wanted = (f"0100007F:{port:04X}", f"0100007F:{client_port:04X}")
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    inode = next(int(row[9]) for row in rows if (row[1], row[2]) == wanted)
    target = f"socket:[{inode}]"
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError):
            continue
    family = {server_pid}
    for _ in range(3):  # the server, its children, their children
        family |= {pid for pid, ppid in parents.items() if ppid in family}
    for pid in sorted(family, key=lambda p: p != server_pid):
        try:
            if any(os.readlink(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no process of server {server_pid} holds {target}")


class PeakGrowth:
    """How far the peak RSS of ``pid`` rises above its RSS at start()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = memory(pid)
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.reset = True
        except OSError:
            self.reset = False

    def growth(self) -> int:
        after = memory(self.pid)
        return after["VmHWM"] - (self.before["VmRSS"] if self.reset else self.before["VmHWM"])


# -- the client -----------------------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        assert self.line().startswith(b"+OK")

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            assert data, f"connection closed; got {self.buffer!r}"
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        assert reply.startswith(b"+OK"), (text, reply)
        return reply

    def server_pid(self, server) -> int:
        return serving_pid(server.process.pid, server.port, self.sock.getsockname()[1])

    def login(self) -> None:
        self.command("USER alice")
        self.command("PASS alice password")

    def multiline(self, limit: int) -> Iterator[bytes]:
        """The rest of a multi-line reply in received pieces, up to and
        including the terminating line; no more than ``limit`` octets."""
        pending, self.buffer = self.buffer, b""
        buf = bytearray(MiB)
        view = memoryview(buf)
        tail = b""
        received = 0
        while True:
            if pending:
                chunk, pending = pending, b""
            else:
                n = self.sock.recv_into(view)
                assert n, f"connection closed after {received} octets"
                chunk = bytes(view[:n])
            received += len(chunk)
            assert received <= limit, "no terminating line"
            yield chunk
            tail = (tail + chunk)[-5:]
            if tail == TERMINATOR:
                return


def unstuffed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Undo dot-stuffing of a multi-line reply and drop its terminating
    line, piece by piece (a line split between pieces waits in ``carry``)."""
    carry = b""
    pending = None
    for chunk in chunks:
        if pending is not None:
            yield pending
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        # Every line that starts with '.' was stuffed: drop one dot.
        pending = (b"\n" + data[:cut]).replace(b"\n.", b"\n")[1:]
    assert carry == b"" and pending is not None and pending.endswith(b"\r\n")
    # The terminator was the last line ("." unstuffed to ""): only "\r\n" left of it.
    assert pending.endswith(b"\r\n\r\n") or pending == b"\r\n"
    yield pending[:-2]


# -- the tests ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def remove_big_messages(mail_home) -> Iterator[None]:
    """pytest keeps recent tmp_paths: do not leave 192 MiB in each."""
    yield
    for sub in ("new", "cur", "tmp"):
        for path in (mail_home.maildir("alice") / sub).glob("*.big*"):
            path.unlink()


def test_retr_128mb_keeps_server_memory_flat(mail_home, pop3_server) -> None:
    message = deliver_big(mail_home, "alice", 128 * MiB)
    client = Client(pop3_server.port)
    client.login()  # the server lists (and sizes) the maildrop now
    assert client.command("LIST 1") == b"+OK 1 %d" % message.wire
    probe = PeakGrowth(client.server_pid(pop3_server))

    reply = client.command("RETR 1")
    assert reply == b"+OK %d octets" % message.wire
    received = 0
    digest = hashlib.sha256()

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal received
        for chunk in chunks:
            received += len(chunk)
            yield chunk

    started = time.monotonic()
    for piece in unstuffed(counted(client.multiline(message.wire + message.dots + 3))):
        digest.update(piece)
    seconds = time.monotonic() - started

    growth = probe.growth()
    assert received == message.wire + message.dots + len(b".\r\n")
    assert digest.digest() == message.digest
    print(f"RETR of {message.size // MiB} MiB: {seconds:.2f} s, server peak RSS growth "
          f"{growth / MiB:.1f} MiB (VmHWM {'reset' if probe.reset else 'not reset'})")
    assert growth < LIMIT, f"server peak RSS grew by {growth / MiB:.1f} MiB"
    client.command("QUIT")
    client.sock.close()


def test_client_that_stops_reading_does_not_grow_the_server(mail_home, pop3_server) -> None:
    mail_home.deliver("alice", b"Subject: small\n\nfirst\n")
    message = deliver_big(mail_home, "alice", 64 * MiB)
    client = Client(pop3_server.port)
    client.login()
    pid = client.server_pid(pop3_server)
    probe = PeakGrowth(pid)
    read_before = file_reads(pid)

    client.sock.sendall(b"RETR 2\r\n")  # and read nothing
    # Wait until the server stops reading the message (bounded): it then
    # waits for the socket buffers, which we never drain.
    deadline = time.monotonic() + 10
    last, since = file_reads(pid), time.monotonic()
    while time.monotonic() - since < 0.5:
        assert time.monotonic() < deadline, "the server kept reading the message"
        time.sleep(0.05)
        now = file_reads(pid)
        if now != last:
            last, since = now, time.monotonic()
    read = last - read_before
    growth = probe.growth()
    print(f"stalled client: server read {read / MiB:.1f} of {message.size // MiB} MiB, "
          f"peak RSS growth {growth / MiB:.1f} MiB")
    assert read < LIMIT, f"the server read {read / MiB:.1f} MiB for a client reading nothing"
    assert growth < LIMIT, f"server peak RSS grew by {growth / MiB:.1f} MiB"

    # Hanging up mid-RETR ends the session and frees the maildrop; nothing
    # is deleted.
    client.sock.close()
    for _ in range(100):
        again = Client(pop3_server.port)
        again.command("USER alice")
        again.sock.sendall(b"PASS alice password\r\n")
        reply = again.line()
        if reply.startswith(b"+OK"):
            break
        assert b"[IN-USE]" in reply, reply
        again.sock.close()
        time.sleep(0.05)
    else:
        raise AssertionError("the maildrop stayed locked after the client left")
    assert again.command("STAT") == b"+OK 2 %d" % (message.wire + len(b"Subject: small\r\n\r\nfirst\r\n"))
    again.command("QUIT")
    again.sock.close()
