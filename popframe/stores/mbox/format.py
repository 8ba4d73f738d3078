"""The mbox file format as mboxrd writes it: each message starts with a
``From SENDER DATE`` line and ends with an empty line; a message line that
starts with ``From `` behind any number of ``>`` gets one more ``>``
(quoting), and one comes off when the message is read (unquoting), so any
message survives the trip unchanged.

Both rewrites work chunk by chunk: a line start split between chunks is
held back (at most a few octets: a run of ``>`` is let through but one,
since adding or removing one ``>`` anywhere in the run is the same), so a
line of any length costs no memory.
"""

from __future__ import annotations

import re
import time

__all__ = ["FROM_", "NO_FINAL_NEWLINE", "Quoter", "Unquoter", "from_line", "quoted_lines"]

FROM_ = b"From "
#: Added to the ``From`` line of a message that had no final line end: the
#: format needs one before the empty separating line, and this says it is
#: not the message's, so RETR gives the octets back exactly.  Traditional
#: readers ignore words after the date (as UUCP's "remote from HOST").
NO_FINAL_NEWLINE = b" popframe:no-final-newline"
_QUOTABLE = re.compile(rb"^(>*From )", re.MULTILINE)
_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_SENDER_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")


def from_line(sender: str | None, when: float | None = None, final_newline: bool = True) -> bytes:
    """``From SENDER Thu Nov 14 22:13:20 2023`` and LF, as Postfix and
    procmail write it (``asctime`` in local time); ``MAILER-DAEMON`` when
    the sender is unknown, empty (bounces) or would break the line; with
    :data:`NO_FINAL_NEWLINE` when the message lacks a final line end."""
    sender = (sender or "").strip().removeprefix("<").removesuffix(">")
    if not sender or _SENDER_UNSAFE.search(sender) or not sender.isascii():
        sender = "MAILER-DAEMON"
    stamp = time.asctime(time.localtime(time.time() if when is None else when))
    line = f"From {sender} {stamp}".encode("ascii")
    return line + (b"" if final_newline else NO_FINAL_NEWLINE) + b"\n"


def quoted_lines(data: bytes) -> int:
    """How many lines of ``data`` (taken as starting at a line start) are
    quoted ``>+From`` lines, each one octet longer stored than read."""
    return len(_QUOTED.findall(data))


class _LineStarts:
    """A rewrite of the lines matching ``pattern`` at their start."""

    pattern: re.Pattern[bytes]
    replacement: bytes

    def __init__(self) -> None:
        self._held = b""  # a line start that may still become a match
        self._line_start = True  # the next octet (after _held) starts a line
        self.rewritten = 0  # lines changed so far

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        if not data:
            return b""
        starts_line = self._line_start or bool(self._held)
        self._held = b""
        last = data.rfind(b"\n")
        tail_start = last + 1 if last >= 0 else (0 if starts_line else -1)
        out_end = len(data)
        if tail_start >= 0:
            keep = _undecided(data, tail_start)
            if keep is not None:
                out_end, self._held = keep, data[keep:]
        self._line_start = out_end > 0 and data[out_end - 1 : out_end] == b"\n" or (
            out_end == 0 and starts_line)
        return self._rewrite(data[:out_end], starts_line)

    def finish(self) -> bytes:
        """What is still held back (the stream ended)."""
        held, self._held = self._held, b""
        return held

    def _rewrite(self, data: bytes, starts_line: bool) -> bytes:
        if not data:
            return b""
        head = b""
        if not starts_line:
            newline = data.find(b"\n")
            if newline < 0:
                return data
            head, data = data[: newline + 1], data[newline + 1 :]
        new, count = self.pattern.subn(self.replacement, data)
        self.rewritten += count
        return head + new


def _undecided(data: bytes, start: int) -> int | None:
    """Where to cut ``data`` so that the unfinished last line from
    ``start`` on, if it may yet turn out to be a ``>*From`` line, is held
    back; None when it cannot (it is decided, or it is not such a line).
    A run of ``>`` is let through but its last one."""
    tail = data[start:]
    stripped = tail.lstrip(b">")
    if len(stripped) >= len(FROM_) or not FROM_.startswith(stripped):
        return None
    run = len(tail) - len(stripped)
    return start + max(0, run - 1)


class Quoter(_LineStarts):
    """mboxrd quoting, for writing a message into an mbox."""

    pattern = _QUOTABLE
    replacement = rb">\1"


class Unquoter(_LineStarts):
    """mboxrd unquoting, for reading a message out of an mbox."""

    pattern = _QUOTED
    replacement = rb"\1"
