"""Reading a message a store opened, for RETR and TOP: a local file at once
on the reactor thread (no Deferred per chunk), anything else through
:class:`~popframe.interfaces.IMessageBody`, one chunk at a time."""

from __future__ import annotations

import io
from typing import IO

from twisted.internet.defer import Deferred

from popframe.interfaces import IMessageBody

__all__ = ["AsyncBody", "Chunk", "FileBody", "as_body"]

#: The file types of the built-in stores' messages (Maildir, mbox, SQL).
_FILE_TYPES = (io.BufferedReader, io.BytesIO, io.FileIO)

#: A chunk of the stored message, and whether it is the last.
Chunk = tuple[bytes, bool]


class FileBody:
    """A binary file read synchronously (the zero-hop path).  ``size``: the
    stored octets when known (a wire-ready RETR), so the read stops there
    without another read to find the end."""

    def __init__(self, file: IO[bytes], size: int | None) -> None:
        self._file = file
        self._left = size

    def read_now(self, size: int) -> Chunk:
        """Up to ``size`` octets; a short read is made sure of, so a message
        of one chunk goes out as +OK, body and "." in one send."""
        chunk = self._file.read(size)
        if self._left is not None:
            self._left -= len(chunk)
            return chunk, not chunk or self._left <= 0
        if not chunk:
            return chunk, True
        if len(chunk) < size:  # usually the end (files read short only there)
            more = self._file.read(size - len(chunk))
            if not more:
                return chunk, True
            chunk += more
        return chunk, False

    def close(self) -> None:
        self._file.close()


class AsyncBody:
    """An :class:`IMessageBody`: one read outstanding at a time.  ``size``
    as for :class:`FileBody`."""

    def __init__(self, body: IMessageBody, size: int | None) -> None:
        self._body = body
        self._left = size

    def read(self, size: int) -> Deferred[Chunk]:
        return self._body.read(size).addCallback(self._got)

    def _got(self, chunk: bytes) -> Chunk:
        if self._left is None:
            return chunk, not chunk
        self._left -= len(chunk)
        return chunk, not chunk or self._left <= 0

    def close(self) -> None:
        self._body.close()


def as_body(opened: IO[bytes] | IMessageBody, size: int | None) -> FileBody | AsyncBody:
    """What ``IMaildrop.open_message`` fired with, as a reader."""
    if isinstance(opened, _FILE_TYPES):  # what the built-in stores give: no interface lookup
        return FileBody(opened, size)
    if IMessageBody.providedBy(opened):
        return AsyncBody(opened, size)
    return FileBody(opened, size)
