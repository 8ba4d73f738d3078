"""Reading an mbox once to learn its messages: where each starts and ends,
its size as RETR sends it (unquoted, CRLF line ends), and what its UIDL
comes from.  One pass, chunk by chunk, so a 1 GB mbox costs a 1 MiB buffer.

A message starts at a ``From `` line at the start of the file or after a
line end (every writer quotes ``From `` lines inside messages); it ends
before the next one, less the one empty line that separates messages.
Octets before the first ``From `` line (a damaged file) belong to no
message and are kept by rewrites.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from popframe.protocol.encoding import wire_form
from popframe.stores.mbox.format import FROM_, NO_FINAL_NEWLINE, Unquoter

__all__ = ["Entry", "header_value", "scan"]

_CHUNK = 1 << 20
_BOUNDARY = b"\n" + FROM_
#: A header block longer than this is digested whole, unfiltered.
_HEADERS_MAX = 1 << 16
_HEADER_END = re.compile(rb"\n\r?\n")
#: Headers mail readers rewrite in place (flags, indexes): left out of the
#: digest, so reading a message in mutt does not change its UIDL.
_MUTABLE = re.compile(
    rb"(?i)(status|x-status|x-keywords|x-uid|x-imap|x-imapbase|content-length|lines)[ \t]*:")


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of an mbox, by offsets into the file."""

    start: int  # its From_ line
    content: int  # its first octet after the From_ line
    content_end: int  # its last octet + 1 (the separating empty line excluded)
    end: int  # where the next message starts (or the end of the file)
    size: int  # octets RETR sends
    ready: bool  # the unquoted content is its wire form
    from_crc: int  # CRC-32 of the From_ line: is it still there?
    x_uidl: str | None  # an X-UIDL header's value
    digest: str  # the fallback UIDL


def header_value(headers: bytes, name: bytes) -> str | None:
    """The first value of header ``name`` (unfolded lines only)."""
    match = re.search(rb"(?im)^" + re.escape(name) + rb":[ \t]*([^\r\n]*?)[ \t]*\r?$", headers)
    return None if match is None else match.group(1).decode("utf-8", "replace")


def _filtered(headers: bytes) -> bytes:
    """``headers`` without the fields (and their continuation lines) that
    mail readers rewrite."""
    out, skipping = [], False
    for line in headers.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = _MUTABLE.match(line) is not None
        if not skipping:
            out.append(line)
    return b"".join(out)


class _Digest:
    """The digest and X-UIDL of a message's stored octets, taken as they
    pass (see :data:`_MUTABLE`)."""

    def __init__(self, from_line: bytes) -> None:
        self._hash = hashlib.sha1(from_line)
        self._head: bytearray | None = bytearray()
        self.x_uidl: str | None = None

    def take(self, chunk: bytes) -> None:
        if self._head is None:
            self._hash.update(chunk)
            return
        self._head += chunk
        head = bytes(self._head)
        if head.startswith((b"\n", b"\r\n")):
            end: int | None = 0
        else:
            match = _HEADER_END.search(head)
            end = None if match is None else match.start() + 1
        if end is not None:
            self._end_headers(head[:end])
            self._hash.update(head[end:])
        elif len(head) > _HEADERS_MAX:
            self._head = None
            self._hash.update(head)

    def _end_headers(self, headers: bytes) -> None:
        self._head = None
        self.x_uidl = header_value(headers, b"X-UIDL")
        self._hash.update(_filtered(headers))

    def finish(self) -> str:
        if self._head is not None:  # headers only
            self._end_headers(bytes(self._head))
        return "h" + self._hash.hexdigest()


class _Chunks:
    """The file from ``start`` to ``end``, split at message boundaries."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.offset = start  # the file offset of _buffer[0]
        self._read_to = start
        self._end = end

    def _fill(self) -> bool:
        if self._read_to >= self._end:
            return False
        data = os.pread(self._fd, min(_CHUNK, self._end - self._read_to), self._read_to)
        if not data:
            self._end = self._read_to  # shorter than it was: stop there
            return False
        self._read_to += len(data)
        self._buffer += data
        return True

    def at_message(self) -> bool:
        while len(self._buffer) < len(FROM_) and self._fill():
            pass
        return self._buffer.startswith(FROM_)

    def line(self) -> bytes:
        """The line at the current offset (with its LF), consumed."""
        while b"\n" not in self._buffer and self._fill():
            pass
        newline = self._buffer.find(b"\n")
        cut = len(self._buffer) if newline < 0 else newline + 1
        line, self._buffer = self._buffer[:cut], self._buffer[cut:]
        self.offset += cut
        return line

    def content(self) -> Iterator[bytes]:
        """Chunks up to the next message (its preceding LF included)."""
        while True:
            found = self._buffer.find(_BOUNDARY)
            if found >= 0:
                yield self._take(found + 1)
                return
            keep = len(_BOUNDARY) - 1
            if len(self._buffer) > keep:
                yield self._take(len(self._buffer) - keep)
            if not self._fill():
                if self._buffer:
                    yield self._take(len(self._buffer))
                return

    def _take(self, n: int) -> bytes:
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        self.offset += n
        return data

    @property
    def done(self) -> bool:
        return not self._buffer and not self._fill()


def _without_separator(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """``chunks`` less up to ``count`` final LFs: the empty line before the
    next message, and the line end popframe added to a message that had
    none (:data:`~popframe.stores.mbox.format.NO_FINAL_NEWLINE`)."""
    held = b""
    for chunk in chunks:
        if not chunk:
            continue
        held += chunk
        if len(held) > count:
            yield held[:-count]
            held = held[-count:]
    dropped = len(held) - len(held.rstrip(b"\n"))
    if held[: len(held) - min(dropped, count)]:
        yield held[: len(held) - min(dropped, count)]


def _measured(chunks: Iterator[bytes], digest: _Digest, stored: list[int]) -> Iterator[bytes]:
    """The unquoted octets of ``chunks`` (what RETR reads), digesting the
    stored ones and counting them in ``stored[0]``."""
    unquoter = Unquoter()
    for chunk in chunks:
        digest.take(chunk)
        stored[0] += len(chunk)
        yield unquoter.feed(chunk)
    yield unquoter.finish()


def scan(fd: int, start: int, end: int) -> list[Entry]:
    """The messages in the file from ``start`` (a message's start, or 0)
    to ``end``."""
    chunks = _Chunks(fd, start, end)
    entries: list[Entry] = []
    if start == 0 and not chunks.at_message():
        for _ in chunks.content():  # octets before the first From_ line
            pass
    while not chunks.done:
        begin = chunks.offset
        line = chunks.line()
        content = chunks.offset
        digest = _Digest(line)
        stored = [0]
        strip = 2 if line.rstrip(b"\r\n").endswith(NO_FINAL_NEWLINE) else 1
        form = wire_form(_measured(_without_separator(chunks.content(), strip), digest, stored))
        entries.append(Entry(
            start=begin, content=content, content_end=content + stored[0], end=chunks.offset,
            size=form.size, ready=form.ready, from_crc=zlib.crc32(line),
            x_uidl=digest.x_uidl, digest=digest.finish(),
        ))
    return entries
