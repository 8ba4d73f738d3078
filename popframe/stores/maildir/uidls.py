"""UIDLs as another server served them from the same maildir, so clients
that leave mail on the server do not download it all again after a move
to popframe (the store option ``uidl=FORMAT``, docs/migration.md):

- ``popframe``: the base name (see :mod:`.names`), the default;
- ``dovecot`` or ``dovecot:TEMPLATE``: Dovecot 2.3/2.4.  A POP3 UIDL
  Dovecot recorded in ``dovecot-uidlist`` (the ``P`` field:
  ``pop3_save_uidl = yes``, or a migration into Dovecot) wins; otherwise
  ``pop3_uidl_format``'s template (default ``%08Xu%08Xv``) over the IMAP
  uid ``%u``, the uidvalidity ``%v``, the GUID ``%g`` (the ``G`` field,
  else the base name, as Dovecot gives it for maildir) and the base name
  ``%f``.  Messages in Dovecot's POP3 order (IMAP uid).
- ``courier``: Courier's ``courierpop3dsizelist`` (``/2 NEXTUID UIDV``
  then ``NAME SIZE N:UIDV`` per message) gives ``UID<N>-<UIDV>``, in N's
  order; a line without ``N:UIDV`` (an older list) gives the name.
- ``maildir``: the base name up to the first ``:``, as qmail-pop3d and
  tpop3d serve it.
- ``x-uidl``: an ``X-UIDL:`` header's value (the headers of each message
  read once; the values kept by base name in ``popframe.x-uidl``).

A message the source does not know gets its popframe uid.  Every UIDL
still obeys RFC 1939 section 7: one that is not 1-70 characters of
0x21-0x7E, or that an earlier message already has, is replaced by the
popframe uid (or a digest, if that is taken too) and logged once.  The
result is a new :class:`Snapshot` over the same files, remembered per
maildir while the listing and the source file stay the same, so an
unchanged maildrop is not mapped again.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from twisted.logger import Logger

from popframe.interfaces import MessageList
from popframe.protocol.listing import valid_uid
from popframe.stores.maildir.files import open_regular
from popframe.stores.maildir.listing import Snapshot, relative_path
from popframe.stores.maildir.names import base_name, digest_uid
from popframe.stores.mbox.scan import header_value

log = Logger(namespace="popframe.stores.maildir")

__all__ = [
    "DOVECOT_UIDLIST",
    "COURIER_SIZELIST",
    "X_UIDL_CACHE",
    "UidlFormat",
    "parse_uidl_format",
    "read_courier_sizelist",
    "read_dovecot_uidlist",
]

DOVECOT_UIDLIST = "dovecot-uidlist"
COURIER_SIZELIST = "courierpop3dsizelist"
X_UIDL_CACHE = "popframe.x-uidl"
#: Dovecot's default ``pop3_uidl_format``.
DOVECOT_DEFAULT = "%08Xu%08Xv"
FORMATS = ("popframe", "dovecot", "courier", "maildir", "x-uidl")
#: One ``pop3_uidl_format`` variable: ``%`` [0] [width] [modifiers] letter.
_VARIABLE = re.compile(r"%(0?)(\d*)([XLU]*)([uvgf%])")
#: Headers longer than this are not searched for X-UIDL.
_HEADERS_MAX = 1 << 16
_X_UIDL_HEADER = b"popframe-x-uidl 1\n"


def parse_uidl_format(text: str) -> str:
    """The store option's value, checked: a name of :data:`FORMATS`, or
    ``dovecot:TEMPLATE`` with the variables ``%u %v %g %f`` (ValueError
    otherwise)."""
    name, colon, template = text.partition(":")
    if name not in FORMATS or (colon and name != "dovecot"):
        raise ValueError("expected popframe|dovecot[:TEMPLATE]|courier|maildir|x-uidl")
    if colon:
        rest = _VARIABLE.sub("", template)
        if not template or "%" in rest:
            raise ValueError(f"dovecot template {template!r}: expected text and the "
                             "variables %u %v %g %f (with 0, a width, X, L or U)")
    return text


# -- the sources -------------------------------------------------------------------------


class DovecotRecord(NamedTuple):
    """One message of ``dovecot-uidlist``."""

    uid: int
    pop3_uidl: str | None  # the P field
    guid: str | None  # the G field


def _base(name: str) -> str:
    """:func:`~.names.base_name`, without its regular expression for the
    usual name (one with ``:``, or no info at all)."""
    base, colon, _ = name.rpartition("/")[2].partition(":")
    return base if colon or "2," not in base else base_name(base)


def read_dovecot_uidlist(data: bytes) -> tuple[int, dict[str, DovecotRecord]]:
    """The uidvalidity and the records by base name of a ``dovecot-uidlist``
    (version 3, ``3 V<uidvalidity> N<next> G<guid>`` then ``UID [FIELDS] :NAME``;
    or version 1, ``1 UIDVALIDITY NEXT`` then ``UID NAME``).  ValueError if
    it is neither."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    header = lines[0].split()
    if header[:1] == ["3"]:
        fields = {f[:1]: f[1:] for f in header[1:] if f}
        uidvalidity = fields.get("V", "")
    elif header[:1] == ["1"] and len(header) >= 2:
        uidvalidity = header[1]
    else:
        raise ValueError("not a dovecot-uidlist of version 1 or 3")
    if not uidvalidity.isdigit():
        raise ValueError("no uidvalidity")
    records: dict[str, DovecotRecord] = {}
    for line in lines[1:]:
        if not line:
            continue
        head, colon, name = line.partition(" :")
        if not colon:  # version 1: "UID NAME"
            head, _, name = line.partition(" ")
        number, space, extensions = head.partition(" ")
        if not number.isdigit() or not name:
            raise ValueError(f"bad line {line[:80]!r}")
        pop3_uidl = guid = None
        if space:  # extension fields: only P and G matter here
            for field in extensions.split(" "):
                if field[:1] == "P":
                    pop3_uidl = field[1:]
                elif field[:1] == "G":
                    guid = field[1:]
        records[_base(name)] = DovecotRecord(int(number), pop3_uidl, guid)
    return int(uidvalidity), records


