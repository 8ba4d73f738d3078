"""A small durable map from uid to a number beside a file store's
maildrop: which messages ``dele=hide`` hid (mbox), and when each was
retrieved (RFC 2449 EXPIRE; Maildir and mbox).  JSON, replaced whole
and durably (temp file, fsync, rename), so a crash leaves the old map or
the new one: one write is all or none."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable

from twisted.logger import Logger

from popframe.files import write_file_atomically

__all__ = ["date_retrievals", "read_uid_map", "retrieved_before", "write_uid_map"]

log = Logger(namespace="popframe.stores")


def read_uid_map(path: str) -> dict[str, float]:
    """The map at ``path``; empty when missing.  A damaged one is logged
    and read as empty (it only ever hides or expires mail: losing it keeps
    mail)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read() or b"{}")
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) for k, v in data.items()):
            raise ValueError("not a map of uids to numbers")
        return {k: float(v) for k, v in data.items()}
    except (OSError, ValueError) as error:
        log.error("ignoring {path}: {error}", path=path, error=error)
        return {}


def write_uid_map(path: str, values: dict[str, float]) -> None:
    """Replace the map at ``path`` durably (removed when empty)."""
    if not values:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    data = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    write_file_atomically(path, data, durable=True)


def date_retrievals(path: str, listed: Collection[str], uids: Iterable[str],
                    when: float) -> None:
    """EXPIRE: note ``uids`` as retrieved at ``when`` in the map at
    ``path``, keeping earlier dates and forgetting uids no longer
    ``listed`` (deleted since)."""
    dates = {uid: date for uid, date in read_uid_map(path).items() if uid in listed}
    for uid in uids:
        dates.setdefault(uid, when)
    write_uid_map(path, dates)


def retrieved_before(path: str, listed: Iterable[str], cutoff: float) -> list[str]:
    """The ``listed`` uids the map at ``path`` dates before ``cutoff``."""
    dates = read_uid_map(path)
    return [uid for uid in listed if dates.get(uid, cutoff) < cutoff]
