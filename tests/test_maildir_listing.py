"""The Maildir store's listings across sessions and processes: wire-ready
flags in the size cache, ``popframe.listing`` (reused when ``cur/`` holds
the names it was made from, or when its settled key still holds), and
opens that need no thread, and listings updated rather than made again
when ``cur/`` changed by a few names.  A "fresh process" is the in-memory
cache cleared; "the builder" is ``Maildir._snapshot``, patched to count
calls.
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_maildir import (
    DOVECOT,
    NO_FINAL_NEWLINE,
    POSTFIX,
    Home,
    contents,
    forget_listings,
    open_,
    open_and_close,
    wire,
)
from twisted.logger import globalLogPublisher

from popframe.interfaces import IMaildrop, MessageInfo
from popframe.protocol.encoding import WireForm, wire_form
from popframe.stores import maildir as maildir_package
from popframe.stores.maildir import (
    JOURNAL_NAME,
    LISTING_NAME,
    SIZES_NAME,
    Maildir,
    Snapshot,
    directory,
    remembered,
)
from popframe.stores.maildir import store as maildir_store
from popframe.stores.maildir.collector import collector_paused
from popframe.stores.maildir.files import regular_files
from popframe.stores.maildir.listing import key_text
from popframe.testing import RecordingRunner, result_of

pytestmark = pytest.mark.core

READY = b"Subject: ready\r\n\r\nCRLF only, no dot lines\r\n"
DOT_LINE = b"Subject: dots\r\n\r\n.leading dot\r\n"
UNFINISHED = b"Subject: cut\r\n\r\nno final line end"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setattr(directory, "_STORE_MIN", 0)  # store even tiny listings
    return Home(tmp_path / "mail")


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many listings the builder made (one entry per build: its length)."""
    made: list[int] = []
    real = Maildir._snapshot

    def counting(self: Maildir, found: list[tuple[str, str]], hidden: set[str]) -> Any:
        snapshot = real(self, found, hidden)
        made.append(len(snapshot.listing))
        return snapshot

    monkeypatch.setattr(Maildir, "_snapshot", counting)
    return made


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """Warnings the store logs."""
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == maildir_package.__name__ and event["log_level"].name in (
            "warn",
            "error",
        ):
            seen.append(event["log_format"].format(**event))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a message is read for its size."""

    def refuse(path: str) -> WireForm:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(directory, "file_wire_form", refuse)


def fresh_process(home: Home, user: str = "alice") -> None:
    """As another worker or a restarted server: nothing in memory."""
    remembered.LISTINGS.forget(str(home.maildir(user)))


def describe(listing: list[MessageInfo]) -> list[tuple[str, int, bool]]:
    return [(i.uid, i.size, i.wire_ready) for i in listing]


#: The builder itself, not counted by the ``builds`` fixture.
BUILD = Maildir._snapshot


def built(home: Home, user: str = "alice") -> Snapshot:
    """The snapshot today's rules give for cur/ as it is now: built, with
    nothing remembered or stored (and no message read twice)."""
    maildir = Maildir(str(home.maildir(user)))
    found = [(n, "cur/" + n) for n in regular_files(os.path.join(maildir.path, "cur"))]
    return BUILD(maildir, found, set())


def from_scratch(home: Home, user: str = "alice") -> list[tuple[str, int, bool]]:
    return describe(built(home, user).listing)


def exactly_built(home: Home, maildrop: IMaildrop) -> bool:
    """Whether an open maildrop's snapshot is what a build gives: listing
    and files, in order."""
    snapshot: Snapshot = maildrop._snapshot  # type: ignore[attr-defined]
    scratch = built(home)
    return describe(snapshot.listing) == describe(scratch.listing) and (
        snapshot.entries() == scratch.entries()
    )


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many listings were updated rather than built (one entry per
    update: its length)."""
    made: list[int] = []
    real = Maildir._update

    def counting(self: Maildir, old: Snapshot, names: list[str], limit: int) -> Any:
        snapshot = real(self, old, names, limit)
        if snapshot is not None:
            made.append(len(snapshot.listing))
        return snapshot

    monkeypatch.setattr(Maildir, "_update", counting)
    return made