def read_courier_sizelist(data: bytes) -> dict[str, tuple[int, str]]:
    """(order, UIDL) by base name from a ``courierpop3dsizelist``."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if not lines[0].startswith("/"):
        raise ValueError("not a courierpop3dsizelist (no /VERSION header)")
    found: dict[str, tuple[int, str]] = {}
    for position, line in enumerate(lines[1:]):
        words = line.split(" ")
        if len(words) < 2:
            continue
        name = uidl = _base(words[0])
        order = (1 << 62) + position
        n, colon, uidv = words[2].partition(":") if len(words) > 2 else ("", "", "")
        if colon and n.isdigit() and uidv.isdigit() and int(n):
            uidl, order = f"UID{int(n)}-{int(uidv)}", int(n)
        found[name] = (order, uidl)
    return found


def compile_template(template: str) -> Callable[[int, int, str, str], str]:
    """``pop3_uidl_format`` as a function of (uid, uidvalidity, guid, base
    name): one ``str.format`` call per message, not a regular expression."""
    pieces: list[str] = []
    cased: list[tuple[int, str]] = []  # (index of the field, L or U): done after
    at = 0
    for match in _VARIABLE.finditer(template):
        pieces.append(template[at : match.start()].replace("{", "{{").replace("}", "}}"))
        at = match.end()
        zero, width, modifiers, letter = match.groups()
        if letter == "%":
            pieces.append("%")
            continue
        hexadecimal = "X" in modifiers and letter in "uv"
        spec = f"{zero}{width}" if letter in "uv" else (f"{'0' if zero else ' '}>{width}"
                                                        if width else "")
        pieces.append("{%s:%s%s}" % (letter, spec, "x" if hexadecimal else ""))
        if "L" in modifiers or "U" in modifiers:
            cased.append((len(pieces) - 1, "U" if "U" in modifiers else "L"))
    pieces.append(template[at:].replace("{", "{{").replace("}", "}}"))
    if not cased:
        text = "".join(pieces)
        return lambda u, v, g, f: text.format(u=u, v=v, g=g, f=f)
    parts = [(piece, dict(cased).get(i)) for i, piece in enumerate(pieces)]

    def expand(u: int, v: int, g: str, f: str) -> str:
        out = []
        for piece, case in parts:
            value = piece.format(u=u, v=v, g=g, f=f)
            out.append(value.upper() if case == "U" else value.lower() if case == "L" else value)
        return "".join(out)

    return expand


def read_headers(path: str) -> bytes:
    """A message's header block (at most 64 KiB of it)."""
    with open_regular(path) as f:
        head = f.read(_HEADERS_MAX)
    end = re.search(rb"\r?\n\r?\n", head)
    return head if end is None else head[: end.start() + 1]


# -- the formats -------------------------------------------------------------------------


