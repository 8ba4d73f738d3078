"""A message on its way in, kept in an anonymous temporary file as its
octets arrive, so a 50 MB message costs the process no memory; then read
back, as often as there are recipients, each reader with its own offset.

Anonymous (``O_TMPFILE`` where the system has it): a process killed while
receiving leaves nothing behind to clean up.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import BinaryIO

__all__ = ["Spool", "SpooledMessage"]

#: Largest read a spool reader hands out at once.
CHUNK = 1 << 16


class Spool:
    """Octets written in pieces.  Past ``max_size`` nothing more is kept
    (``too_big`` says so), but the writer may go on feeding the rest, as
    an LMTP DATA phase must read to its end before it can answer."""

    def __init__(self, directory: str | None = None, max_size: int | None = None) -> None:
        # Not a with: the file outlives this call (finish() hands it on).
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self.max_size = max_size
        self.size = 0
        self.too_big = False
        self._blank = True  # only white space so far

    def write(self, data: bytes) -> None:
        if not data or self.too_big:
            return
        if self.max_size is not None and self.size + len(data) > self.max_size:
            self.too_big = True
            return
        self._file.write(data)
        self.size += len(data)
        if self._blank and data.strip():
            self._blank = False

    def finish(self) -> SpooledMessage:
        """The message as received; the spool's file now belongs to it."""
        self._file.flush()
        return SpooledMessage(self._file, self.size, blank=self._blank)

    def discard(self) -> None:
        self._file.close()


class SpooledMessage:
    """A received message: its size, whether it held anything but white
    space, and independent readers for the stores."""

    def __init__(self, file: BinaryIO, size: int, blank: bool = False) -> None:
        self._file = file
        self.size = size
        self.blank = blank

    def open(self) -> BinaryIO:
        """A new seekable reader at the start (its own offset: readers for
        several recipients may run in several threads at once)."""
        return io.BufferedReader(_PositionalReader(self._file.fileno(), self.size), CHUNK)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpooledMessage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PositionalReader(io.RawIOBase):
    """Reads a shared descriptor with ``pread`` at an offset of its own;
    closing it leaves the descriptor open (the message owns it)."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._size = size
        self._offset = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._size - self._offset)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._offset)
        n = len(data)
        buffer[:n] = data
        self._offset += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._offset, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._offset = base + offset
        return self._offset

    def tell(self) -> int:
        return self._offset