def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ctime counts as a second old (changes must then be a clock
    tick apart: see tick())."""
    monkeypatch.setattr(directory, "_SETTLED_NS", -(10**18))


def tick() -> None:
    """Let the filesystem's coarse clock move on, so the next change gets a
    new ctime (what the one-second rule guarantees in real use)."""
    time.sleep(0.03)


# -- wire-ready flags ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [READY, DOT_LINE, UNFINISHED, POSTFIX, DOVECOT, NO_FINAL_NEWLINE, b"", b"\r\n", b"x\r\n"],
)
def test_wire_ready_is_what_wire_form_says(home: Home, data: bytes) -> None:
    home.postfix(data)
    (info,) = open_and_close(home.store())
    assert (info.size, info.wire_ready) == (len(wire(data)), wire_form(data).ready)


def test_ready_and_not_ready_side_by_side(home: Home) -> None:
    home.postfix(READY)
    home.postfix(POSTFIX)
    home.postfix(DOT_LINE)
    assert [i.wire_ready for i in open_and_close(home.store())] == [True, False, False]


def test_flags_come_from_the_size_cache_without_reading(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    for data in (READY, POSTFIX, UNFINISHED):
        home.postfix(data)
    store = home.store()
    first = describe(open_and_close(store))
    forget_listings(home)
    no_reading(monkeypatch)
    assert describe(open_and_close(store)) == first
    assert (home.maildir() / SIZES_NAME).read_bytes().startswith(b"popframe-sizes 2\n")


def test_a_version_1_size_cache_is_used_as_not_ready(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade reads no message again: old entries keep their sizes and
    go through the encoder, as they did before."""
    names = [home.postfix(READY), home.postfix(POSTFIX)]
    store = home.store()
    open_and_close(store)
    forget_listings(home)
    sizes = ",".join(str(len(wire(d))) for d in (READY, POSTFIX))
    (home.maildir() / SIZES_NAME).write_text("popframe-sizes 1\n" + "\n".join(names) + "\0" + sizes)
    with monkeypatch.context() as patch:
        no_reading(patch)
        listing = open_and_close(store)
    assert describe(listing) == [
        (names[0], len(wire(READY)), False),
        (names[1], len(wire(POSTFIX)), False),
    ]
    new = home.postfix(READY)  # a change rewrites the cache as version 2
    assert describe(open_and_close(store))[2] == (new, len(wire(READY)), True)
    text = (home.maildir() / SIZES_NAME).read_text()
    assert text.startswith("popframe-sizes 2\n") and text.rsplit("\0", 1)[1] == "001"
    forget_listings(home)
    with monkeypatch.context() as patch:
        no_reading(patch)
        assert [i.wire_ready for i in open_and_close(store)] == [False, False, True]


@pytest.mark.parametrize(
    "text",
    [
        "popframe-sizes 2\n{names}\0{sizes}\0" + "2" * 2,  # a flag that is no flag
        "popframe-sizes 2\n{names}\0{sizes}\0" + "1",  # one flag short
        "popframe-sizes 2\n{names}\0{sizes}",  # no flags section
        "popframe-sizes 3\n{names}\0{sizes}\0" + "11",  # a version from the future
    ],
)
def test_a_bad_size_cache_is_ignored(home: Home, text: str, warnings: list[str]) -> None:
    names = [home.postfix(READY), home.postfix(POSTFIX)]
    store = home.store()
    first = describe(open_and_close(store))
    forget_listings(home)
    sizes = "1,1"  # wrong sizes that must not be believed
    (home.maildir() / SIZES_NAME).write_text(text.format(names="\n".join(names), sizes=sizes))
    assert describe(open_and_close(store)) == first
    assert any("ignoring size cache" in w for w in warnings)


