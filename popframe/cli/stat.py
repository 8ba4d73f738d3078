"""``popframe stat --store STORE USER``: what a client logging in as USER
would find (messages, octets), and who holds the maildrop's lock if a
session does.

It opens the maildrop as a session would, through the store's own
``open`` (so it works for any store, and Maildir's new mail is moved to
``cur/`` as at a login), holds the lock for the moment it takes to list,
and abandons it: nothing is deleted.  When the lock is taken, the holder
is found for stores whose locks are ``flock`` files (maildir, mbox): the
kernel's lock table (``/proc/locks``) names the process.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from twisted.internet import defer

from popframe.cli.errors import CLIError
from popframe.errors import MaildropInUse, POP3Error
from popframe.protocol.listing import MessageList

__all__ = ["flock_holders", "maildrop_stat"]

HELP = "Show a user's maildrop: messages, octets, and the lock holder if a session has it."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True,
                        help="where maildrops live, as twistd pop3 --store takes it, e.g. "
                             "maildir:/var/mail/%%u/Maildir")
    parser.add_argument("user", metavar="USER", help="the user, as they log in")


def run(args: argparse.Namespace) -> int:
    from popframe.cli._reactor import run_reactor
    from popframe.stores import store_from_description

    store = store_from_description(args.store)  # a ConfigurationError is one line
    found = run_reactor(lambda: maildrop_stat(store, args.user))
    print(f"user {args.user}")
    if found["locked"]:
        print("messages unknown (locked)")
        holders = found["holders"]
        if holders:
            print("lock held by " + ", ".join(f"pid {pid} ({name})" for pid, name in holders))
        else:
            print("lock held by another session")
        return 0
    print(f"messages {found['messages']}")
    print(f"octets {found['octets']}")
    print("lock free")
    return 0


class _KeyRecorder:
    """Stands in for a store's locker and remembers which key (for a
    ``FileLocker``: the lock file) the store asked it for."""

    def __init__(self, locker: Any) -> None:
        self.locker = locker
        self.keys: list[str] = []

    def acquire(self, key: str) -> Any:
        self.keys.append(key)
        return self.locker.acquire(key)


@defer.inlineCallbacks
def maildrop_stat(store: Any, user: str) -> Any:
    """``{"locked": False, "messages": n, "octets": n}``, or
    ``{"locked": True, "holders": [(pid, name), ...]}``."""
    recorder = None
    if getattr(store, "locker", None) is not None:
        recorder = store.locker = _KeyRecorder(store.locker)
    try:
        maildrop = yield store.open(user)
    except MaildropInUse:
        keys = recorder.keys if recorder is not None else []
        return {"locked": True, "holders": [h for k in keys for h in flock_holders(k)]}
    except POP3Error as error:
        raise CLIError(f"{user}: {error.message}") from None
    finally:
        if recorder is not None:
            store.locker = recorder.locker
    try:
        listing = MessageList.of(maildrop.listing())
        return {"locked": False, "messages": len(listing), "octets": listing.total}
    finally:
        yield maildrop.abandon()


def flock_holders(path: str, locks: str = "/proc/locks") -> list[tuple[int, str]]:
    """The processes holding a ``flock`` on the file at ``path``, from the
    kernel's lock table: (pid, command name)."""
    try:
        found = os.stat(path)
        with open(locks) as f:
            table = f.read()
    except OSError:
        return []
    # MAJOR:MINOR (hex) :INODE, as the table writes the file's identity.
    wanted = (os.major(found.st_dev), os.minor(found.st_dev), found.st_ino)
    holders = []
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            identity = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if identity == wanted and pid > 0:
            holders.append((pid, _process_name(pid)))
    return holders


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"
