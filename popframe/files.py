"""Small, careful file operations shared by stores, TLS and the demo."""

from __future__ import annotations

import errno
import os
import secrets


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