def test_virtual_size_names_are_not_read(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    name = home.dovecot(READY)  # ,W= in the name
    no_reading(monkeypatch)
    (info,) = open_and_close(home.store())
    assert (info.uid, info.size, info.wire_ready) == (name, len(READY), False)


@pytest.mark.parametrize(("cached_size_matches", "ready"), [(True, True), (False, False)])
def test_virtual_size_names_are_ready_when_the_cache_knows(
    home: Home, monkeypatch: pytest.MonkeyPatch, cached_size_matches: bool, ready: bool
) -> None:
    name = home.dovecot(READY)
    home.make()
    size = len(READY) if cached_size_matches else len(READY) + 1
    (home.maildir() / SIZES_NAME).write_text(f"popframe-sizes 2\n{name}\0{size}\0" + "1")
    no_reading(monkeypatch)
    (info,) = open_and_close(home.store())
    assert (info.size, info.wire_ready) == (len(READY), ready)  # the name's size wins


# -- the persisted listing ---------------------------------------------------------------------


def test_a_fresh_process_reuses_the_stored_listing(
    home: Home, builds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = [READY, POSTFIX, DOVECOT, NO_FINAL_NEWLINE]
    for d in data[:2]:
        home.postfix(d)
    home.dovecot(DOVECOT)
    home.postfix(NO_FINAL_NEWLINE)
    store = home.store()
    first = describe(open_and_close(store))
    assert builds == [4] and (home.maildir() / LISTING_NAME).exists()
    fresh_process(home)
    no_reading(monkeypatch)
    maildrop = open_(home.store())  # another store object too
    assert describe(maildrop.listing()) == first
    assert builds == [4]
    assert contents(maildrop) == data
    result_of(maildrop.commit([maildrop.listing()[1].uid]))
    left = [first[0], *first[2:]]
    assert describe(open_and_close(store)) == left


def test_the_second_open_right_after_the_first_builds_nothing(
    home: Home, builds: list[int]
) -> None:
    """new/ -> cur/ just now: too recent for the ctime key, so a readdir
    checks the names, and they are the ones the listing was made from."""
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    assert [i.uid for i in open_and_close(store)] == names
    assert [i.uid for i in open_and_close(store)] == names
    fresh_process(home)
    assert [i.uid for i in open_and_close(store)] == names
    assert builds == [2]


@pytest.mark.parametrize("process", ["same", "fresh"])
def test_new_mail_between_sessions(
    home: Home, builds: list[int], updates: list[int], process: str
) -> None:
    """The listing is updated from the remembered or stored one, not built."""
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)
    names.append(home.postfix(DOVECOT))
    names.append(home.postfix(DOT_LINE))
    if process == "fresh":
        fresh_process(home)
    maildrop = open_(store)
    assert [i.uid for i in maildrop.listing()] == names
    assert exactly_built(home, maildrop)
    assert contents(maildrop) == [POSTFIX, READY, DOVECOT, DOT_LINE]
    result_of(maildrop.abandon())
    assert builds == [2] and updates == [4]
    fresh_process(home)
    assert [i.uid for i in open_and_close(store)] == names
    assert builds == [2] and updates == [4]  # the update was stored


@pytest.mark.parametrize("process", ["same", "fresh"])
@pytest.mark.parametrize("change", ["unlink", "rename", "copy"])
def test_another_agent_changes_cur(
    home: Home, builds: list[int], updates: list[int], process: str, change: str
) -> None:
    """Deleted or renamed files update the listing; a copy (two files
    with one base name, so a digest uid) is built again."""
    names = [home.postfix(POSTFIX), home.postfix(READY), home.postfix(DOT_LINE)]
    store = home.store()
    open_and_close(store)
    cur = home.maildir() / "cur"
    if change == "unlink":
        os.unlink(cur / f"{names[1]}:2,")
    elif change == "rename":  # new flags: the uid and the order stay
        os.rename(cur / f"{names[1]}:2,", cur / f"{names[1]}:2,RS")
    else:  # a second file with the same base name
        shutil.copy(cur / f"{names[1]}:2,", cur / f"{names[1]}:2,S")
    if process == "fresh":
        fresh_process(home)
    maildrop = open_(store)
    assert exactly_built(home, maildrop)
    expected = {"unlink": [POSTFIX, DOT_LINE], "rename": [POSTFIX, READY, DOT_LINE]}
    assert contents(maildrop) == expected.get(change, [POSTFIX, READY, READY, DOT_LINE])
    result_of(maildrop.abandon())
    if change == "copy":
        assert builds == [3, 4] and updates == []
    else:
        assert builds == [3] and updates == [len(expected[change])]


def test_duplicate_base_names_keep_their_uids_across_processes(
    home: Home, builds: list[int]
) -> None:
    cur = home.make() / "cur"
    (cur / "1700000000.x.mx:2,").write_bytes(b"one\n")
    (cur / "1700000000.x.mx:2,S").write_bytes(b"two\r\n")
    store = home.store()
    first = describe(open_and_close(store))
    assert first[0][0] == "1700000000.x.mx" and first[1][0].startswith("h")
    fresh_process(home)
    maildrop = open_(store)
    assert describe(maildrop.listing()) == first and builds == [2]
    assert contents(maildrop) == [b"one\n", b"two\r\n"]
    result_of(maildrop.commit([first[0][0]]))
    # The one left is now the only file with that base: its uid is the base.
    assert [i.uid for i in open_and_close(store)] == ["1700000000.x.mx"]


def stored_listing(home: Home) -> Path:
    return home.maildir() / LISTING_NAME


def stored_key(data: bytes) -> bytes:
    """The settled key in a listing file's header."""
    return data.partition(b"\n")[0].split(b" ")[4]


def corrupt(how: str, data: bytes, other: bytes) -> bytes:
    header, _, body = data.partition(b"\n")
    if how == "truncated":
        return data[: len(data) * 2 // 3]
    if how == "empty":
        return b""
    if how == "flipped":  # one octet of a uid
        at = int(header.split(b" ")[-2]) + 3
        return header + b"\n" + body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]
    if how == "garbage":
        return b"\x00\xff" * 64
    if how == "future":
        return data.replace(b"popframe-listing 2 ", b"popframe-listing 3 ", 1)
    if how == "foreign":  # another maildir's, whole and valid
        return other
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped", "garbage", "future", "foreign"])
def test_a_corrupt_or_foreign_stored_listing_is_ignored(
    home: Home, how: str, builds: list[int], warnings: list[str]
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY), home.postfix(DOT_LINE)]
    other = [home.postfix(POSTFIX, user="bob"), home.postfix(READY, user="bob")]
    store = home.store()
    first = describe(open_and_close(store))
    result_of(open_(store, "bob").abandon())
    bob = (home.maildir("bob") / LISTING_NAME).read_bytes()
    path = stored_listing(home)
    path.write_bytes(corrupt(how, path.read_bytes(), bob))
    fresh_process(home)
    assert describe(open_and_close(store)) == first
    assert [u for u, _, _ in first] == names and other
    # alice, bob, alice again (from bob's names: all removed, all added)
    assert len(builds) == (2 if how == "foreign" else 3)
    if how in ("truncated", "empty", "flipped", "garbage", "future"):
        assert any("ignoring listing" in w for w in warnings), warnings
    fresh_process(home)  # and a good one was written in its place
    assert describe(open_and_close(store)) == first
    assert len(builds) == (2 if how == "foreign" else 3)


