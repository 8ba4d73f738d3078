"""Helpers for the delivery tests: a ``twistd pop3 --lmtp`` server on
loopback, users in a passwd-file, ``popframe deliver`` as a process, a
POP3 fetch, and an LMTP client that reads every per-recipient reply."""

from __future__ import annotations

import os
import poplib
import re
import smtplib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from popframe.auth.schemes import make_hash
from popframe.testing import POP3, TWISTD, wait_for_log, wait_until

IN_CI = os.environ.get("CI") == "true"
poplib._MAXLINE = 1 << 20  # the overlong-line messages
START_SECONDS = 60
_POP3_PORT = re.compile(r"POP3Factory starting on (\d+)|listening on 127\.0\.0\.1:(\d+) for \d+ "
                        r"workers \(--listen")
DELIVER = [sys.executable, "-m", "popframe", "deliver"]


@dataclass
class Users:
    """A passwd-file and its users' passwords."""

    path: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def add(self, user: str, password: str | None = None) -> None:
        password = password or f"pw-{user}"
        self.passwords[user] = password
        with open(self.path, "a") as f:
            f.write(f"{user}:{make_hash('SHA512-CRYPT', password.encode())}::::::\n")


@dataclass
class Popframe:
    """A ``twistd pop3`` process with POP3 on a loopback port and LMTP on a
    UNIX socket."""

    process: subprocess.Popen[bytes]
    log: Path
    lmtp_socket: Path
    port: int = 0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1,
                 timeout: float = START_SECONDS) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the log, waiting
        for them; stops the server when they do not come."""
        try:
            return wait_for_log(self.process, self.log, pattern, count, timeout)
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_popframe(root: Path, store: str, users: Users, *extra: str, workers: int = 1) -> Popframe:
    """Start the server in ``root`` and wait until it serves."""
    log = root / "twistd.log"
    socket_path = root / "lmtp.sock"
    args = [*TWISTD, *POP3,
            "--listen", "tcp:0:interface=127.0.0.1", "--lmtp", f"unix:{socket_path}",
            "--store", store, "--auth", f"passwd-file:{users.path}",
            "--workers", str(workers), *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    server = Popframe(process, log, socket_path)
    match = server.wait_for(_POP3_PORT.pattern)[0]
    server.port = int(match[1] or match[2])
    if workers > 1:
        server.wait_for(r"ready \(pid \d+\): serving", count=workers)
    else:
        server.wait_for(r"LMTPFactory starting on")
    # Twisted logs a UNIX port's "starting on" before it binds the socket.
    wait_until(socket_path.exists, f"{socket_path} to be bound")
    return server


def fetch_all(port: int, user: str, password: str, delete: bool = False) -> list[bytes]:
    """Every message as RETR sends it (CRLF lines, dot-unstuffed by poplib:
    ``b"\\r\\n".join(lines) + b"\\r\\n"``), oldest first."""
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        client.user(user)
        client.pass_(password)
        count = len(client.list()[1])
        messages = []
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            messages.append(b"".join(line + b"\r\n" for line in lines))
            if delete:
                client.dele(number)
        client.quit()
        return messages
    finally:
        client.close()


def wire(stored: bytes) -> bytes:
    """What RETR sends for ``stored`` (before the final ``.``), as poplib
    gives it back: CRLF line ends and a final CRLF."""
    from popframe.protocol.encoding import MessageEncoder

    encoder = MessageEncoder()
    sent = encoder.feed(stored) + encoder.finish()
    body = sent[: -len(b".\r\n")]
    # poplib removes the dot-stuffing
    lines = body.split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b"..") else line) + b"\r\n" for line in lines)


def deliver(store: str, user: str, message: bytes, *extra: str,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*DELIVER, "--store", store, "--user", user, *extra], input=message,
                          capture_output=True, timeout=timeout)


class LMTPClient(smtplib.LMTP):
    """``smtplib.LMTP`` that reads one reply per accepted recipient after
    DATA (smtplib reads one)."""

    def send_message_to(self, sender: str, recipients: list[str],
                        message: bytes) -> tuple[dict[str, tuple[int, bytes]], list[tuple[int, bytes]]]:
        """RCPT replies by recipient, and the DATA replies of the accepted."""
        code, reply = self.mail(sender)
        assert code == 250, reply
        rcpt = {r: self.rcpt(r) for r in recipients}
        accepted = [r for r, (c, _) in rcpt.items() if c == 250]
        if not accepted:
            return rcpt, []
        code, reply = self.docmd("DATA")
        assert code == 354, reply
        stuffed = re.sub(rb"(?m)^\.", b"..", message)
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        self.send(stuffed + b".\r\n")
        return rcpt, [self.getreply() for _ in accepted]
