"""The mbox store: mboxrd quoting, the scan and its index, UIDLs, the
locks other mail programs take, concurrent delivery during a session
that deletes, and SIGKILL around QUIT."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from crash_support import IN_CREATE, IN_MOVED_TO, Inotify
from delivery_support import Users, fetch_all, start_popframe

from popframe.errors import TemporaryFailure
from popframe.stores import run_synchronously, store_from_description
from popframe.stores.mbox import MboxStore, MessageMoved
from popframe.stores.mbox import index as index_module
from popframe.stores.mbox.format import Quoter, Unquoter, from_line
from popframe.stores.mbox.locks import LockTimeout, MboxLocks, dotlock_path
from popframe.testing import failure_of, result_of, wait_until

pytestmark = pytest.mark.core

TESTS = os.path.dirname(os.path.abspath(__file__))
_IMPORT = f"import sys; sys.path.insert(0, {TESTS!r}); import mbox_support; "


def _store(tmp_path: Path, **options: float) -> MboxStore:
    return MboxStore(f"{tmp_path}/%u", run_blocking=run_synchronously, **options)


def _deliver(store: MboxStore, user: str, message: bytes) -> None:
    result_of(store.deliver(user, io.BytesIO(message)))


def _session(store: MboxStore, user: str) -> tuple[object, list[str], list[bytes]]:
    maildrop = result_of(store.open(user))
    uids = list(maildrop.listing().uids)
    bodies = []
    for uid in uids:
        f = result_of(maildrop.open_message(uid))
        bodies.append(f.read())
        f.close()
    return maildrop, uids, bodies


# -- the format ------------------------------------------------------------------------------


def _through(rewriter: Quoter | Unquoter, data: bytes, rng: random.Random) -> bytes:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 9)
        out.append(rewriter.feed(data[i : i + n]))
        i += n
    return b"".join(out) + rewriter.finish()


def test_mboxrd_quoting_round_trips_in_any_chunking() -> None:
    rng = random.Random(4155)
    pieces = [b">", b"From ", b"F", b"ro", b"\n", b"x", b">>From ", b"\r\n", b"Fro", b">" * 30]
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        quoted = _through(Quoter(), data, rng)
        assert quoted == re.sub(rb"(?m)^(>*From )", rb">\1", data)
        assert not re.search(rb"(?m)^From ", quoted)
        assert _through(Unquoter(), quoted, rng) == data


def test_from_line_sender() -> None:
    assert from_line("<a@example.org>", 0).startswith(b"From a@example.org ")
    for odd in ("", "<>", "a b@x", "a\nb", None, "caf\u00e9@x"):
        assert from_line(odd, 0).startswith(b"From MAILER-DAEMON ")
    assert from_line("a@x", 0).endswith(b"\n") and from_line("a@x", 0).count(b"\n") == 1


# -- reading what other programs wrote ----------------------------------------------------------


POSTFIX_STYLE = (
    b"From alice@example.org  Thu Jan  4 10:00:00 2024\n"
    b"Return-Path: <alice@example.org>\nX-UIDL: kept-uid-1\nSubject: one\n\n>From quoted\nbody\n\n"
    b"From bob@example.org  Thu Jan  4 10:00:01 2024\n"
    b"Subject: two\nStatus: RO\n\nno final newline\n\n"
    b"From carol@example.org  Thu Jan  4 10:00:02 2024\n"
    b"Subject: three\nX-UIDL: kept-uid-1\n\nduplicate X-UIDL\n\n"
    b"From dave@example.org  Thu Jan  4 10:00:03 2024\n"
    b"Subject: four\nX-UIDL: has space\n\nbad X-UIDL\n\n"
)


def test_reads_an_mbox_written_by_others(tmp_path: Path) -> None:
    (tmp_path / "alice").write_bytes(POSTFIX_STYLE)
    maildrop, uids, bodies = _session(_store(tmp_path), "alice")
    assert bodies[0] == b"Return-Path: <alice@example.org>\nX-UIDL: kept-uid-1\nSubject: one\n\nFrom quoted\nbody\n"
    assert bodies[1] == b"Subject: two\nStatus: RO\n\nno final newline\n"
    assert uids[0] == "kept-uid-1"
    assert re.fullmatch(r"h[0-9a-f]{40}", uids[2]) and re.fullmatch(r"h[0-9a-f]{40}", uids[3])
    assert len(set(uids)) == 4
    listing = maildrop.listing()
    assert list(listing.sizes) == [len(b.replace(b"\n", b"\r\n")) for b in bodies]
    result_of(maildrop.abandon())


def test_uids_are_stable_and_survive_deleting_others(tmp_path: Path) -> None:
    (tmp_path / "alice").write_bytes(POSTFIX_STYLE)
    store = _store(tmp_path)
    maildrop, uids, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    index_module.forget(f"{tmp_path}/alice")
    (tmp_path / ".alice.popframe-index").unlink()
    maildrop, again, _ = _session(store, "alice")
    assert again == uids  # made afresh from the file: the same
    result_of(maildrop.commit([uids[0]]))
    maildrop, after, bodies = _session(store, "alice")
    assert after == uids[1:]
    assert bodies[1].startswith(b"Subject: three")  # its X-UIDL is free now, but it keeps its uid
    result_of(maildrop.abandon())


def test_status_headers_do_not_change_a_uid(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    path.write_bytes(b"From a@x Thu Jan  4 10:00:00 2024\nSubject: s\n\nbody\n\n")
    store = _store(tmp_path)
    maildrop, uids, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    path.write_bytes(b"From a@x Thu Jan  4 10:00:00 2024\nSubject: s\nStatus: RO\nX-Status: A\n\nbody\n\n")
    maildrop, again, _ = _session(store, "alice")
    assert again == uids
    result_of(maildrop.abandon())


def test_identical_copies_get_distinct_uids(tmp_path: Path) -> None:
    copy = b"From a@x Thu Jan  4 10:00:00 2024\nSubject: same\n\nsame\n\n"
    (tmp_path / "alice").write_bytes(copy * 3)
    maildrop, uids, _ = _session(_store(tmp_path), "alice")
    assert uids[1] == uids[0] + "-2" and uids[2] == uids[0] + "-3"
    result_of(maildrop.abandon())


# -- the index: sizes computed once ----------------------------------------------------------


def test_a_later_session_reads_only_what_was_appended(tmp_path: Path, monkeypatch) -> None:
    store = _store(tmp_path)
    for n in range(20):
        _deliver(store, "alice", b"Subject: %d\n\n" % n + b"x" * 5000 + b"\n")
    scans: list[tuple[int, int]] = []
    real_scan = index_module.scan

    def recording(fd: int, start: int, end: int):  # type: ignore[no-untyped-def]
        scans.append((start, end))
        return real_scan(fd, start, end)

    monkeypatch.setattr(index_module, "scan", recording)
    size = (tmp_path / "alice").stat().st_size
    maildrop, uids, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    assert scans == [(0, size)]  # the first session reads it all
    maildrop, again, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    assert len(scans) == 1 and again == uids  # this process remembers it
    index_module.forget(f"{tmp_path}/alice")
    maildrop, again, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    assert len(scans) == 1 and again == uids  # the index file beside it
    _deliver(store, "alice", b"Subject: new\n\nnew\n")
    index_module.forget(f"{tmp_path}/alice")
    maildrop, after, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    assert scans[1:] == [(size, (tmp_path / "alice").stat().st_size)]
    assert after[:20] == uids and len(after) == 21
    # Another program rewrote it (removed the first message): read again whole.
    data = (tmp_path / "alice").read_bytes()
    (tmp_path / "alice").write_bytes(data[data.index(b"\nFrom ", 10) + 1 :])
    maildrop, rewritten, _ = _session(store, "alice")
    result_of(maildrop.abandon())
    assert scans[-1][0] == 0 and rewritten == after[1:]


def test_a_corrupt_index_is_ignored(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _deliver(store, "alice", b"Subject: a\n\nb\n")
    maildrop, uids, _ = _session(store, "alice")  # makes the index
    result_of(maildrop.abandon())
    index_module.forget(f"{tmp_path}/alice")
    index = tmp_path / ".alice.popframe-index"
    data = bytearray(index.read_bytes())
    data[-5] ^= 1
    index.write_bytes(bytes(data))
    maildrop, again, bodies = _session(store, "alice")
    assert bodies == [b"Subject: a\n\nb\n"] and again == uids
    result_of(maildrop.abandon())


# -- a message moved under a session ------------------------------------------------------


def test_a_rewrite_by_another_program_during_a_session(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _deliver(store, "alice", b"Subject: a\n\nb\n")
    _deliver(store, "alice", b"Subject: c\n\nd\n")
    maildrop = result_of(store.open("alice"))
    uids = list(maildrop.listing().uids)
    data = (tmp_path / "alice").read_bytes()
    replacement = tmp_path / "replacement"
    replacement.write_bytes(data[data.index(b"\nFrom ") + 1 :])  # as mutt would, minus one
    os.rename(replacement, tmp_path / "alice")
    failure_of(maildrop.open_message(uids[0]), MessageMoved)
    result_of(maildrop.commit([uids[1]]))  # found by uid in the file as it is
    maildrop, left, _ = _session(store, "alice")
    assert left == []
    result_of(maildrop.abandon())


# -- locks ---------------------------------------------------------------------------------


@pytest.mark.process
def test_waits_for_an_fcntl_lock_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    holder = subprocess.Popen([sys.executable, "-c", _IMPORT + "mbox_support.hold_fcntl_main(sys.argv[1:])",
                               str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        store = _store(tmp_path, lock_timeout=0.3)
        failure_of(store.deliver("alice", io.BytesIO(b"x\n")), TemporaryFailure)
        failure_of(store.open("alice"), TemporaryFailure)
        assert not Path(dotlock_path(str(path))).exists()  # fcntl first: no dotlock taken
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(10)
    _deliver(_store(tmp_path), "alice", b"Subject: after\n\nx\n")


@pytest.mark.process
def test_dotlocks(tmp_path: Path) -> None:
    path = str(tmp_path / "alice")
    lock = Path(dotlock_path(path))
    store = _store(tmp_path, lock_timeout=0.3, stale_lock=60)
    lock.write_text("")  # another program's, fresh
    failure_of(store.deliver("alice", io.BytesIO(b"x\n")), TemporaryFailure)
    assert lock.exists()
    old = time.time() - 120
    os.utime(lock, (old, old))  # stale: broken
    _deliver(store, "alice", b"Subject: a\n\nb\n")
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    lock.write_text(f"popframe {dead} {os.uname().nodename}\n")  # a killed popframe's
    _deliver(store, "alice", b"Subject: c\n\nd\n")
    assert not lock.exists()
    fd, other = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        with MboxLocks(fd, path):
            assert lock.read_text().startswith(f"popframe {os.getpid()} ")
            with pytest.raises(LockTimeout):  # our own live lock is not broken
                MboxLocks(other, path, timeout=0.2).__enter__()
        assert not lock.exists()
    finally:
        os.close(fd)
        os.close(other)


@pytest.mark.process
def test_waiting_for_a_dotlock_leaves_the_kernel_lock_free(tmp_path: Path) -> None:
    """Another program (Postfix's local) holds the dotlock and wants the
    kernel lock: popframe, waiting for the dotlock, must not sit on the
    kernel lock meanwhile (it did, and the two waited on each other until
    Postfix gave up after 20 s and deferred the mail)."""
    path = str(tmp_path / "alice")
    Path(path).write_bytes(b"")
    lock = Path(dotlock_path(path))
    lock.write_text("")  # the other program's dotlock, fresh
    ours, theirs = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    other = MboxLocks(theirs, path)  # the other program's kernel lock, on its own descriptor
    taken = threading.Event()

    def take() -> None:
        with MboxLocks(ours, path, timeout=30):
            taken.set()

    waiting = threading.Thread(target=take)
    waiting.start()
    try:
        wait_until(lambda: other._kernel_lock(True), "the kernel lock while popframe waits",
                   timeout=5, interval=0.01)
        assert not taken.is_set()
        lock.unlink()  # the other program has appended, and lets go
        other._kernel_lock(False)
        waiting.join(30)
        assert taken.is_set() and not lock.exists()
    finally:
        if lock.exists():
            lock.unlink()
        waiting.join(30)
        os.close(ours)
        os.close(theirs)


def test_a_dotlock_holds_its_owner_from_its_first_instant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dotlock appears with its owner already in it, so a process
    killed while taking it leaves nothing a later one cannot break (an
    empty dotlock is another program's, kept ``stale`` seconds); the
    unnamed file leaves nothing behind.  Without O_TMPFILE: O_EXCL."""
    from popframe.stores.mbox import locks

    path = str(tmp_path / "alice")
    lock = Path(dotlock_path(path))
    linked: list[str] = []  # what the dotlock held the moment it appeared
    real_link = os.link

    def link(source: str, destination: str, **kwargs: object) -> None:
        real_link(source, destination, **kwargs)  # type: ignore[arg-type]
        linked.append(lock.read_text())

    monkeypatch.setattr(locks.os, "link", link)
    locks._create_holding(str(lock), b"popframe 1 here\n")
    assert linked == ["popframe 1 here\n"]  # linked in whole, not created then written
    with pytest.raises(FileExistsError):
        locks._create_holding(str(lock), b"popframe 2 here\n")
    assert lock.read_text() == "popframe 1 here\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.lock"]
    lock.unlink()
    monkeypatch.delattr(locks.os, "O_TMPFILE")
    locks._create_holding(str(lock), b"popframe 3 here\n")
    assert lock.read_text() == "popframe 3 here\n"
    with pytest.raises(FileExistsError):
        locks._create_holding(str(lock), b"popframe 4 here\n")


