"""Maildir file names, and the uids and sort order they give.

A name is ``BASE`` or ``BASE:2,FLAGS``: the base never changes (a flag
change is a rename that keeps it), so it identifies the message, and it
is the UIDL when it is a valid one.  Dovecot puts sizes in the base
(``,S=`` stored, ``,W=`` with CRLF line ends); the size of the message as
sent is read from ``,W=`` rather than from the file.
"""

from __future__ import annotations

import hashlib
import os
import re

#: RFC 1939: a UIDL value is 1 to 70 characters.
UID_MAX = 70

#: Maildir's info part starts at ':'; systems that cannot have ':' in file
#: names use ';' or '!' instead.
_OTHER_INFO = re.compile(r"[;!]2,[A-Za-z]*$")
_VIRTUAL_SIZE = re.compile(r",W=(\d+)")
#: The uids :func:`digest_uid` gives.
_DIGEST_UID = re.compile(r"h[0-9a-f]{40}")
_DIGEST_UID_LINE = re.compile(r"\nh[0-9a-f]{40}\n")


def base_name(name: str) -> str:
    """The part of a maildir file name that never changes: before the info."""
    base, sep, _ = name.partition(":")
    if sep:
        return base
    match = _OTHER_INFO.search(name)
    return name[: match.start()] if match else name


def uid_for(base: str) -> str:
    """The base name when it is a valid UIDL, else a stable digest of it."""
    if 0 < len(base) <= UID_MAX and base.isascii() and base.isprintable() and " " not in base:
        return base
    return digest_uid(base)


def maildir_name_keeps(uid: str) -> bool:
    """Whether a file named ``uid`` would be listed with the UIDL ``uid``."""
    return (uid_for(uid) == uid and base_name(uid) == uid and not is_digest_uid(uid)
            and "/" not in uid and not uid.startswith(".") and not uid.startswith("popframe."))


def digest_uid(text: str) -> str:
    return "h" + hashlib.sha1(os.fsencode(text)).hexdigest()


def is_digest_uid(uid: str) -> bool:
    """Whether ``uid`` has the form :func:`digest_uid` gives."""
    return _DIGEST_UID.fullmatch(uid) is not None


def any_digest_uid(uids: list[str]) -> bool:
    """Whether one of ``uids`` has the form :func:`digest_uid` gives: one
    C-level search of them all, not a match per uid."""
    return _DIGEST_UID_LINE.search("\n" + "\n".join(uids) + "\n") is not None


def delivery_order(base: str) -> str:
    """A sort key for "oldest first": the delivery second the name starts
    with (``1700000000.M123456P42.host``), then the name.  A string, not a
    tuple, because sorting 100,000 strings is several times faster; the
    length of the number first makes string order numeric order.
    """
    head = base.partition(".")[0]
    if head.isdigit() and head.isascii() and len(head) < 32:
        return chr(0x40 + len(head)) + base
    return "\x7f" + base  # no timestamp: after all that have one


def size_from_name(base: str) -> int | None:
    """Dovecot's ``,W=`` virtual size: the message with CRLF line ends."""
    match = _VIRTUAL_SIZE.search(base)
    return int(match.group(1)) if match and match.group(1).isascii() else None


def cur_order(name: str) -> str:
    """The sort key a build of the listing gives the ``cur/`` file
    ``name``: its delivery order, then its path in the maildir."""
    return delivery_order(base_name(name)) + "\0cur/" + name