def test_a_listing_from_an_earlier_version_is_made_again_quietly(
    home: Home, builds: list[int], warnings: list[str]
) -> None:
    home.postfix(POSTFIX)
    home.postfix(READY)
    store = home.store()
    first = describe(open_and_close(store))
    stored_listing(home).write_bytes(b"popframe-listing 1 00000000 2 -\nwhatever")
    fresh_process(home)
    assert describe(open_and_close(store)) == first
    assert len(builds) == 2 and not any("listing" in w for w in warnings), warnings
    assert stored_listing(home).read_bytes().startswith(b"popframe-listing 2 ")


def forge(data: bytes, section: int, replace: Callable[[bytes], bytes]) -> bytes:
    """Edit one section (names, uids, ready, sizes) and make the header
    and checksum fit, as only someone who can write the maildir could."""
    prefix = b"popframe-listing 2 "
    header, _, body = data[len(prefix) + 9 :].partition(b"\n")
    count, key, names, uids = header.split(b" ")
    ends = list(itertools.accumulate([int(names), int(uids), int(count)]))
    sections = [body[: ends[0]], body[ends[0] : ends[1]], body[ends[1] : ends[2]], body[ends[2] :]]
    sections[section] = replace(sections[section])
    checked = b"%s %s %d %d\n" % (count, key, len(sections[0]), len(sections[1]))
    checked += b"".join(sections)
    return b"%s%08x %s" % (prefix, zlib.crc32(checked), checked)


@pytest.mark.parametrize(
    ("section", "replace"),
    [
        (0, lambda names: b"../../../etc/passwd" + names[names.index(b"\n") :]),
        (1, lambda uids: "ü".encode() + uids[1:]),
        (1, lambda uids: b"a b" + uids[3:]),
        (1, lambda uids: b"x" * 71 + uids[uids.index(b"\n") :]),
        (1, lambda uids: uids[uids.index(b"\n") :]),  # an empty uid
        (2, lambda ready: b"\2" + ready[1:]),
        (3, lambda sizes: sizes[:-1]),
    ],
)
def test_a_forged_listing_cannot_escape_or_break_the_protocol(
    home: Home,
    monkeypatch: pytest.MonkeyPatch,
    section: int,
    replace: Callable[[bytes], bytes],
    warnings: list[str],
) -> None:
    for data in (POSTFIX, READY):
        home.postfix(data)
    settled(monkeypatch)
    store = home.store()
    first = describe(open_and_close(store))
    assert stored_key(stored_listing(home).read_bytes()) != b"-"  # the key is stored
    stored_listing(home).write_bytes(forge(stored_listing(home).read_bytes(), section, replace))
    fresh_process(home)
    assert describe(open_and_close(store)) == first
    assert any("ignoring listing" in w for w in warnings), warnings


