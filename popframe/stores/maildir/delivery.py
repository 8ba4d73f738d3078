"""Delivering into a maildir as Dovecot does: the message written in
``tmp/`` under a unique name, flushed to disk, then linked into ``new/``
with its sizes in the name (``,S=`` stored octets, ``,W=`` octets with
CRLF line ends), and ``new/`` flushed, before anyone is told it is
stored.  A POP3 session lists ``new/`` and ``cur/`` only, so it sees the
whole message or none; the listing reads ``,W=`` instead of the file.

A delivery killed half-way leaves a file in ``tmp/`` at worst, which no
session lists.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterator
from typing import BinaryIO

from popframe.files import fsync_directory
from popframe.protocol.encoding import wire_form
from popframe.stores.maildir.directory import Maildir
from popframe.stores.maildir.files import remove_quietly
from popframe.stores.maildir.names import UID_MAX

__all__ = ["MaildirMissing", "deliver_message", "unique_base"]

_CHUNK = 1 << 16
_SEQUENCE = itertools.count(1)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Sizes long enough for any message: ``,S=`` and ``,W=`` with 12 digits.
_SIZES_ROOM = 2 * (3 + 12)


class MaildirMissing(FileNotFoundError):
    """The maildir does not exist and the store does not create maildirs."""


def _host() -> str:
    """This host's name as a maildir name part: ``/`` and ``:`` escaped as
    the maildir specification says, and ``,`` too (it starts a size)."""
    name = socket.gethostname() or "localhost"
    return name.replace("/", r"\057").replace(":", r"\072").replace(",", r"\054")


def unique_base(now: float | None = None) -> str:
    """``SECONDS.M<usec>P<pid>Q<n>.HOST``: unique on this host (a process
    id and a counter within one microsecond), oldest first by its leading
    seconds and then, the microseconds zero-padded, by name; short enough
    with its sizes to be its own POP3 UIDL."""
    now = time.time() if now is None else now
    seconds, micros = divmod(int(now * 1_000_000), 1_000_000)
    head = f"{seconds}.M{micros:06d}P{os.getpid()}Q{next(_SEQUENCE)}."
    return head + _host()[: max(1, UID_MAX - _SIZES_ROOM - len(head))]


def deliver_message(path: str, message: BinaryIO, create: bool = True,
                    name: str | None = None) -> str:
    """Deliver ``message`` (read to its end) into the maildir at ``path``;
    return its name in ``new/`` once it and the directory are on disk.
    ``name``: that name instead of a new one with the sizes (a migration
    keeping a UIDL; FileExistsError if taken).  Blocking: run it in a
    thread."""
    maildir = Maildir(path)
    if not maildir.prepare(create):
        raise MaildirMissing(path)
    for _ in range(100):  # a name taken: a clock stepped back onto a pid reused
        base = unique_base()
        temporary = os.path.join(path, "tmp", base)
        try:
            fd = os.open(temporary, _CREATE, 0o600)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free name in {path}/tmp")
    try:
        try:
            form = wire_form(_written(fd, message))
            size = os.fstat(fd).st_size
            os.fsync(fd)
        finally:
            os.close(fd)
        if name is None:
            name = f"{base},S={size},W={form.size}"
        final = os.path.join(path, "new", name)
        try:
            os.link(temporary, final)
        except OSError as e:
            if isinstance(e, FileExistsError):
                raise
            os.rename(temporary, final)  # no hard links here (some FUSE, AFS)
        fsync_directory(os.path.join(path, "new"))
    finally:
        remove_quietly(temporary)
    return name


def _written(fd: int, message: BinaryIO) -> Iterator[bytes]:
    """The chunks of ``message``, each written to ``fd`` as it passes."""
    for chunk in iter(lambda: message.read(_CHUNK), b""):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        yield chunk
