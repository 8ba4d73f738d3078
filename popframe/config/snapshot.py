"""Files read before privileges are dropped, for processes that never had
them.

``twistd --uid/--gid`` drops root after ``makeService``: what one process
needs from root-only files (TLS keys, a ``--config`` file with secrets) is
read by then.  ``--workers`` processes start later, as the unprivileged
user, and parse the same arguments again: the parent hands them the
contents it read as root (:mod:`popframe.workers.pool`), which
:func:`read_file` answers from while a worker parses its arguments.  A
reload reads the disk again, as the user serving: keys that a SIGHUP should
reload must be readable by that user.
"""

from __future__ import annotations

import os

__all__ = ["SNAPSHOT", "read_file"]

#: Contents by absolute path; empty except while a worker parses.
SNAPSHOT: dict[str, bytes] = {}


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The contents of ``path``: from :data:`SNAPSHOT`, else the disk
    (``OSError`` as ``open`` raises it)."""
    found = SNAPSHOT.get(os.path.abspath(path))
    if found is not None:
        return found
    with open(path, "rb") as file:
        return file.read()
