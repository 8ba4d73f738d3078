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

__all__ = [
    "WORKAROUNDS",
    "MessageEncoder",
    "QuirksEncoder",
    "TERMINATOR",
    "VerbatimEncoder",
    "WireForm",
    "encoder_for",
    "wire_form",
    "wire_size",
]

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


# -- client workarounds (off by default; docs/operations.md) -------------------

#: The workarounds an encoder knows, and the clients that need them.
WORKAROUNDS: dict[str, str] = {
    "outlook-nul": "Outlook and Outlook Express stall on a NUL octet in a message: each "
                   "is sent as 0x80 (as Dovecot's outlook-no-nuls; the size is unchanged)",
    "top-missing-blank-line": "Outlook Express and Netscape Mail break on a TOP of a "
                              "message without an end of headers: an empty line is added",
    "list-progress": "old clients time out on a long LIST or UIDL: the listing is sent a "
                     "chunk at a time, as the client reads it",
    "mbox-from-quirks": "mail old MTAs wrote into maildirs with an mbox 'From ' envelope "
                        "line first: that line is not sent",
    "bare-cr": "mail old (Mac) MTAs wrote with CR alone as line end: each bare CR is sent "
               "as CRLF",
}

#: NUL as 0x80, Dovecot's replacement: same size, so LIST stays true.
_NUL_TABLE = bytes(range(256)).replace(b"\0", b"\x80", 1)
#: A CR not followed by LF (a trailing CR is held back by the caller).
_BARE_CR = re.compile(rb"\r(?!\n)")
#: The longest leading From_ line looked for.
_FROM_LINE_MAX = 1024


class QuirksEncoder(MessageEncoder):
    """A :class:`MessageEncoder` (or, for a wire-ready RETR needing only
    ``outlook-nul``, a verbatim pass) with client workarounds applied.
    Only built when some workaround is on: the usual encoders do no work
    for them.  ``bare-cr`` and ``mbox-from-quirks`` change the octets
    sent, so LIST and STAT (the stored wire size) undercount or overcount
    such messages by what changed."""

    def __init__(self, inner: MessageEncoder, workarounds: frozenset[str]) -> None:
        super().__init__()
        self._inner = inner
        self._nul = "outlook-nul" in workarounds
        self._bare_cr = "bare-cr" in workarounds
        self._blank_line = "top-missing-blank-line" in workarounds and inner._body_lines is not None
        self._from: bytes | None = b"" if "mbox-from-quirks" in workarounds else None
        self._cr = b""  # bare-cr: a trailing CR waiting for the next chunk

    @property
    def done(self) -> bool:  # (the inner encoder's: TOP stops reading)
        return self._inner.done

    @done.setter
    def done(self, value: bool) -> None:
        pass  # MessageEncoder.__init__ sets it; the inner encoder owns it

    def feed(self, chunk: bytes) -> bytes:
        if self._from is not None:
            chunk = self._skip_from_line(chunk)
            if not chunk:
                return b""
        if self._bare_cr:
            chunk = self._cr + chunk
            self._cr = b"\r" if chunk.endswith(b"\r") else b""
            if self._cr:
                chunk = chunk[:-1]
            chunk = _BARE_CR.sub(b"\n", chunk)
        return self._out(self._inner.feed(chunk))

    def finish(self) -> bytes:
        rest = b""
        if self._from:  # a message that is one short line: not an envelope after all
            rest = self._inner.feed(self._from)
        if self._cr:
            rest += self._inner.feed(b"\n")
        missing_eoh = self._blank_line and self._inner._in_headers and not self._inner.done
        tail = self._inner.finish()
        if missing_eoh:  # (TOP only) headers never ended: end them
            tail = tail[: -len(TERMINATOR)] + b"\r\n" + TERMINATOR
        return self._out(rest) + self._out(tail)

    def _out(self, data: bytes) -> bytes:
        return data.translate(_NUL_TABLE) if self._nul and b"\0" in data else data

    def _skip_from_line(self, chunk: bytes) -> bytes:
        """Hold the message's start until its first line is known; drop it
        if it is an mbox ``From `` envelope line."""
        assert self._from is not None
        head = self._from + chunk
        newline = head.find(b"\n")
        if newline < 0 and len(head) < _FROM_LINE_MAX:
            self._from = head
            return b""
        self._from = None
        if newline >= 0 and head.startswith(b"From "):
            return head[newline + 1:]
        return head


def encoder_for(body_lines: int | None, verbatim: bool,
                workarounds: frozenset[str] = frozenset()) -> MessageEncoder:
    """The encoder of a RETR (``body_lines`` None) or TOP; ``verbatim``:
    the stored octets are the wire form.  With no workaround, exactly the
    usual encoder."""
    if not workarounds:
        return VerbatimEncoder() if verbatim else MessageEncoder(body_lines)
    rewrites = {"bare-cr", "mbox-from-quirks"} & workarounds
    inner = VerbatimEncoder() if verbatim and not rewrites else MessageEncoder(body_lines)
    return QuirksEncoder(inner, workarounds)