def test_the_session_lock_is_not_the_mbox_lock(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _deliver(store, "alice", b"Subject: a\n\nb\n")
    maildrop = result_of(store.open("alice"))
    failure_of(store.open("alice"))  # a second session: in use
    _deliver(store, "alice", b"Subject: during\n\nthe session\n")  # deliveries go on
    result_of(maildrop.commit(list(maildrop.listing().uids)))
    maildrop, _, bodies = _session(store, "alice")
    assert bodies == [b"Subject: during\n\nthe session\n"]
    result_of(maildrop.abandon())


def test_store_options() -> None:
    store = store_from_description("mbox:/var/mail/%u:lock_timeout=5:stale_lock=100")
    assert isinstance(store, MboxStore) and (store.lock_timeout, store.stale_lock) == (5, 100)
    from popframe.config import ConfigurationError

    for bad in ("mbox:", "mbox:/var/mail/%u:nope=1", "mbox:/var/mail/%u:lock_timeout=-1",
                "mbox:relative/%u"):
        with pytest.raises(ConfigurationError):
            store_from_description(bad)


# -- concurrency and crashes, with a real server -------------------------------------------------


@pytest.mark.process
def test_concurrent_delivery_while_sessions_delete(tmp_path: Path) -> None:
    """A process appends 150 messages while POP3 sessions delete what they
    see: afterwards every message is either deleted by a committed
    session or present, exactly once."""
    users = Users(tmp_path / "users")
    users.add("alice")
    (tmp_path / "mail").mkdir()
    mbox = tmp_path / "mail" / "alice"
    server = start_popframe(tmp_path, f"mbox:{tmp_path}/mail/%u", users)
    log = tmp_path / "delivered.log"
    writer = subprocess.Popen([sys.executable, "-c",
                               _IMPORT + "mbox_support.delivering_main(sys.argv[1:])",
                               str(mbox), str(log), "150"])
    deleted: list[bytes] = []
    try:
        for _ in range(200):
            fetched = fetch_all(server.port, "alice", users.passwords["alice"], delete=True)
            deleted += fetched
            if writer.poll() is not None and not fetched:
                break
        assert writer.wait(60) == 0
        left = fetch_all(server.port, "alice", users.passwords["alice"])
    finally:
        writer.kill()
        server.stop()
    subjects = [re.search(rb"Subject: (\S+)", m).group(1).decode() for m in deleted + left]
    assert sorted(subjects) == sorted(log.read_text().split())
    assert len(subjects) == 150 == len(set(subjects))


@pytest.mark.process
@pytest.mark.parametrize("point", ["after DELE", "after QUIT", "rewrite created",
                                   "rewrite renamed"])
def test_sigkill_around_quit(tmp_path: Path, point: str) -> None:
    """The server is killed at a point of a QUIT with deletions; then
    either every deleted message is gone or none is, nothing else is lost
    or duplicated, and the next session works."""
    users = Users(tmp_path / "users")
    users.add("alice")
    mail = tmp_path / "mail"
    mail.mkdir()
    store = MboxStore(f"{mail}/%u", run_blocking=run_synchronously)
    subjects = [f"m{n}" for n in range(40)]
    for subject in subjects:
        body = b"x" * random.Random(subject).randint(10, 200_000)
        _deliver(store, "alice", f"Subject: {subject}\n\nFrom {subject}\n".encode() + body + b"\n")
    doomed = {subjects[n] for n in range(0, 40, 3)}
    server = start_popframe(tmp_path, f"mbox:{mail}/%u", users)
    watcher = Inotify()
    watcher.watch(mail, IN_CREATE | IN_MOVED_TO)
    import poplib

    client = poplib.POP3("127.0.0.1", server.port, timeout=30)
    try:
        client.user("alice")
        client.pass_(users.passwords["alice"])
        for number in range(1, 41):
            if f"m{number - 1}" in doomed:
                client.dele(number)
        if point == "after DELE":
            os.kill(server.process.pid, signal.SIGKILL)
        else:
            client.sock.sendall(b"QUIT\r\n")
            if point != "after QUIT":
                wanted = {"rewrite created": (IN_CREATE, ".alice.popframe-rewrite"),
                          "rewrite renamed": (IN_MOVED_TO, "alice")}[point]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    events = watcher.events(1.0)
                    if any(mask & wanted[0] and name == wanted[1] for _, mask, name in events):
                        break
            os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
    finally:
        watcher.close()
        client.close()
        server.stop()
    _, _, bodies = _session(store, "alice")
    left = [re.search(rb"Subject: (\S+)", b).group(1).decode() for b in bodies]
    assert len(left) == len(set(left))
    assert left in (subjects, [s for s in subjects if s not in doomed]), (point, left)
    if point == "rewrite renamed":
        assert len(left) == 40 - len(doomed)
    assert not (mail / ".alice.popframe-rewrite").exists()


def test_a_user_cannot_be_another_users_dotlock(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _deliver(store, "alice", b"Subject: a\n\nb\n")
    from popframe.stores.template import UnsafeUserName

    failure_of(store.open("alice.lock"), UnsafeUserName)
    failure_of(store.deliver("alice.lock", io.BytesIO(b"x\n")), UnsafeUserName)
