"""The format of ``popframe.sizes``: the RETR size of each message, and
whether the file already is its wire form, by base name, so the next
build of a large maildrop's listing reads no message.  Only a cache:
losing or corrupting it costs one re-read.

The file: ``"popframe-sizes 2\n"``, the base names joined by LF, NUL, the
sizes joined by ``,``, NUL, one ``1`` (wire-ready) or ``0`` per name:
parsed by a few C-level splits, no per-line Python.  Version 1 (no flags)
is read as not wire-ready rather than thrown away: re-reading every
message of every maildrop after an upgrade would cost more than encoding
the few old messages a client fetches again.
"""

from __future__ import annotations

import os
from itertools import repeat
from operator import itemgetter

SIZES_NAME = "popframe.sizes"
_SIZES_HEADER = "popframe-sizes 2"
_SIZES_HEADER_V1 = "popframe-sizes 1"  # sizes without ready flags: read as not ready

#: A size cache entry: the RETR size and whether the file is its wire form.
Form = tuple[int, bool]


def parse_sizes(data: bytes) -> dict[str, Form]:
    """The entries of a size cache file; ValueError if it is not one this
    version can read."""
    header, _, body = os.fsdecode(data).partition("\n")
    if header == _SIZES_HEADER:
        names, sizes, flags = body.split("\0")
    elif header == _SIZES_HEADER_V1:
        names, _, sizes = body.partition("\0")
        flags = None
    else:
        raise ValueError("unknown format")
    if not names:
        return {}
    keys = names.split("\n")
    numbers = list(map(int, sizes.split(",")))
    if min(numbers) < 0:
        raise ValueError("negative size")
    if flags is not None and flags.strip("01"):
        raise ValueError("bad flags")
    ready = repeat(False, len(keys)) if flags is None else map("1".__eq__, flags)
    return dict(zip(keys, zip(numbers, ready, strict=True), strict=True))


def format_sizes(forms: dict[str, Form]) -> bytes:
    """The file for ``forms``, less any base name with a LF in it."""
    usable = {b: form for b, form in forms.items() if "\n" not in b}
    names = "\n".join(usable)
    numbers = ",".join(map(str, map(itemgetter(0), usable.values())))
    flags = "".join(map("01".__getitem__, map(itemgetter(1), usable.values())))
    text = f"{_SIZES_HEADER}\n{names}\0{numbers}\0{flags}"
    return os.fsencode(text)
