"""Stored message bytes to the octets RETR and TOP send.

Messages may be stored with bare LF (Postfix's Maildir) or CRLF (Dovecot
with ``,W=``); on the wire every line ends in CRLF, lines starting with
``.`` are dot-stuffed, and a CRLF is added if the message lacks a final line
end.  The encoder works chunk by chunk, so a 1 GB message never sits in
memory, and its output size (before the terminating ``.``) always equals
:func:`wire_size` of the stored bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MessageEncoder", "TERMINATOR", "VerbatimEncoder", "WireForm", "wire_form", "wire_size"]

TERMINATOR = b".\r\n"

# A line starting with "." after a line end.  The regular expression scans
# about three times faster than ``b"\n." in data`` (measured, 64 KiB).
_DOT_LINE = re.compile(rb"\n\.")


@dataclass(frozen=True, slots=True)
class WireForm:
    """What a stored message becomes on the wire.

    ``size``: the octets RETR sends before the terminating ``.`` (what LIST
    and STAT report).  ``ready``: the stored octets already are those octets
    (CRLF line ends, no line starting with ``.``, a final CRLF), so RETR may
    send the file unchanged, without an encoder pass (or with sendfile).
    """

    size: int
    ready: bool


def wire_form(stored: bytes | Iterable[bytes]) -> WireForm:
    """Measure a stored message, given whole or in chunks, in one pass."""
    chunks = (stored,) if isinstance(stored, bytes) else stored
    size = 0
    bare_lf = dot_line = False
    last = b""
    for chunk in chunks:
        if not chunk:
            continue
        crlf = chunk.count(b"\r\n")
        lf = chunk.count(b"\n")
        size += len(chunk) + lf - crlf
        first = chunk[:1]
        if last == b"\r" and first == b"\n":
            size -= 1  # a CRLF split between two chunks
            crlf += 1
        bare_lf = bare_lf or lf != crlf
        if not dot_line:
            dot_line = first == b"." and last in (b"", b"\n") or _DOT_LINE.search(chunk) is not None
        last = chunk[-1:]
    if last and last != b"\n":
        size += 2
    ready = not bare_lf and not dot_line and (not last or last == b"\n")
    return WireForm(size, ready)


def wire_size(stored: bytes | Iterable[bytes]) -> int:
    """The octets RETR sends for a stored message, given whole or in chunks
    (what LIST and STAT report): every line end as CRLF (a bare LF grows by
    one), no dot-stuffing, and a CRLF added when a non-empty message lacks a
    final LF.
    """
    return wire_form(stored).size


class MessageEncoder:
    """Normalise line ends, dot-stuff, and (for TOP) stop after the headers
    plus ``body_lines`` lines of body.
    """

    def __init__(self, body_lines: int | None = None) -> None:
        self._carry = b""  # a trailing CR waiting to see whether LF follows
        self._line_start = True  # the next output octet starts a line
        self._body_lines = body_lines
        self._in_headers = True
        self.done = False  # TOP has sent all it should; stop reading

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        data = self._carry + chunk
        if data.endswith(b"\r"):
            self._carry = b"\r"
            data = data[:-1]
        else:
            self._carry = b""
        if not data:
            return b""
        if b"\r" not in data:  # LF only, as Postfix and Dovecot store mail
            dots = _DOT_LINE.search(data) is not None  # before the copy doubles it
            data = data.replace(b"\n", b"\r\n")
        else:
            if data.count(b"\n") != data.count(b"\r\n"):  # mixed line ends
                data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            dots = _DOT_LINE.search(data) is not None
        if self._line_start and data[:1] == b".":
            data = b"." + data
        if dots:
            data = data.replace(b"\r\n.", b"\r\n..")
        if self._body_lines is not None:
            data = self._limit(data)
        self._line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """The rest of the message and the terminating line."""
        tail = b"" if self.done else self._carry
        if tail or not self._line_start:
            tail += b"\r\n"
        self.done = True
        return tail + TERMINATOR

    def _limit(self, data: bytes) -> bytes:
        """Cut ``data`` where TOP's headers + body lines end."""
        line_start = self._line_start
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                return data
            if self._in_headers:
                if line_start and end == pos + 1:
                    self._in_headers = False
                    finished = self._body_lines == 0
                else:
                    finished = False
            else:
                assert self._body_lines is not None
                self._body_lines -= 1
                finished = self._body_lines <= 0
            pos = end + 1
            line_start = True
            if finished:
                self.done = True
                self._carry = b""
                return data[:pos]
        return data


class VerbatimEncoder(MessageEncoder):
    """RETR of a message whose stored octets are its wire form
    (:attr:`WireForm.ready`): chunks go out as read."""

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        self.done = True
        return TERMINATOR