def test_odd_names_round_trip(home: Home, builds: list[int]) -> None:
    """Names that are no UIDL (digests), with other info separators, or
    not even UTF-8: the stored listing gives what a build gives."""
    cur = os.fsencode(home.make() / "cur")
    for name in [
        b"1700000000.with space.mx:2,",
        "1700000001.ünïcödé.mx:2,S".encode(),
        b"1700000002.\xff\xfe.mx:2,",
        b"1700000003.other.mx;2,S",
        b"1700000004." + b"x" * 80 + b":2,",
        b"no-timestamp",
    ]:
        with open(os.path.join(cur, name), "wb") as f:
            f.write(POSTFIX)
    store = home.store()
    first = describe(open_and_close(store))
    fresh_process(home)
    maildrop = open_(store)
    assert describe(maildrop.listing()) == first and builds == [6]
    assert first == from_scratch(home)
    assert contents(maildrop) == [POSTFIX] * 6
    result_of(maildrop.commit([first[2][0]]))
    assert len(os.listdir(cur)) == 5


def test_short_listings_are_not_stored(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory, "_STORE_MIN", 3)
    names = [home.postfix(POSTFIX), home.postfix(READY), home.postfix(DOT_LINE)]
    store = home.store()
    open_and_close(store)
    assert stored_listing(home).exists()
    maildrop = open_(store)
    result_of(maildrop.commit([names[0]]))
    assert [i.uid for i in open_and_close(store)] == names[1:]
    assert not stored_listing(home).exists()  # no stale file left to read
    fresh_process(home)
    assert [i.uid for i in open_and_close(store)] == names[1:]


def test_an_empty_maildrop_round_trips(home: Home, builds: list[int]) -> None:
    store = home.store()
    assert open_and_close(store) == []
    fresh_process(home)
    assert open_and_close(store) == [] and builds == [0]


def test_collection_pauses_while_loading_and_resumes_as_it_was() -> None:
    pause = collector_paused
    assert gc.isenabled()
    with pause():
        assert not gc.isenabled()
        with pause():  # an overlapping load in another thread
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with pause():
            pass
        assert not gc.isenabled()  # someone else's choice stands
    finally:
        gc.enable()


# -- the settled key ------------------------------------------------------------------------------


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    scans: list[str] = []
    real = directory.regular_files

    def counting(directory: str) -> Iterator[str]:
        scans.append(os.path.basename(directory))
        return real(directory)

    monkeypatch.setattr(directory, "regular_files", counting)
    return scans


def test_a_stored_settled_key_spares_a_fresh_process_the_readdir(
    home: Home, monkeypatch: pytest.MonkeyPatch, builds: list[int]
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)  # moves new/ to cur/: not settled yet
    settled(monkeypatch)
    open_and_close(store)  # a readdir vouches; the key goes into the file
    fresh_process(home)
    scans = count_scans(monkeypatch)
    maildrop = open_(store)
    assert [i.uid for i in maildrop.listing()] == names and "cur" not in scans
    assert contents(maildrop) == [POSTFIX, READY]
    result_of(maildrop.abandon())
    assert builds == [2]
    tick()
    names.append(home.postfix(DOVECOT))  # the key no longer holds
    fresh_process(home)
    assert [i.uid for i in open_and_close(store)] == names and builds == [2]  # updated


def test_a_stored_listing_gets_its_key_when_one_settles(
    home: Home, monkeypatch: pytest.MonkeyPatch, builds: list[int]
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)
    before = stored_listing(home).read_bytes()
    assert stored_key(before) == b"-"  # too recent for a key
    fresh_process(home)
    settled(monkeypatch)
    open_and_close(store)  # the names match the stored listing, and now a key
    after = stored_listing(home).read_bytes()
    assert after.partition(b"\n")[2] == before.partition(b"\n")[2]  # only the header changed
    assert stored_key(after) != b"-"
    fresh_process(home)
    scans = count_scans(monkeypatch)
    assert [i.uid for i in open_and_close(store)] == names and "cur" not in scans
    assert builds == [2]


def test_a_remembered_listing_is_stored_again_if_the_file_went(
    home: Home, builds: list[int]
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)
    stored_listing(home).unlink()
    assert [i.uid for i in open_and_close(store)] == names  # from memory
    assert stored_listing(home).exists()
    fresh_process(home)
    assert [i.uid for i in open_and_close(store)] == names and builds == [2]


