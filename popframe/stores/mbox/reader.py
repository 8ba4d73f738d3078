"""A listed message read out of the mbox for RETR and TOP: its stored
octets between two offsets, unquoted as they pass.  A plain synchronous
file object (the server's zero-hop path: a local file, read on the
reactor thread), reading with ``pread`` so nothing else moves its offset.
"""

from __future__ import annotations

import os

from popframe.stores.mbox.format import Unquoter

__all__ = ["MessageReader"]

_CHUNK = 1 << 16


class MessageReader:
    """The message from ``start`` to ``end`` of the mbox open at ``fd``
    (which the reader owns and closes)."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self._fd: int | None = fd
        self._offset = start
        self._end = end
        self._unquoter = Unquoter()
        self._ready = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` octets (all that is left for -1); ``b""`` only
        at the end."""
        want = self._end if size < 0 else size
        while len(self._ready) < want and not self._done:
            self._ready += self._next()
        if size < 0:
            data, self._ready = self._ready, b""
        else:
            data, self._ready = self._ready[:size], self._ready[size:]
        return data

    def _next(self) -> bytes:
        if self._fd is None:
            raise ValueError("read of a closed message")
        left = self._end - self._offset
        chunk = os.pread(self._fd, min(_CHUNK, left), self._offset) if left > 0 else b""
        if not chunk:
            self._done = True
            return self._unquoter.finish()
        self._offset += len(chunk)
        return self._unquoter.feed(chunk)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> MessageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
