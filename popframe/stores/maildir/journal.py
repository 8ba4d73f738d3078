"""``popframe.journal``: deletions that happen all or none.

The names a commit is deleting are written to the journal durably (temp
file, fsync, rename, directory fsync) before the first unlink, so a crash
mid-commit is finished by the next open: a commit is all or none.  A file
another agent renamed meanwhile (new flags) is found again by its base
name, and a file already gone is no error.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

from twisted.logger import Logger

from popframe.files import fsync_directory, write_file_atomically
from popframe.stores.maildir.files import open_regular, regular_files, remove_quietly
from popframe.stores.maildir.hiding import with_flag
from popframe.stores.maildir.names import base_name

#: The store's one log namespace, whichever of its files logs.
log = Logger(namespace="popframe.stores.maildir")

JOURNAL_NAME = "popframe.journal"
_JOURNAL_VERSION = 1
#: A journal of messages to hide (dele=hide): renamed with the flag letter
#: rather than unlinked.  A popframe that only knows version 1 discards it
#: and keeps the mail.
_HIDE_VERSION = 2


def delete_all(maildir: str, relatives: list[str],
               fence: Callable[[], None] | None = None) -> None:
    """Delete the messages at ``relatives`` (``cur/NAME``, ``new/NAME``) in
    ``maildir``, all or none: the journal is durable before the first
    unlink, so after a crash :func:`finish_interrupted` does the rest.

    ``fence`` (a lease's :meth:`~popframe.interfaces.IFencedLock.fence`)
    runs before the journal is written and again before the first unlink;
    if it raises, nothing is deleted, and a journal this call wrote is
    removed again (unless another holder's replaced it), so no later open
    finishes a commit the lease no longer allowed.
    """
    _journalled(maildir, relatives, fence, {"version": _JOURNAL_VERSION}, None)


def _journalled(maildir: str, relatives: list[str], fence: Callable[[], None] | None,
                header: dict[str, object], letter: str | None) -> None:
    """Write the journal (``header`` + the names), apply it, remove it;
    ``fence`` before the journal and again before the first change."""
    if not relatives:
        return
    if fence is not None:
        fence()
    journal = os.path.join(maildir, JOURNAL_NAME)
    data = json.dumps({**header, "delete": relatives, "commit": uuid.uuid4().hex}).encode()
    write_file_atomically(journal, data, durable=True)
    if fence is not None:
        try:
            fence()
        except BaseException:
            _withdraw(journal, data)
            raise
    _apply(maildir, relatives, letter)
    os.unlink(journal)

def hide_all(maildir: str, relatives: list[str], letter: str,
             fence: Callable[[], None] | None = None) -> None:
    """:func:`delete_all` for ``dele=hide``: add the flag ``letter`` to
    each message's name instead of unlinking it, all or none (and fenced)
    the same way."""
    _journalled(maildir, relatives, fence, {"version": _HIDE_VERSION, "flag": letter}, letter)


def _withdraw(journal: str, data: bytes) -> None:
    """Remove the journal if it is still the one written as ``data``."""
    try:
        with open_regular(journal) as f:
            if f.read() != data:
                return
    except OSError:
        return
    remove_quietly(journal)


def finish_interrupted(maildir: str) -> set[str]:
    """Finish a commit a crash interrupted.  Returns the base names it
    could not delete yet, which the listing hides: the commit happened.
    """
    journal_path = os.path.join(maildir, JOURNAL_NAME)
    try:
        with open_regular(journal_path) as f:  # not a planted FIFO
            journal = json.load(f)
        relatives = journal["delete"]
        letter = journal.get("flag") if journal["version"] == _HIDE_VERSION else None
        if journal["version"] not in (_JOURNAL_VERSION, _HIDE_VERSION) or not all(
                map(_is_message_path, relatives)) or (
                journal["version"] == _HIDE_VERSION and not _is_letter(letter)):
            raise ValueError("not a journal this version wrote")
    except FileNotFoundError:
        return set()
    except (ValueError, TypeError, KeyError) as e:
        # Written atomically, so this is not our crash: keep the mail.
        log.error("discarding unreadable journal {path}: {error}", path=journal_path, error=e)
        remove_quietly(journal_path)
        return set()
    try:
        _apply(maildir, relatives, letter)
        os.unlink(journal_path)
    except OSError as e:
        log.error("cannot finish journal {path}: {error}", path=journal_path, error=e)
        return {base_name(r.partition("/")[2]) for r in relatives}
    log.info("finished an interrupted commit in {path}", path=maildir)
    return set()


def _apply(maildir: str, relatives: list[str], letter: str | None = None) -> None:
    """Unlink each file (or, with ``letter``, rename it to carry that
    flag), or whatever it was renamed to in ``cur/``; a file already gone
    is fine.  Then make the changes durable.
    """
    touched = {r.partition("/")[0] for r in relatives}
    if letter is not None:
        touched.add("cur")
    current: dict[str, list[str]] | None = None  # base -> cur/ names
    for relative in relatives:
        try:
            if letter is None:
                os.unlink(os.path.join(maildir, relative))
            else:
                _hide(maildir, relative, letter)
            continue
        except FileNotFoundError:
            pass
        if current is None:
            current = {}
            for name in regular_files(os.path.join(maildir, "cur")):
                current.setdefault(base_name(name), []).append(name)
        candidates = current.pop(base_name(relative.partition("/")[2]), [])
        if len(candidates) == 1 and letter is not None:
            try:
                _hide(maildir, "cur/" + candidates[0], letter)
            except FileNotFoundError:
                pass
        elif len(candidates) == 1:  # two files with one base: keep both
            remove_quietly(os.path.join(maildir, "cur", candidates[0]), strict=True)
            touched.add("cur")
    for sub in sorted(touched):
        fsync_directory(os.path.join(maildir, sub))


def _hide(maildir: str, relative: str, letter: str) -> None:
    """Rename the file at ``relative`` into ``cur/`` with the flag
    ``letter`` (no-op when it has it already)."""
    name = relative.partition("/")[2]
    target = with_flag(name, letter)
    if relative == "cur/" + target:
        return
    os.rename(os.path.join(maildir, relative), os.path.join(maildir, "cur", target))


def _is_letter(letter: object) -> bool:
    return isinstance(letter, str) and len(letter) == 1 and "a" <= letter <= "z"


def _is_message_path(relative: object) -> bool:
    """``cur/NAME`` or ``new/NAME`` and nothing else: a journal planted by
    someone with write access to the maildir must not delete outside it.
    """
    if not isinstance(relative, str):
        return False
    sub, _, name = relative.partition("/")
    return (
        sub in ("cur", "new")
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
    )