def test_a_long_listing_is_vouched_for_by_a_second_readdir(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first listing of a large maildrop takes seconds: by its end the
    directories have settled, so the next open needs no readdir."""
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    real = Maildir._snapshot

    def slow(self: Maildir, found: list[tuple[str, str]], hidden: set[str]) -> Any:
        monkeypatch.setattr(directory, "_SETTLED_NS", -(10**18))  # "a second later"
        return real(self, found, hidden)

    monkeypatch.setattr(Maildir, "_snapshot", slow)
    open_and_close(home.store())
    known = remembered.LISTINGS[str(home.maildir())]
    assert known.key is not None
    assert key_text(known.key) in stored_listing(home).read_bytes()
    fresh_process(home)
    scans = count_scans(monkeypatch)
    assert [i.uid for i in open_and_close(home.store())] == names and "cur" not in scans


def test_a_changed_maildir_is_never_vouched_for(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [home.postfix(POSTFIX)]
    store = home.store()
    settled(monkeypatch)
    open_and_close(store)
    open_and_close(store)
    cur = home.maildir() / "cur"
    for step in range(4):
        tick()
        if step % 2:
            names.append(home.postfix(READY))
        else:
            (old,) = [n for n in os.listdir(cur) if n.startswith(names[0])]
            os.rename(cur / old, cur / f"{names[0]}:2,{'ST'[step // 2]}")
        if step >= 2:
            fresh_process(home)
        assert [i.uid for i in open_and_close(store)] == names


# -- opens without a thread -----------------------------------------------------------------------


def test_an_unchanged_open_runs_no_thread(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    home.postfix(POSTFIX)
    run = RecordingRunner()
    store = home.store(run_blocking=run)
    open_and_close(store)
    assert run.calls == ["load"]
    settled(monkeypatch)
    open_and_close(store)  # the key settles
    run.calls.clear()
    for _ in range(3):
        maildrop = open_(store)
        assert contents(maildrop) == [POSTFIX]
        result_of(maildrop.abandon())
    assert run.calls == []


@pytest.mark.parametrize("change", ["journal", "new mail", "forgotten"])
def test_an_open_with_work_to_do_takes_the_thread(
    home: Home, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    run = RecordingRunner()
    store = home.store(run_blocking=run)
    settled(monkeypatch)
    open_and_close(store)
    open_and_close(store)
    run.calls.clear()
    tick()
    if change == "journal":  # a commit the server died in: finished first
        (home.maildir() / JOURNAL_NAME).write_text(
            '{"version": 1, "delete": ["cur/%s:2,"]}' % names[0]
        )
        names.pop(0)
    elif change == "new mail":
        names.append(home.postfix(DOVECOT))
    else:
        fresh_process(home)
    assert [i.uid for i in open_and_close(store)] == names
    assert run.calls == ["load"]
    assert not (home.maildir() / JOURNAL_NAME).exists()


def test_a_long_loaded_listing_maps_uids_in_the_thread(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    for data in (POSTFIX, READY, DOT_LINE):
        home.postfix(data)
    store = home.store()
    first = describe(open_and_close(store))
    fresh_process(home)
    monkeypatch.setattr(maildir_store, "_MAP_INLINE", 1)
    run = RecordingRunner()
    maildrop = open_(home.store(run_blocking=run))
    assert describe(maildrop.listing()) == first
    assert run.calls == ["load"]
    assert contents(maildrop) == [POSTFIX, READY, DOT_LINE]
    assert run.calls == ["load", "where"]  # once
    result_of(maildrop.commit([first[0][0]]))
    assert run.calls == ["load", "where", "delete"]


def test_the_maildir_is_prepared_without_a_thread(home: Home) -> None:
    run = RecordingRunner()
    maildrop = open_(home.store(run_blocking=run))
    assert run.calls == ["load"] and maildrop.listing() == []
    result_of(maildrop.abandon())
    maildrop = open_(home.store(run_blocking=run, create=False), "nobody")
    assert run.calls == ["load"] and maildrop.listing() == []


# -- updated listings ----------------------------------------------------------------------------


def test_an_update_places_mail_where_a_build_would(
    home: Home, builds: list[int], updates: list[int]
) -> None:
    """Not only at the end: an older delivery time, a name without one, and
    a rename and an unlink in the same step."""
    names = [home.postfix(READY, when=1700000010 + i) for i in range(4)]
    store = home.store()
    open_and_close(store)
    home.postfix(POSTFIX, when=1700000012)  # between the others
    home.postfix(DOT_LINE, when=1600000000)  # first
    home.dovecot(DOVECOT)
    cur = home.maildir() / "cur"
    (cur / "no-timestamp:2,").write_bytes(UNFINISHED)  # last
    os.rename(cur / f"{names[1]}:2,", cur / f"{names[1]}:2,S")
    os.unlink(cur / f"{names[2]}:2,")
    maildrop = open_(store)
    assert exactly_built(home, maildrop) and builds == [4] and updates == [7]
    assert contents(maildrop)[0] == DOT_LINE and contents(maildrop)[-1] == UNFINISHED
    result_of(maildrop.abandon())


def test_an_update_keeps_the_size_cache(
    home: Home, monkeypatch: pytest.MonkeyPatch, updates: list[int]
) -> None:
    """Added names gain their sizes, removed ones lose them: a fresh
    process without a stored listing reads no message."""
    names = [home.postfix(POSTFIX), home.postfix(READY), home.postfix(DOT_LINE)]
    store = home.store()
    open_and_close(store)
    names.append(home.postfix(NO_FINAL_NEWLINE))
    os.unlink(home.maildir() / "cur" / f"{names[0]}:2,")
    got = describe(open_and_close(store))
    expected = from_scratch(home)
    assert got == expected and updates == [3]
    sizes = (home.maildir() / SIZES_NAME).read_text()
    assert names[3] in sizes and names[0] not in sizes
    forget_listings(home)
    no_reading(monkeypatch)
    assert describe(open_and_close(store)) == expected


def test_a_big_change_is_built(
    home: Home, monkeypatch: pytest.MonkeyPatch, builds: list[int], updates: list[int]
) -> None:
    """Up to max(_UPDATE_MIN, a tenth of the listing) changed names."""
    monkeypatch.setattr(directory, "_UPDATE_MIN", 0)
    for _ in range(20):
        home.postfix(READY)
    store = home.store()
    open_and_close(store)
    for _ in range(3):  # more than 23 // 10
        home.postfix(POSTFIX)
    maildrop = open_(store)
    assert exactly_built(home, maildrop) and builds == [20, 23] and updates == []
    result_of(maildrop.abandon())
    for _ in range(2):
        home.postfix(DOT_LINE)
    fresh_process(home)
    maildrop = open_(store)
    assert exactly_built(home, maildrop) and builds == [20, 23] and updates == [25]
    result_of(maildrop.abandon())


def test_duplicate_base_names_are_built(
    home: Home, builds: list[int], updates: list[int]
) -> None:
    """A listing with a digest uid is built again, until none is left."""
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)
    cur = home.maildir() / "cur"
    shutil.copy(cur / f"{names[0]}:2,", cur / f"{names[0]}:2,S")  # added: a taken base
    assert describe(open_and_close(store)) == from_scratch(home) and builds == [2, 3]
    home.postfix(DOT_LINE)  # old listing has a digest uid
    assert describe(open_and_close(store)) == from_scratch(home) and builds == [2, 3, 4]
    os.unlink(cur / f"{names[0]}:2,S")  # removes the digest: still built
    assert describe(open_and_close(store)) == from_scratch(home) and builds == [2, 3, 4, 3]
    home.postfix(DOVECOT)
    maildrop = open_(store)
    assert exactly_built(home, maildrop) and builds == [2, 3, 4, 3] and updates == [4]
    result_of(maildrop.abandon())


@pytest.mark.parametrize("name", ["1700000099.with space.mx:2,", "h" + "0" * 40 + ":2,"])
def test_an_added_name_that_is_no_plain_uid_is_built(
    home: Home, builds: list[int], updates: list[int], name: str
) -> None:
    home.postfix(POSTFIX)
    store = home.store()
    open_and_close(store)
    (home.maildir() / "cur" / name).write_bytes(READY)
    maildrop = open_(store)
    assert exactly_built(home, maildrop) and builds == [1, 2] and updates == []
    result_of(maildrop.abandon())


def test_an_added_file_that_vanishes_is_left_out(
    home: Home, monkeypatch: pytest.MonkeyPatch, builds: list[int], updates: list[int]
) -> None:
    names = [home.postfix(POSTFIX)]
    store = home.store()
    open_and_close(store)
    gone = home.postfix(READY)
    names.append(home.postfix(DOT_LINE))
    real = directory.file_wire_form

    def deleted_meanwhile(path: str) -> WireForm:
        if gone in path:
            os.unlink(path)
        return real(path)

    monkeypatch.setattr(directory, "file_wire_form", deleted_meanwhile)
    maildrop = open_(store)
    assert [i.uid for i in maildrop.listing()] == names and exactly_built(home, maildrop)
    result_of(maildrop.abandon())
    assert [i.uid for i in open_and_close(store)] == names  # remembered as it is
    assert builds == [1] and updates == [2]


def test_a_finished_journal_comes_before_the_update(
    home: Home, builds: list[int], updates: list[int]
) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)
    (home.maildir() / JOURNAL_NAME).write_text('{"version": 1, "delete": ["cur/%s:2,"]}' % names[0])
    names.append(home.postfix(DOT_LINE))
    maildrop = open_(store)
    assert [i.uid for i in maildrop.listing()] == names[1:] and exactly_built(home, maildrop)
    result_of(maildrop.abandon())
    assert builds == [2] and updates == [2]
    assert not (home.maildir() / JOURNAL_NAME).exists()


def test_mail_left_in_new_is_built(home: Home, builds: list[int], updates: list[int]) -> None:
    names = [home.postfix(POSTFIX), home.postfix(READY)]
    store = home.store()
    open_and_close(store)
    (home.maildir() / "new" / names[0]).write_bytes(DOT_LINE)  # its name is taken in cur/
    names.append(home.postfix(DOVECOT))
    listing = open_and_close(store)
    assert len(listing) == 4 and builds == [2, 4] and updates == []


# -- never a wrong listing ------------------------------------------------------------------------


#: Actions and their weights: mostly small steps, so that most opens update.
ACTIONS = {
    "deliver": 8,
    "deliver old": 2,  # an older delivery time: lands mid-listing
    "dovecot": 2,
    "unlink": 3,
    "rename": 3,
    "copy": 1,  # a second file with one base: built until it goes
    "dedupe": 4,
    "odd name": 1,  # no valid UIDL: a digest uid
    "flood": 1,  # more than an update takes
    "restart": 2,
    "commit": 3,
    "corrupt": 1,
    "none": 2,
}


def test_random_changes_never_give_a_wrong_listing(
    home: Home, monkeypatch: pytest.MonkeyPatch, builds: list[int], updates: list[int]
) -> None:
    """Sessions, other agents and restarts in a seeded random order; after
    each open the listing (and each message's file) is exactly what
    building it from scratch gives, whether it was reused, updated or
    built."""
    monkeypatch.setattr(directory, "_UPDATE_MIN", 4)
    rng = random.Random(1939)
    store = home.store()
    bodies = [READY, POSTFIX, DOT_LINE, UNFINISHED, DOVECOT]
    for _ in range(6):
        home.postfix(rng.choice(bodies), when=1700000000 + rng.randrange(5))
    cur = home.maildir() / "cur"
    steps = 400
    for step in range(steps):
        present = sorted(os.listdir(cur))
        action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        if action == "deliver":
            home.postfix(rng.choice(bodies), when=1700000000 + step)
        elif action == "deliver old":
            home.postfix(rng.choice(bodies), when=1700000000 + rng.randrange(step + 1))
        elif action == "dovecot":
            home.dovecot(rng.choice(bodies))
        elif action == "flood":
            for _ in range(rng.randrange(5, 12)):
                home.postfix(rng.choice(bodies), when=1700000000 + rng.randrange(step + 1))
        elif action == "odd name":
            (cur / f"{1700000000 + step}.odd name.mx:2,").write_bytes(rng.choice(bodies))
        elif action == "unlink" and present:
            os.unlink(cur / rng.choice(present))
        elif action == "rename" and present:
            name = rng.choice(present)
            os.rename(cur / name, cur / (name.partition(":")[0] + ":2," + rng.choice("RSTF")))
        elif action == "copy" and present:
            name = rng.choice(present)
            if ":2," in name and not name.endswith("D"):
                shutil.copy(cur / name, cur / (name + "D"))
        elif action == "dedupe":  # digest uids gone: updates again
            for name in present:
                if name.endswith("D") or "odd name" in name:
                    os.unlink(cur / name)
        elif action == "restart":
            fresh_process(home)
        elif action == "corrupt" and stored_listing(home).exists():
            data = stored_listing(home).read_bytes()
            stored_listing(home).write_bytes(data[: rng.randrange(len(data))])
            fresh_process(home)
        maildrop = open_(store)
        got = describe(maildrop.listing())
        assert exactly_built(home, maildrop), (step, action)
        if action == "commit" and got:
            result_of(maildrop.commit([u for u, _, _ in rng.sample(got, k=min(2, len(got)))]))
        else:
            result_of(maildrop.abandon())
    # Both paths were taken often (seed 1939: 179 updates, 112 builds).
    assert len(updates) > steps // 3 and len(builds) > steps // 20, (len(updates), len(builds))


def test_remembered_listings_are_bounded_by_messages_not_maildirs(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    listings = remembered.RememberedListings(messages=6)
    monkeypatch.setattr(directory, "LISTINGS", listings)
    run = RecordingRunner()
    store = home.store(run_blocking=run)
    users = [f"user{i}" for i in range(3)]
    for user in users:
        for _ in range(2):
            home.postfix(POSTFIX, user=user)
    settled(monkeypatch)
    for _ in range(2):  # list, then settle the key
        for user in users:
            result_of(open_(store, user).abandon())
    run.calls.clear()
    for user in users:  # 3 maildrops of 2 messages fit in 6: no thread
        result_of(open_(store, user).abandon())
    assert run.calls == []
    home.postfix(POSTFIX, user="user3")
    result_of(open_(store, "user3").abandon())
    assert len(listings) == 3  # user0 made room
    run.calls.clear()
    result_of(open_(store, "user0").abandon())
    assert run.calls == ["load"]
