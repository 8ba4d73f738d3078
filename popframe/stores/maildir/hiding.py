"""``dele=hide``: DELE keeps the file and hides it from POP3, as Dovecot's
``pop3_deleted_flag = $POP3Deleted`` does.  The mark is a Dovecot keyword:
a lower-case flag letter in the file name's info part (``:2,Sa``), the
letter being the keyword's line number in ``dovecot-keywords`` (``0
$POP3Deleted`` gives ``a``).  So Dovecot configured with that
``pop3_deleted_flag`` hides the same messages, and IMAP clients still see
them, with the keyword."""

from __future__ import annotations

import os

from popframe.files import write_file_atomically
from popframe.stores.maildir.files import open_regular

__all__ = ["HIDDEN_KEYWORD", "KEYWORDS_NAME", "flag_letter", "is_hidden", "with_flag"]

KEYWORDS_NAME = "dovecot-keywords"
HIDDEN_KEYWORD = "$POP3Deleted"
#: Maildir keywords are the letters a-z.
_LETTERS = 26


def _read_keywords(maildir: str) -> dict[int, str]:
    try:
        with open_regular(os.path.join(maildir, KEYWORDS_NAME)) as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    keywords: dict[int, str] = {}
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isascii() and number.isdigit() and name and int(number) < _LETTERS:
            keywords[int(number)] = name
    return keywords


def flag_letter(maildir: str, create: bool = False) -> str | None:
    """The letter of ``$POP3Deleted`` in ``maildir``; None when it has none
    yet (nothing is hidden), unless ``create``: then the keyword is added
    to ``dovecot-keywords`` at the first free number.  ``OSError`` when
    all 26 letters are taken."""
    keywords = _read_keywords(maildir)
    for number, name in keywords.items():
        if name == HIDDEN_KEYWORD:
            return chr(ord("a") + number)
    if not create:
        return None
    free = next((n for n in range(_LETTERS) if n not in keywords), None)
    if free is None:
        raise OSError(f"{maildir}: all 26 keyword letters are taken in {KEYWORDS_NAME}")
    keywords[free] = HIDDEN_KEYWORD
    text = "".join(f"{n} {name}\n" for n, name in sorted(keywords.items()))
    write_file_atomically(os.path.join(maildir, KEYWORDS_NAME), text.encode(), durable=True)
    return chr(ord("a") + free)


def _info(name: str) -> tuple[str, str] | None:
    """(name before the flags, flags) of a name with an info part."""
    for mark in (":2,", ";2,", "!2,"):
        head, found, flags = name.rpartition(mark)
        if found:
            return head + mark, flags
    return None


def is_hidden(name: str, letter: str) -> bool:
    """Whether the ``cur/`` name ``name`` carries the flag ``letter``."""
    info = _info(name)
    return info is not None and letter in info[1]


def with_flag(name: str, letter: str) -> str:
    """``name`` with ``letter`` among its flags (in ASCII order, as the
    Maildir specification wants), adding ``:2,`` when it has no info."""
    info = _info(name)
    head, flags = info if info is not None else (name + ":2,", "")
    return head + "".join(sorted(set(flags + letter)))
