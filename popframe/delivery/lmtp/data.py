"""The DATA phase of SMTP and LMTP as a sans-IO decoder: bytes in, the
message out, dot-unstuffed, and where it ended.

The message ends at a line ``.`` after a CRLF (RFC 5321 4.1.1.4), and
only there: a ``.`` line after a bare LF is data (the "SMTP smuggling"
ambiguity is closed on our side).  A line starting with ``.`` loses that
dot.  The decoder copies everything between line starts that begin with
``.`` in one slice, so a 50 MB message costs a few searches per chunk,
and it never holds more than two octets back.
"""

from __future__ import annotations

__all__ = ["DataDecoder"]


class DataDecoder:
    """Feed it what the client sends after ``354``; it returns message
    octets, and once the end is seen, what followed it (the next
    commands, which a pipelining client may send right after)."""

    def __init__(self) -> None:
        self._before = b"\r\n"  # the last two octets read (DATA's line ended)
        self._held = b""  # a line start ".", ".\r": undecided
        self.done = False

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        """``(message octets, rest)``: ``rest`` is None until the end
        was found, then the octets after it."""
        if self.done:
            raise RuntimeError("the DATA phase already ended")
        data = self._held + chunk
        self._held = b""
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < len(data):
            before = (self._before + data[max(0, pos - 2) : pos])[-2:]
            if before.endswith(b"\n") and data[pos : pos + 1] == b".":
                after = data[pos + 1 : pos + 3]
                if before == b"\r\n" and after == b"\r\n":
                    self.done = True
                    return b"".join(out), data[pos + 3 :]
                if len(after) < 2 and b"\r\n".startswith(after):
                    end = pos  # "." or ".\r" last: wait for more
                    self._held = data[pos:]
                    break
                pos += 1  # a stuffed dot
            found = data.find(b"\n.", pos)
            stop = len(data) if found < 0 else found + 1
            out.append(data[pos:stop])
            pos = stop
        self._before = (self._before + data[:end])[-2:]
        return b"".join(out), None