#: What a format gives each message of a listing: a UIDL or None (not
#: known: the popframe uid), and a sort key or None (keep the order).
Mapped = tuple[list[str | None], list[int] | None]


class UidlFormat:
    """One ``uidl=`` value, applied to the listings of a store's maildirs."""

    def __init__(self, spec: str) -> None:
        self.spec = parse_uidl_format(spec)
        name, _, template = spec.partition(":")
        self.name = name
        self.template = template or DOVECOT_DEFAULT
        self._expand = compile_template(self.template)
        self.source = {"dovecot": DOVECOT_UIDLIST, "courier": COURIER_SIZELIST}.get(name)
        self._mappers: dict[str, Callable[[str, list[str]], Mapped]] = {
            "dovecot": self._dovecot, "courier": self._courier,
            "maildir": self._maildir, "x-uidl": self._x_uidl}
        self._remembered = _Remembered()

    def remembered(self, path: str, snapshot: Snapshot) -> Snapshot | None:
        """The mapped listing if made from ``snapshot`` and the source file
        as it is now (one stat): cheap enough for the reactor thread."""
        return self._remembered.recall(path, snapshot, self._source_key(path))

    def apply(self, path: str, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` with this format's UIDLs (blocking: one file read)."""
        key = self._source_key(path)
        known = self._remembered.recall(path, snapshot, key)
        if known is not None:
            return known
        entries = snapshot.entries()
        uids, order = self._mappers[self.name](path, entries)
        mapped = _checked(path, self.spec, snapshot, uids, order)
        self._remembered.remember(path, snapshot, key, mapped)
        return mapped

    def _source_key(self, path: str) -> tuple[int, ...] | None:
        if self.source is None:
            return None
        try:
            st = os.stat(os.path.join(path, self.source))
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read(self, path: str) -> bytes | None:
        assert self.source is not None
        try:
            with open_regular(os.path.join(path, self.source)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warn("cannot read {path}: {error}", path=os.path.join(path, self.source), error=e)
            return None

    def _dovecot(self, path: str, entries: list[str]) -> Mapped:
        data = self._read(path)
        if data is None:
            return [None] * len(entries), None
        try:
            uidvalidity, records = read_dovecot_uidlist(data)
        except ValueError as e:
            _report(path, "dovecot-uidlist", f"ignored: {e}")
            return [None] * len(entries), None
        uids: list[str | None] = []
        order: list[int] = []
        expand = self._expand
        for entry in entries:
            base = _base(entry)
            record = records.get(base)
            if record is None:
                uids.append(None)
                order.append(1 << 62)
                continue
            order.append(record.uid)
            uids.append(record.pop3_uidl or expand(record.uid, uidvalidity,
                                                   record.guid or base, base))
        return uids, order

    def _courier(self, path: str, entries: list[str]) -> Mapped:
        data = self._read(path)
        if data is None:
            return [None] * len(entries), None
        try:
            known = read_courier_sizelist(data)
        except ValueError as e:
            _report(path, COURIER_SIZELIST, f"ignored: {e}")
            return [None] * len(entries), None
        uids: list[str | None] = []
        order: list[int] = []
        for entry in entries:
            found = known.get(_base(entry))
            uids.append(None if found is None else found[1])
            order.append(1 << 63 if found is None else found[0])
        return uids, order

    def _maildir(self, path: str, entries: list[str]) -> Mapped:
        return [e.rpartition("/")[2].partition(":")[0] for e in entries], None

    def _x_uidl(self, path: str, entries: list[str]) -> Mapped:
        cache_path = os.path.join(path, X_UIDL_CACHE)
        cache = _read_x_uidl_cache(cache_path)
        values: list[str | None] = []
        found: dict[str, str] = {}
        for entry in entries:
            relative = relative_path(entry)
            base = _base(entry)
            value = cache.get(base)
            if value is None:
                try:
                    value = header_value(read_headers(os.path.join(path, relative)),
                                         b"X-UIDL") or ""
                except OSError:  # gone meanwhile: served as popframe's until then
                    value = ""
                value = value if "\n" not in value and "\t" not in value else ""
            found[base] = value
            values.append(value or None)
        if found != cache:
            _write_x_uidl_cache(cache_path, found)
        return values, None


def _read_x_uidl_cache(path: str) -> dict[str, str]:
    """``popframe.x-uidl``: a header line, then ``BASE TAB VALUE`` lines
    (an empty value: the message has no X-UIDL)."""
    try:
        with open_regular(path) as f:
            data = f.read()
    except OSError:
        return {}
    if not data.startswith(_X_UIDL_HEADER):
        return {}
    text = os.fsdecode(data[len(_X_UIDL_HEADER):])
    return dict(line.split("\t", 1) for line in text.split("\n") if "\t" in line)


def _write_x_uidl_cache(path: str, values: dict[str, str]) -> None:
    from popframe.files import write_file_atomically

    lines = "".join(f"{base}\t{value}\n" for base, value in values.items() if "\n" not in base)
    try:
        write_file_atomically(path, _X_UIDL_HEADER + os.fsencode(lines), durable=False)
    except OSError as e:
        log.warn("cannot write {path}: {error}", path=path, error=e)


def _checked(path: str, spec: str, snapshot: Snapshot, uids: Sequence[str | None],
             order: list[int] | None) -> Snapshot:
    """The listing with ``uids`` where they obey RFC 1939 section 7 and
    are the first of their value, popframe's uid elsewhere (logged once)."""
    listing = snapshot.listing
    entries = snapshot.entries()
    positions = list(range(len(entries)))
    if order is not None:
        positions.sort(key=order.__getitem__)
    chosen: list[str | None] = [None] * len(entries)
    taken: set[str] = set()
    all_valid = _all_valid(uids)
    for i in positions:
        uid = uids[i]
        if uid is None:
            continue
        if not all_valid and not valid_uid(uid):
            _report(path, entries[i], f"{spec} UIDL {uid[:80]!r} breaks RFC 1939 section 7")
        elif uid in taken:
            _report(path, entries[i], f"{spec} UIDL {uid!r} is another message's")
        else:
            chosen[i] = uid
            taken.add(uid)
    for i in positions:
        if chosen[i] is None:
            uid = listing.uids[i]
            if uid in taken:
                uid = digest_uid(f"uidl:{entries[i]}")
            chosen[i] = uid
            taken.add(uid)
    final = [uid for i in positions if (uid := chosen[i]) is not None]
    sizes = [listing.sizes[i] for i in positions]
    ready = bytes(listing.ready[i] for i in positions)
    return Snapshot(MessageList(final, sizes, ready), [entries[i] for i in positions])


#: The octets a UIDL may hold (RFC 1939 section 7), and LF between them.
_UID_OCTETS = bytes(range(0x21, 0x7F)) + b"\n"


def _all_valid(uids: Sequence[str | None]) -> bool:
    """Whether every UIDL given is valid, in a few C-level passes (the
    usual answer: yes); False sends each through ``valid_uid``."""
    given = [uid for uid in uids if uid is not None]
    if not given or "" in given or max(map(len, given)) > 70:
        return not given
    joined = "\n".join(given)
    return joined.isascii() and not joined.encode("ascii").translate(None, _UID_OCTETS)


#: Problems already logged, by (maildir, message, problem): each once.
_REPORTED: set[tuple[str, str, str]] = set()


def _report(path: str, what: str, problem: str) -> None:
    key = (path, what, problem)
    if key in _REPORTED:
        return
    if len(_REPORTED) > 10_000:
        _REPORTED.clear()
    _REPORTED.add(key)
    log.warn("maildir {path}: {what}: {problem}; serving popframe's own UIDL",
             path=path, what=what, problem=problem)


class _Remembered:
    """Mapped listings by maildir path, each with the listing it was made
    from and the source file's key; at most ``limit`` messages in all,
    least recently used out first (the newest always stays)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._known: OrderedDict[str, tuple[Snapshot, tuple[int, ...] | None, Snapshot]] = (
            OrderedDict())
        self._limit = limit
        self._messages = 0
        self._lock = threading.Lock()

    def recall(self, path: str, snapshot: Snapshot, key: tuple[int, ...] | None
               ) -> Snapshot | None:
        with self._lock:
            known = self._known.get(path)
            if known is None or known[0] is not snapshot or known[1] != key:
                return None
            self._known.move_to_end(path)
            return known[2]

    def remember(self, path: str, snapshot: Snapshot, key: tuple[int, ...] | None,
                 mapped: Snapshot) -> None:
        with self._lock:
            old = self._known.pop(path, None)
            if old is not None:
                self._messages -= len(old[2].listing)
            self._known[path] = (snapshot, key, mapped)
            self._messages += len(mapped.listing)
            while self._messages > self._limit and len(self._known) > 1:
                _, dropped = self._known.popitem(last=False)
                self._messages -= len(dropped[2].listing)
