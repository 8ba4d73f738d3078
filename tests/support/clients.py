"""Real POP3 clients for tests against a server on loopback: ``poplib``
logged in, or lines by hand."""

from __future__ import annotations

import poplib
import select
import socket
import ssl

from OpenSSL import SSL

__all__ = ["LineClient", "pop3_login"]


def pop3_login(port: int, user: str = "alice", password: str | None = None,
               timeout: float = 10) -> poplib.POP3:
    """A ``poplib`` client on 127.0.0.1:``port``, logged in with USER and
    PASS; ``password`` defaults to the suite's convention, ``"<user>
    password"`` (``conftest.MailHome``'s alice, the workers' users)."""
    client = poplib.POP3("127.0.0.1", port, timeout=timeout)
    try:
        client.user(user)
        client.pass_(f"{user} password" if password is None else password)
    except BaseException:
        client.close()
        raise
    return client


class LineClient:
    """A blocking POP3 client of lines, for tests of the exact octets (a
    limit, a pipelined burst, a SASL exchange by hand) where ``poplib``
    would hide them.  ``sock``: a socket (plain or ``ssl``) or a
    pyOpenSSL ``Connection``; every read is bounded by its timeout."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket | SSL.Connection) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def connect(cls, port: int, timeout: float = 20) -> LineClient:
        """A client of 127.0.0.1:``port`` (the greeting not yet read)."""
        return cls(socket.create_connection(("127.0.0.1", port), timeout=timeout))

    def line(self) -> bytes:
        """The next line, without its CRLF; ``EOFError`` (with what came)
        if the server closes first."""
        while b"\r\n" not in self.buffer:
            try:
                data = self.sock.recv(65536)
            except SSL.WantReadError:  # pyOpenSSL on a socket with a timeout
                assert select.select([self.sock], [], [], 10)[0], "timed out"
                continue
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def multiline(self) -> list[bytes]:
        """The lines of a multi-line body, up to its terminating ".\""""
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, data: bytes) -> bytes:
        """Send one command line; its first reply line."""
        self.send(data + b"\r\n")
        return self.line()

    def until_eof(self) -> bytes:
        """Everything until the server closes (bounded by the timeout)."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        self.buffer = b""
        return data

    def close(self) -> None:
        self.sock.close()
