"""Small, careful file operations shared by stores, checkers, TLS and the
demo."""

from __future__ import annotations

import errno
import os
import secrets
import threading
from typing import Generic, TypeVar

from twisted.logger import Logger

from popframe.errors import TemporaryFailure

__all__ = ["FileKey", "WatchedFile", "file_key", "fsync_directory", "write_file_atomically"]

T = TypeVar("T")
log = Logger()


def write_file_atomically(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o600, durable: bool = True
) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new
    one, never half of one, and the new file has ``mode`` from its first
    byte (a key is never readable by others, even for a moment).

    ``durable`` flushes the file and the rename to disk before returning;
    a cache may skip that, a journal or a key must not.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, mode)
    try:
        try:
            os.fchmod(descriptor, mode)  # os.open's mode passes through the umask
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_directory(directory or ".")


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make renames and unlinks in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # no directory fsync here
            raise
    finally:
        os.close(descriptor)


#: What changes when a file is edited or replaced: device, inode, size,
#: mtime, and ctime too (a chmod that makes it unreadable must not go
#: unnoticed).
FileKey = tuple[int, int, int, int, int]


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class WatchedFile(Generic[T]):
    """A configuration file (users, keys) read at start and again whenever
    its stat changes, so edits take effect without a restart.  While it is
    missing, unreadable or invalid, :meth:`current` raises
    ``TemporaryFailure``: nobody logs in against a table the admin may have
    just withdrawn.  Each lookup costs one ``stat``; a reload swaps the
    parsed value in one assignment, so concurrent readers (a thread pool)
    see the old value or the new one.

    Subclasses give :meth:`parse` (``ValueError`` for an unusable file),
    :meth:`summary` for the log line of a reload, and ``problem`` for the
    error line (each problem is logged once, not once per login).
    """

    problem = "cannot use the file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(path)
        self._current: tuple[FileKey, T] | None = None
        self._lock = threading.Lock()
        self._reported: str | None = None

    def parse(self, data: bytes) -> T:
        raise NotImplementedError

    def summary(self, value: T) -> str:
        raise NotImplementedError

    def load(self) -> T:
        """Read the file now; ``OSError`` or ``ValueError`` (for checks at
        start-up)."""
        with self._lock:
            return self._reload()

    def current(self) -> T:
        """The parsed file, re-read first if it changed."""
        try:
            key = file_key(os.stat(self.path))
            current = self._current
            if current is not None and current[0] == key:
                return current[1]
            with self._lock:
                current = self._current
                if current is not None and current[0] == key:
                    return current[1]
                return self._reload()
        except (OSError, ValueError) as error:
            self._report(error)
            raise TemporaryFailure() from error

    def last(self) -> T | None:
        """The parsed file as it was last read (None: never read), with no
        system call at all."""
        current = self._current
        return current[1] if current is not None else None

    def unchanged(self) -> T | None:
        """The parsed file if it has not changed since it was read, else
        None: one ``stat``, never a read, so the reactor thread may ask."""
        current = self._current
        try:
            key = file_key(os.stat(self.path))
        except OSError:
            return None
        return current[1] if current is not None and current[0] == key else None

    def _reload(self) -> T:
        with open(self.path, "rb") as f:
            key = file_key(os.fstat(f.fileno()))
            data = f.read()
        value = self.parse(data)
        self._current = (key, value)
        self._reported = None
        log.info("{path}: {summary}", path=self.path, summary=self.summary(value))
        return value

    def _report(self, error: Exception) -> None:
        text = getattr(error, "strerror", None) or str(error)
        if text != self._reported:
            self._reported = text
            log.error("{path}: {problem}: {error}", path=self.path, problem=self.problem,
                      error=text)
