"""Crash safety (issue 5, "Faults"): real processes, real signals, real
filesystems.

- Kill points: a real ``twistd pop3`` (see ``crash_support``'s fork
  server) serves several concurrent sessions on small Maildirs while another
  process delivers mail into them; it is SIGKILLed at a seeded point (during
  RETR, after DELE before QUIT, at a random offset after QUIT, inside the
  commit as seen by inotify, while new/ moves to cur/, or anywhere).  Then:
  every message is still there byte for byte unless a session that sent
  QUIT DELE'd it; nothing altered, half-written or duplicated; each
  session's deletions all applied or none (a journal may be mid-way, and
  the next open, in-process or by a restarted server, completes it).
- A full disk (a tmpfs out of blocks or inodes) and a read-only remount,
  before QUIT and at exact points inside the commit (fanotify holds the
  server at an open()): ``-ERR [SYS/TEMP]``, all or none, usable afterwards.
  Root only (mount, fanotify): skipped locally without it, failing in CI.
- The passwd-file removed, unreadable or half-written under a running
  server: ``[SYS/TEMP]`` or ``[AUTH]``, never a traceback, never a login
  with stale or partial data, and logins again once the file is back.

Scale with POPFRAME_CRASH_BATCHES, POPFRAME_CRASH_KILLS (per lane), POPFRAME_CRASH_SEED.
"""

from __future__ import annotations

import errno
import os
import poplib
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from crash_support import (
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    JOURNAL,
    Client,
    Deliverer,
    DiskState,
    Inotify,
    Killed,
    OpenGate,
    Server,
    Zygote,
    deliver,
    fill,
    fill_file,
    message_bytes,
    message_name,
    mount_tmpfs,
    parse_name,
    random_size,
    remount,
    scan,
    unmount,
)

from popframe.auth.schemes import make_hash
from popframe.errors import TemporaryFailure
from popframe.stores import run_synchronously
from popframe.stores.maildir import MaildirStore
from popframe.testing import failure_of, result_of

pytestmark = pytest.mark.process

IN_CI = os.environ.get("CI") == "true"
BATCHES = int(os.environ.get("POPFRAME_CRASH_BATCHES", "4"))
LANES = 2  # trees killed side by side in one batch
KILLS_PER_LANE = int(os.environ.get("POPFRAME_CRASH_KILLS", "26"))
BASE_SEED = int(os.environ.get("POPFRAME_CRASH_SEED", "5005"))
MIN_KILL_POINTS = 200

USERS = ["u0", "u1", "u2"]  # one thread each, and one roaming thread
MIN_MESSAGES, MAX_MESSAGES = 8, 24
SESSIONS_PER_THREAD = 25  # bounds each client loop
LOAD_DEADLINE = 3.0  # seconds before a kill point's target fires anyway
MODES = {  # where the kill lands, and how often
    "anywhere": 0.20,  # a random moment of the load
    "retr": 0.15,  # the target session mid-RETR of its largest message
    "dele": 0.10,  # after DELE, before QUIT
    "quit": 0.20,  # a random offset (0 to 1.5x a commit) after QUIT goes out
    "commit": 0.25,  # inside the commit: after the journal + k unlinks (inotify)
    "open": 0.10,  # while login moves new/ to cur/ (inotify)
}

def password(user: str) -> str:
    return f"pw-{user}"


# -- shared fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    server_maker = Zygote()
    yield server_maker
    server_maker.close()


@dataclass
class Tally:
    batches: int = 0
    kill_points: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    journal_found: int = 0  # killed between the journal and its removal
    partial_found: int = 0  # ...with some of that session's files already unlinked
    journal_temporary_found: int = 0  # killed while the journal was being written
    recovered_by_server: int = 0  # interrupted commits a restarted server finished
    sessions: int = 0
    committed: int = 0  # QUITs answered +OK
    messages_checked: int = 0
    retr_checked: int = 0
    missed: Counter[str] = field(default_factory=Counter)  # by reason: kill came elsewhere
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            if name != "batches":
                setattr(self, name, getattr(self, name) + value)

    def line(self) -> str:
        modes = ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items()))
        return (
            f"crash safety: {self.kill_points} SIGKILL kill points survived in "
            f"{self.batches} batches, {self.seconds:.1f} s ({modes}); killed mid-commit "
            f"{self.journal_found} times ({self.partial_found} with the deletions partly done, "
            f"{self.recovered_by_server} finished by a restarted server), "
            f"{self.journal_temporary_found} while writing the journal; "
            f"{sum(self.missed.values())} targets missed {dict(self.missed)}; {self.sessions} "
            f"sessions, {self.committed} commits, {self.retr_checked} RETRs and "
            f"{self.messages_checked} stored messages checked byte for byte"
        )


class _Summary:
    """A plugin registered at run time: the count in pytest's summary."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.tally.kill_points:
            terminalreporter.write_line(self.tally.line())


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Tally:
    counts = Tally()
    request.config.pluginmanager.register(_Summary(counts), f"popframe-crash-summary-{id(counts)}")
    return counts


# -- kill points -------------------------------------------------------------------------


@dataclass
class SessionLog:
    user: str
    thread: int
    number: int
    listed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # recorded before DELE goes out
    quit_sent: bool = False  # set before QUIT goes out
    quit_reply: bytes | None = None
    outcome: str = "started"

    def __str__(self) -> str:
        return (f"{self.user} thread {self.thread} session {self.number}: {self.outcome}, "
                f"listed {len(self.listed)}, DELE {sorted(self.deleted)}, "
                f"QUIT {'sent' if self.quit_sent else 'not sent'} -> {self.quit_reply!r}")


class KillPoint:
    """One server, several concurrent sessions, one SIGKILL."""

    def __init__(self, batch: Batch, seed: int, mode: str, server: Server) -> None:
        self.batch = batch
        self.seed = seed
        self.mode = mode
        self.server = server
        self.rng = random.Random(seed)
        self.sessions: list[SessionLog] = []
        self.failures: list[str] = []
        self.killed = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()
        self.target_thread = self.rng.randrange(len(USERS))
        # "open" needs new/ still full: the first session of its thread.
        self.target_session = 0 if mode == "open" else self.rng.choice([0, 0, 0, 1])
        self.retr_checked = 0
        self.missed = False  # the kill came, but not at the point this mode aims for

    def kill(self, reason: str) -> None:
        with self._lock:
            if self.killed.is_set():
                return
            self.reason = reason
            self.killed.set()  # before the signal: a dead socket before this is a bug
            try:
                signal.pidfd_send_signal(self.server.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                self.failures.append("the server died before the kill")

    def fail(self, text: str) -> None:
        with self._lock:
            self.failures.append(text)

    # -- the load ------------------------------------------------------------------------

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._thread, args=(i, USERS[i]), daemon=True)
            for i in range(len(USERS))
        ]
        threads.append(threading.Thread(target=self._thread, args=(len(USERS), None), daemon=True))
        self.batch.deliverer.resume()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        if self.mode == "anywhere":
            self.killed.wait(self.rng.uniform(0.0, 0.2))
            self.kill("anywhere")
        elif not self.killed.wait(LOAD_DEADLINE):
            self.missed = True
            self.kill(f"{self.mode}: target not reached in {LOAD_DEADLINE} s")
        self.server.wait_dead(10)
        self.batch.deliverer.pause()
        for thread in threads:
            thread.join(20)
            if thread.is_alive():
                self.fail(f"client thread {thread.name} still running 20 s after the kill")
        self.elapsed = time.monotonic() - started

    def _thread(self, index: int, user: str | None) -> None:
        rng = random.Random(self.seed * 31 + index)
        for number in range(SESSIONS_PER_THREAD):
            if self.killed.is_set():
                return
            others = [u for u in USERS if u != USERS[self.target_thread]]
            log = SessionLog(user or rng.choice(others), index, number)
            with self._lock:
                self.sessions.append(log)
            target = index == self.target_thread and number == self.target_session
            try:
                self._session(log, rng, target, roaming=user is None,
                              careful=index == self.target_thread and number < self.target_session)
            except Killed as e:
                log.outcome = f"killed ({log.outcome})"
                if not self.killed.is_set():
                    self.fail(f"{log}: connection lost before any kill: {e}")
                return
            except Exception as e:  # noqa: BLE001 - reported with the seed
                self.fail(f"{log}: {type(e).__name__}: {e}")
                self.kill(f"client error in {log}")
                return
            if target and not self.killed.is_set() and self.mode != "anywhere":
                self.missed = True
                self.kill(f"{self.mode}: target session ended without reaching its point")

    def _session(self, log: SessionLog, rng: random.Random, target: bool, roaming: bool,
                 careful: bool) -> None:
        mode = self.mode if target else None
        maildir = self.batch.maildir(log.user)
        client = Client(self.server.port)
        watcher = None
        try:
            expect(client.greeting, b"+OK", log, "greeting")
            expect(client.command(f"USER {log.user}"), b"+OK", log, "USER")
            if mode == "open":
                watcher = Inotify()
                watcher.watch(maildir / "new", IN_MOVED_FROM)
                client.send(f"PASS {password(log.user)}")
                self._kill_after(watcher, self.rng.randrange(4), lambda m, p, n: True,
                                 "open: after {n} moves from new/")
                client.line()
                raise Killed("killed during login")
            reply = client.command(f"PASS {password(log.user)}")
            if reply.startswith(b"-ERR [IN-USE]"):
                log.outcome = "in use"
                return
            expect(reply, b"+OK", log, "PASS")
            log.outcome = "logged in"
            expect(client.command("UIDL"), b"+OK", log, "UIDL")
            numbered = [line.decode().split() for line in client.lines()]
            log.listed = [uid for _, uid in numbered]
            for uid in log.listed:
                if parse_name(uid) is None:
                    self.fail(f"{log}: lists {uid!r}, which is no message (a tmp/ file?)")
            by_uid = {uid: number for number, uid in numbered}

            to_read = rng.sample(log.listed, min(len(log.listed), rng.choice([0, 0, 0, 1, 2])))
            if mode == "retr" and log.listed:
                largest = max(log.listed, key=lambda uid: parse_name(uid)[2])  # type: ignore[index]
                to_read.append(largest)
            for uid in to_read:
                log.outcome = f"RETR {uid}"
                cut = uid == to_read[-1] and mode == "retr"
                self._retrieve(client, log, by_uid[uid], uid, cut)

            if mode in ("dele", "quit", "commit"):
                fraction = rng.uniform(0.6, 1.0)
            elif careful or roaming:
                fraction = rng.choice([0.0, 0.1])
            else:
                fraction = rng.choice([0.0, 0.2, 0.5, 1.0])
            count = round(len(log.listed) * fraction)
            if mode in ("dele", "quit", "commit"):
                count = max(count, min(2, len(log.listed)))
            for uid in rng.sample(log.listed, count):
                log.outcome = f"DELE {uid}"
                log.deleted.append(uid)
                expect(client.command(f"DELE {by_uid[uid]}"), b"+OK", log, "DELE")
            if mode == "dele":
                self.kill("dele: after DELE, before QUIT")
                client.line()
                raise Killed("killed before QUIT")
            if not target and rng.random() < 0.1:
                log.outcome = "dropped without QUIT"
                return

            if mode == "commit":
                watcher = Inotify()
                watcher.watch(maildir, IN_MOVED_TO | IN_DELETE)
                watcher.watch(maildir / "cur", IN_DELETE)
            log.outcome = "QUIT"
            log.quit_sent = True
            sent = time.perf_counter()
            client.send("QUIT")
            if mode == "quit":
                offset = self.rng.uniform(0.0, 1.5 * self.batch.commit_estimate())
                if offset > 0.002:
                    time.sleep(offset - 0.001)
                while time.perf_counter() - sent < offset:
                    pass
                self.kill(f"quit: {offset * 1e6:.0f} us after QUIT")
            elif mode == "commit" and watcher is not None:
                unlinks = self.rng.randrange(len(log.deleted)) if log.deleted else 0
                self._kill_in_commit(watcher, unlinks)
            log.quit_reply = client.line()
            elapsed = time.perf_counter() - sent
            expect(log.quit_reply, b"+OK", log, "QUIT")
            log.outcome = "committed"
            if log.deleted:
                self.batch.latencies.append(elapsed)
        finally:
            client.close()
            if watcher is not None:
                watcher.close()

    def _retrieve(self, client: Client, log: SessionLog, number: str, uid: str, cut: bool) -> None:
        expected = message_bytes(uid)
        received = bytearray()
        try:
            expect(client.command(f"RETR {number}"), b"+OK", log, f"RETR {uid}")
            if cut:
                lines = self.rng.randrange(1, 40)
                for read in range(lines):
                    line = client.line()
                    if line == b".":  # a short message: all of it came
                        self.kill(f"retr: after all {read} lines of a {len(expected)}-byte message")
                        break
                    received += (line[1:] if line.startswith(b".") else line) + b"\r\n"
                else:
                    self.kill(f"retr: after {lines} lines of a {len(expected)}-byte message")
                    client.lines(into=received)
            else:
                client.lines(into=received)
        finally:
            if not expected.startswith(bytes(received)):
                self.fail(f"{log}: RETR {uid} sent bytes that are not the message's")
        if bytes(received) != expected:
            self.fail(f"{log}: RETR {uid} sent {len(received)} bytes, not the "
                      f"{len(expected)} stored")
        with self._lock:
            self.retr_checked += 1

    def _kill_after(self, watcher: Inotify, count: int, wanted: Any, reason: str) -> None:
        seen = 0
        deadline = time.monotonic() + 2.0
        while seen < count and time.monotonic() < deadline and not self.killed.is_set():
            for path, mask, name in watcher.events(0.05):
                if wanted(mask, path, name):
                    seen += 1
        self.missed = seen < count
        self.kill(reason.format(n=seen))

    def _kill_in_commit(self, watcher: Inotify, unlinks: int) -> None:
        """After the journal is in place and ``unlinks`` messages are gone.
        Also checks the order seen on disk: no message is unlinked before
        the journal is in place (with SIGKILL alone, a commit without a
        journal would only be caught by a kill between two unlinks)."""
        journal = False
        seen = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not self.killed.is_set():
            for path, mask, name in watcher.events(0.05):
                if name == JOURNAL and mask & IN_MOVED_TO:
                    journal = True
                elif name == JOURNAL and mask & IN_DELETE:
                    return self.kill("commit: as the journal was removed")
                elif mask & IN_DELETE and path.endswith("/cur"):
                    if not journal:
                        self.fail(f"cur/{name} was unlinked before the journal was in place")
                    seen += 1
            if journal and seen >= unlinks:
                return self.kill(f"commit: journal written, {seen} unlinks seen")
            if not journal and seen:
                return self.kill(f"commit: {seen} unlinks seen and no journal")
        self.missed = True
        self.kill("commit: no journal seen in 2 s")


def expect(reply: bytes, prefix: bytes, log: SessionLog, what: str) -> None:
    if not reply.startswith(prefix):
        raise AssertionError(f"{what}: {reply!r}")


class Batch:
    """One temp tree, one delivering process, many kill points in a row."""

    def __init__(self, root: Path, zygote: Zygote, tally: Tally, seed: int,
                 kill_points: int) -> None:
        root.mkdir()
        self.kill_points = kill_points
        self.next_server: Server | None = None
        self.root = root
        self.zygote = zygote
        self.tally = tally
        self.seed = seed
        self.rng = random.Random(seed)
        self.template = str(root / "mail" / "%u" / "Maildir")
        self.passwd = root / "users"
        self.passwd.write_text(
            "".join(f"{u}:{make_hash('PLAIN', password(u).encode())}::::::\n" for u in USERS)
        )
        self.model: dict[str, set[str]] = {}  # what must be there (seen there, not deleted)
        self.gone: dict[str, set[str]] = {}  # what was there once and must never come back
        self.ever_quit_deleted: dict[str, set[str]] = {u: set() for u in USERS}
        for user in USERS:
            for sub in ("cur", "new", "tmp"):
                (self.maildir(user) / sub).mkdir(parents=True)
            self.model[user] = set()
            self.gone[user] = set()
        self.counter = 0
        self.latencies: list[float] = []
        self.deliverer = Deliverer(root, USERS, seed)
        self.server_must_recover = False

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def commit_estimate(self) -> float:
        recent = self.latencies[-15:]
        return statistics.median(recent) if recent else 0.03

    def _spawn(self, number: int) -> Server:
        log = self.root / f"twistd-{number}.log"
        return self.zygote.spawn(self.server_args(), self.root, log, wait=False)

    def server_args(self) -> list[str]:
        return ["--listen", "tcp:0:interface=127.0.0.1", "--store", f"maildir:{self.template}",
                "--auth", f"passwd-file:{self.passwd}", "--workers", "1",
                "--throttle-base", "0"]

    def close(self) -> None:
        if self.next_server is not None:
            self.next_server.close()
        self.deliverer.stop()

    # -- one kill point -------------------------------------------------------------------

    def kill_point(self, number: int) -> None:
        seed = self.seed * 1000 + number
        rng = random.Random(seed)
        mode = rng.choices(list(MODES), weights=list(MODES.values()))[0]
        server, self.next_server = self.next_server or self._spawn(number), None
        context = f"batch seed {self.seed}, kill point {number} (seed {seed}, mode {mode})"
        try:
            server.wait_listening()
            if self.server_must_recover:
                self._recover_through(server, context)  # logs in: moves new/ to cur/
            # Delivered as an MTA would, with no session running.
            self._top_up(rng, extra_new=6 if mode == "open" else 0)
            point = KillPoint(self, seed, mode, server)
            point.run()
        finally:
            server.close()
        # The next server starts while this one's remains are checked: a
        # server touches no maildir before a login.
        if number + 1 < self.kill_points:
            self.next_server = self._spawn(number + 1)
        text = server.log_text()
        problems = list(point.failures)
        if "Traceback" in text or "Unhandled" in text:
            problems.append(f"the server logged an error:\n{text[-3000:]}")
        problems += self._check(point, rng)
        if problems:
            sessions = "\n  ".join(map(str, point.sessions))
            raise AssertionError(
                f"{context}: {point.reason}\n" + "\n".join(problems) + f"\nsessions:\n  {sessions}"
            )
        self.tally.kill_points += 1
        self.tally.modes[mode] += 1
        self.tally.sessions += len(point.sessions)
        self.tally.committed += sum(s.outcome == "committed" for s in point.sessions)
        self.tally.retr_checked += point.retr_checked
        if point.missed:
            self.tally.missed[point.reason.split(" in ")[0].split(": after")[0]] += 1

    def _top_up(self, rng: random.Random, extra_new: int) -> None:
        """Between sessions: keep each maildrop between MIN and MAX."""
        for user in USERS:
            state = scan(self.maildir(user))
            present = set(state.files)
            for base in sorted(present)[: max(0, len(present) - MAX_MESSAGES)]:
                for relative in state.files[base]:
                    os.unlink(self.maildir(user) / relative)
                self.model[user].discard(base)
                self.gone[user].add(base)
            want = max(0, MIN_MESSAGES + rng.randrange(4) - len(present)) + extra_new
            for _ in range(want):
                self.counter += 1
                base = message_name("T", self.counter, random_size(rng))
                deliver(self.maildir(user), base)
                self.model[user].add(base)

    # -- after the kill ------------------------------------------------------------------

    def _check(self, point: KillPoint, rng: random.Random) -> list[str]:
        problems: list[str] = []
        delivered = self.deliverer.delivered()
        in_process = rng.random() < 0.6
        states: dict[str, DiskState] = {}
        for user in USERS:
            state = states[user] = scan(self.maildir(user))
            sessions = [s for s in point.sessions if s.user == user]
            problems += self._check_user(user, state, sessions, delivered.get(user, set()))
        if problems:
            return problems
        if in_process:
            problems += self._recover_in_process(states)
        else:
            self.server_must_recover = True  # what it must list: self.model, below
            self.interrupted = {user: bool(state.journal) for user, state in states.items()}
        for user, state in states.items():
            after = set(state.files) - (state.journal or set())
            seen = self.model[user] | delivered.get(user, set())
            self.gone[user] |= seen - after
            self.model[user] = after
            self.tally.messages_checked += len(state.files)
        return problems

    def _check_user(self, user: str, state: DiskState, sessions: list[SessionLog],
                    delivered: set[str]) -> list[str]:
        problems = [f"{user}: {bad}" for bad in state.bad]
        present = set(state.files)
        quit_deleted = set().union(*(set(s.deleted) for s in sessions if s.quit_sent))
        self.ever_quit_deleted[user] |= quit_deleted
        for base, paths in state.files.items():
            if len(paths) > 1:
                problems.append(f"{user}: {base} is there {len(paths)} times: {paths}")
            if base in self.gone[user]:
                problems.append(f"{user}: {base}, deleted earlier, is back")
            elif base not in self.model[user] and base not in delivered:
                tag = parse_name(base)
                if tag is None or tag[0] != "D":  # D: renamed, not logged yet (frozen)
                    problems.append(f"{user}: {base} came from nowhere")
        for base in self.model[user] - present:
            if base not in quit_deleted:
                problems.append(f"{user}: {base} is gone, but no session that sent QUIT "
                                "had deleted it")
        for base in delivered - self.model[user] - self.gone[user] - present:
            if base not in self.ever_quit_deleted[user]:
                problems.append(f"{user}: delivered {base} is gone, but no session that "
                                "sent QUIT had deleted it")
        if state.journal is not None:
            self.tally.journal_found += 1
            owners = [s for s in sessions if s.quit_sent and set(s.deleted) == state.journal]
            if not owners:
                problems.append(f"{user}: the journal {sorted(state.journal)} is no "
                                "session's DELE set")
        if state.journal_temporary:
            self.tally.journal_temporary_found += 1
        for session in sessions:
            deleted = set(session.deleted)
            gone = deleted - present
            if not deleted:
                continue
            if not session.quit_sent:
                if gone - quit_deleted:
                    problems.append(f"{user}: {sorted(gone - quit_deleted)} gone though "
                                    f"their session sent no QUIT ({session})")
            elif session.quit_reply is not None and session.quit_reply.startswith(b"+OK"):
                if gone != deleted:
                    problems.append(f"{user}: QUIT said +OK but {sorted(deleted - gone)} "
                                    f"are still there ({session})")
            elif gone and gone != deleted:
                if state.journal == deleted:
                    self.tally.partial_found += 1
                else:
                    problems.append(f"{user}: {len(gone)} of {len(deleted)} deleted and no "
                                    f"journal to finish the rest ({session})")
        return problems

    def _recover_in_process(self, states: dict[str, DiskState]) -> list[str]:
        """Open each maildrop with the store (finishing any journal); the
        kernel must have dropped the dead server's flocks."""
        problems = []
        store = MaildirStore(self.template, run_blocking=run_synchronously)
        for user, before in states.items():
            maildrop = result_of(store.open(user))
            try:
                listing = {info.uid: info.size for info in maildrop.listing()}
            finally:
                result_of(maildrop.abandon())
            after = scan(self.maildir(user))
            expected = set(before.files) - (before.journal or set())
            problems += _recovered(user, after, expected)
            if set(listing) != expected:
                problems.append(f"{user}: the store lists {sorted(set(listing) ^ expected)} "
                                "wrongly")
            for uid, size in listing.items():
                if size != len(message_bytes(uid)):
                    problems.append(f"{user}: {uid} listed with size {size}")
        return problems

    def _recover_through(self, server: Server, context: str) -> None:
        """A restarted server's first login finishes the interrupted commit."""
        self.server_must_recover = False
        problems = []
        for user in USERS:
            client = Client(server.port)
            try:
                client.command(f"USER {user}")
                reply = client.command(f"PASS {password(user)}")
                if not reply.startswith(b"+OK"):
                    problems.append(f"{user}: login after restart: {reply!r}")
                    continue
                client.command("UIDL")
                listed = {line.decode().split()[1] for line in client.lines()}
                quit_reply = client.command("QUIT")
            finally:
                client.close()
            expected = self.model[user]  # the journal applied, plus _top_up's mail
            if listed != expected or not quit_reply.startswith(b"+OK"):
                problems.append(f"{user}: the restarted server lists "
                                f"{sorted(listed ^ expected)} wrongly ({quit_reply!r})")
            problems += _recovered(user, scan(self.maildir(user)), expected)
            self.tally.recovered_by_server += self.interrupted[user]
        if problems:
            raise AssertionError(f"{context}: recovery by a restarted server:\n"
                                 + "\n".join(problems))


def _recovered(user: str, state: DiskState, expected: set[str]) -> list[str]:
    problems = [f"{user}: after recovery: {bad}" for bad in state.bad]
    if state.journal is not None or state.journal_temporary:
        problems.append(f"{user}: a journal is still there after an open")
    if set(state.files) != expected:
        problems.append(f"{user}: after recovery {sorted(set(state.files) ^ expected)} "
                        "differ from what the journal promised")
    return problems


def run_batch(batch: int, zygote: Zygote, root: Path) -> tuple[Tally, BaseException | None]:
    """LANES independent trees at once (much of a kill point is waiting on
    fsync and sockets), KILLS_PER_LANE kill points each; the batch's tally
    and its first error."""
    started = time.monotonic()
    tally = Tally()
    lanes = [
        Batch(root / f"lane{lane}", zygote, Tally(), BASE_SEED + batch * LANES + lane,
              KILLS_PER_LANE)
        for lane in range(LANES)
    ]
    errors: list[BaseException] = []
    stop = threading.Event()

    def run(runner: Batch) -> None:
        try:
            for number in range(KILLS_PER_LANE):
                if stop.is_set():
                    return
                runner.kill_point(number)
        except BaseException as e:  # noqa: BLE001 - returned below
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=run, args=(lane,)) for lane in lanes]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
            if thread.is_alive():
                errors.append(AssertionError("a lane of kill points hung"))
                stop.set()
    finally:
        for lane in lanes:
            lane.close()
            lane.tally.seconds = 0.0
            tally.add(lane.tally)
        tally.seconds += time.monotonic() - started
    return tally, (errors[0] if errors else None)


@pytest.fixture(scope="module")
def batches(zygote: Zygote, tally: Tally,
            tmp_path_factory: pytest.TempPathFactory) -> dict[int, BaseException | None]:
    """Every batch, run once for the module, whichever of its tests run
    and in whatever order: each batch's test reports its outcome, the
    summary test reads them all (no test reads what another left)."""
    outcomes: dict[int, BaseException | None] = {}
    for batch in range(BATCHES):
        counted, outcomes[batch] = run_batch(batch, zygote, tmp_path_factory.mktemp(f"batch{batch}"))
        tally.add(counted)
        tally.batches += outcomes[batch] is None
    return outcomes


@pytest.mark.parametrize("batch", range(BATCHES))
def test_sigkill_at_seeded_points(batch: int, batches: dict[int, BaseException | None]) -> None:
    if (error := batches[batch]) is not None:
        raise error


def test_kill_points_reached_the_commit(batches: dict[int, BaseException | None], tally: Tally,
                                        record_property: Any) -> None:
    """Over all the batches: hundreds of kill points, some inside the
    commit window (not only before or after it)."""
    failed = [batch for batch, error in batches.items() if error is not None]
    if failed:
        pytest.skip(f"batches {failed} failed: their tests say why")
    record_property("kill_points", tally.kill_points)
    assert tally.kill_points >= min(MIN_KILL_POINTS, BATCHES * LANES * KILLS_PER_LANE)
    assert tally.journal_found > 0, tally.line()


# -- a full disk, a read-only Maildir ---------------------------------------------------------


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (as root) this must run, so fail there instead."""
    if IN_CI:
        pytest.fail(f"must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class SmallDisk:
    """A Maildir on a tmpfs of its own (4 MiB, 1000 inodes)."""

    root: Path
    mount: Path
    zygote: Zygote
    users: Path = field(init=False)
    counter: int = 0

    def __post_init__(self) -> None:
        self.users = self.root / "users"
        self.users.write_text(f"alice:{make_hash('PLAIN', b'pw-alice')}::::::\n")
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)

    @property
    def maildir(self) -> Path:
        return self.mount / "mail" / "alice" / "Maildir"

    def deliver(self, count: int, rng: random.Random) -> list[str]:
        names = []
        for _ in range(count):
            self.counter += 1
            names.append(message_name("T", self.counter, rng.randint(200, 3000)))
            deliver(self.maildir, names[-1])
        return names

    def start(self) -> Server:
        args = ["--listen", "tcp:0:interface=127.0.0.1",
                "--store", f"maildir:{self.mount}/mail/%u/Maildir",
                "--auth", f"passwd-file:{self.users}", "--workers", "1", "--throttle-base", "0"]
        return self.zygote.spawn(args, self.root, self.root / f"twistd-{time.monotonic_ns()}.log")

    def present(self) -> dict[str, list[str]]:
        state = scan(self.maildir)
        assert not state.bad, state.bad
        return state.files


def session(port: int, delete: list[str] | None = None, quit: bool = True) -> tuple[list[str], bytes]:
    """Log in as alice, list, DELE ``delete``, QUIT: (uids, QUIT's reply)."""
    client = Client(port)
    try:
        assert client.command("USER alice").startswith(b"+OK")
        reply = client.command("PASS pw-alice")
        assert reply.startswith(b"+OK"), reply
        assert client.command("UIDL").startswith(b"+OK")
        numbered = dict(reversed(line.decode().split()) for line in client.lines())
        for uid in delete or []:
            assert client.command(f"DELE {numbered[uid]}").startswith(b"+OK")
        return list(numbered), client.command("QUIT") if quit else b""
    finally:
        client.close()


@pytest.fixture
def small_disk(tmp_path: Path, zygote: Zygote) -> Iterator[SmallDisk]:
    mount = tmp_path / "fs"
    mount.mkdir()
    problem = mount_tmpfs(mount, "size=4m,nr_inodes=1000,mode=0700")
    if problem:
        _unavailable(f"cannot mount a tmpfs (needs root): {problem}")
    try:
        yield SmallDisk(tmp_path, mount, zygote)
    finally:
        try:
            remount(mount, read_only=False)
        except OSError:
            pass
        unmount(mount)


def _no_traceback(server: Server) -> None:
    text = server.log_text()
    assert "Traceback" not in text and "Unhandled" not in text, text[-3000:]


@pytest.mark.parametrize("resource", ["blocks", "inodes"])
def test_full_disk_at_quit(small_disk: SmallDisk, resource: str) -> None:
    """No room for the journal: -ERR [SYS/TEMP], nothing deleted, and the
    maildrop works, full and once there is room again."""
    rng = random.Random(resource)
    names = small_disk.deliver(6, rng)
    server = small_disk.start()
    try:
        assert session(server.port)[0] == names  # new/ -> cur/, lock file made
        client = Client(server.port)
        client.command("USER alice")
        assert client.command("PASS pw-alice").startswith(b"+OK")
        for number in (1, 3, 4):
            assert client.command(f"DELE {number}").startswith(b"+OK")
        fillers = fill(small_disk.mount, resource)
        reply = client.command("QUIT")
        client.close()
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        assert sorted(small_disk.present()) == names
        assert scan(small_disk.maildir).journal is None
        # Still full: logins work and list everything; a commit fails again.
        listed, reply = session(server.port, delete=names[:2])
        assert listed == names and reply.startswith(b"-ERR [SYS/TEMP]"), reply
        for filler in fillers:
            filler.unlink()
        listed, reply = session(server.port, delete=[names[0], names[3]])
        assert listed == names and reply.startswith(b"+OK"), reply
        assert sorted(small_disk.present()) == [names[1], names[2], names[4], names[5]]
        state = scan(small_disk.maildir)
        assert state.journal is None and not state.journal_temporary
    finally:
        server.close()
    _no_traceback(server)


def test_read_only_maildir_at_quit(small_disk: SmallDisk) -> None:
    """The filesystem remounted read-only under a logged-in session."""
    names = small_disk.deliver(5, random.Random(1))
    server = small_disk.start()
    try:
        assert session(server.port)[0] == names
        client = Client(server.port)
        client.command("USER alice")
        assert client.command("PASS pw-alice").startswith(b"+OK")
        for number in (2, 3):
            assert client.command(f"DELE {number}").startswith(b"+OK")
        remount(small_disk.mount, read_only=True)
        try:
            reply = client.command("QUIT")
            client.close()
            assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
            assert sorted(small_disk.present()) == names
            # Read-only: logins still work (the lock opens O_RDONLY).
            listed, reply = session(server.port, delete=[names[0]])
            assert listed == names and reply.startswith(b"-ERR [SYS/TEMP]"), reply
        finally:
            remount(small_disk.mount, read_only=False)
        listed, reply = session(server.port, delete=[names[1], names[2]])
        assert listed == names and reply.startswith(b"+OK"), reply
        assert sorted(small_disk.present()) == [names[0], names[3], names[4]]
    finally:
        server.close()
    _no_traceback(server)


@pytest.mark.parametrize(
    "point",
    [
        "disk full as the journal is created",
        "read-only once the journal is written",
        "read-only once the messages are unlinked",
    ],
)
def test_fault_at_an_exact_point_of_the_commit(small_disk: SmallDisk, point: str) -> None:
    """fanotify holds the server at one open() of its commit (the journal's
    temporary file; the maildir opened to fsync the rename; cur/ opened to
    fsync the unlinks) while the disk fills up or goes read-only.  QUIT gets
    -ERR [SYS/TEMP]; the commit is then none (no journal) or all (a journal,
    which hides the messages at once and is finished once writable)."""
    try:
        gate = OpenGate(small_disk.mount)
    except OSError as e:
        _unavailable(f"fanotify permission events unavailable (needs root): {e}")
    names = small_disk.deliver(8, random.Random(point))
    doomed = [names[1], names[2], names[5], names[6]]
    kept = [n for n in names if n not in doomed]
    maildir = os.path.realpath(small_disk.maildir)
    # Opened now (see arm()), only when needed: a file open for writing
    # stops a read-only remount (EBUSY).
    filler = None
    if "full" in point:
        filler = open(small_disk.mount / "filler", "wb", buffering=0)  # noqa: SIM115
    server = small_disk.start()
    try:
        session(server.port)
        client = Client(server.port)
        client.command("USER alice")
        assert client.command("PASS pw-alice").startswith(b"+OK")
        for number in (2, 3, 6, 7):
            assert client.command(f"DELE {number}").startswith(b"+OK")
        if point.startswith("disk full"):
            gate.arm(server.pid, lambda path: f"/.{JOURNAL}." in path, lambda: fill_file(filler))  # type: ignore[arg-type]
        elif "journal is written" in point:
            gate.arm(server.pid, lambda path: path == maildir,
                     lambda: remount(small_disk.mount, read_only=True))
        else:
            gate.arm(server.pid, lambda path: path == f"{maildir}/cur",
                     lambda: remount(small_disk.mount, read_only=True))
        reply = client.command("QUIT")
        client.close()
        assert gate.fired.is_set() and not gate.errors, (point, gate.errors)
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        during = scan(small_disk.maildir)
        listed, reply = session(server.port)  # still full or read-only
        if point.startswith("disk full"):
            assert during.journal is None and not during.journal_temporary
            assert sorted(during.files) == names and listed == names
        else:
            assert during.journal == set(doomed), during
            expected_on_disk = names if "journal is written" in point else kept
            assert sorted(during.files) == expected_on_disk
            assert listed == kept  # the commit happened: the journal hides them
        if filler is not None:
            filler.truncate(0)
        try:
            remount(small_disk.mount, read_only=False)
        except OSError:
            pass
        listed, reply = session(server.port, delete=[kept[0]])
        assert reply.startswith(b"+OK"), reply
        state = scan(small_disk.maildir)
        assert state.journal is None and not state.journal_temporary
        if point.startswith("disk full"):
            assert listed == names and sorted(state.files) == sorted(set(names) - {kept[0]})
        else:
            assert listed == kept and sorted(state.files) == kept[1:]
    finally:
        gate.close()
        if filler is not None:
            filler.close()
        server.close()
    _no_traceback(server)


@pytest.mark.core
@pytest.mark.parametrize(
    ("call", "code"),
    [("write", errno.ENOSPC), ("fsync", errno.ENOSPC), ("fsync", errno.EIO),
     ("replace", errno.EROFS)],
)
def test_journal_write_failures_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    """Without a mount: the journal's write, fsync or rename failing (as a
    full or read-only disk makes them) deletes nothing and leaves no journal."""
    maildir = tmp_path / "alice" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    names = [message_name("T", n, 500 + n) for n in range(1, 5)]
    for name in names:
        deliver(maildir, name)
    store = MaildirStore(f"{tmp_path}/%u/Maildir", run_blocking=run_synchronously)
    maildrop = result_of(store.open("alice"))
    real = getattr(os, call)

    def failing(*args: Any, **kwargs: Any) -> Any:
        target = args[0]
        if isinstance(target, int):
            target = os.readlink(f"/proc/self/fd/{target}")
        if f".{JOURNAL}." in str(target):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, call, failing)
        failure_of(maildrop.commit(names[:3]), TemporaryFailure)
    state = scan(maildir)
    assert sorted(state.files) == names
    assert state.journal is None and not state.journal_temporary
    maildrop = result_of(store.open("alice"))
    assert [info.uid for info in maildrop.listing()] == names
    result_of(maildrop.commit(names[1:3]))
    assert sorted(scan(maildir).files) == [names[0], names[3]]


# -- the passwd-file under a running server -------------------------------------------------------


PASSWD_USERS = {"bob": "bob's password", "alice": "alice password", "carol": "carol password"}


def pop_login(port: int, user: str, secret: str) -> bytes:
    """USER/PASS with poplib: the PASS reply (+OK or the -ERR line)."""
    client = poplib.POP3("127.0.0.1", port, timeout=15)
    try:
        client.user(user)
        try:
            reply = client.pass_(secret)
        except poplib.error_proto as e:
            return e.args[0]
        client.quit()
        return reply
    finally:
        client.close()


def write_in_place(path: Path, data: bytes) -> None:
    """As ``cat > users`` or an editor without a rename: same inode."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(0)
        f.write(data)


@pytest.fixture
def passwd_server(tmp_path: Path, zygote: Zygote) -> Iterator[tuple[Server, Path, bytes]]:
    """A server whose passwd-file the test mangles.  Root reads any file,
    so as root the server runs without CAP_DAC_OVERRIDE/READ_SEARCH and a
    chmod 000 really makes the file unreadable to it."""
    passwd = tmp_path / "users"
    data = "".join(
        f"{user}:{make_hash('SHA512-CRYPT', secret.encode())}::::::\n"
        for user, secret in PASSWD_USERS.items()
    ).encode()
    passwd.write_bytes(data)
    passwd.chmod(0o600)
    (tmp_path / "mail").mkdir()
    args = ["--listen", "tcp:0:interface=127.0.0.1",
            "--store", f"maildir:{tmp_path}/mail/%u/Maildir", "--auth", f"passwd-file:{passwd}",
            "--workers", "1", "--throttle-base", "0", "--max-auth-failures", "0",
            "--max-ip-failures", "0"]
    server = zygote.spawn(args, tmp_path, tmp_path / "twistd.log", drop_dac=os.geteuid() == 0)
    yield server, passwd, data
    server.close()
    _no_traceback(server)


def _all_log_in(port: int) -> None:
    for user, secret in PASSWD_USERS.items():
        reply = pop_login(port, user, secret)
        assert reply.startswith(b"+OK"), (user, reply)


def test_passwd_file_removed_or_unreadable(passwd_server: tuple[Server, Path, bytes]) -> None:
    server, passwd, data = passwd_server
    _all_log_in(server.port)  # the table is cached now: it must not be used stale

    passwd.unlink()
    for user, secret in [("alice", PASSWD_USERS["alice"]), ("nobody", "x")]:
        reply = pop_login(server.port, user, secret)
        assert reply.startswith(b"-ERR [SYS/TEMP]"), (user, reply)
    passwd.write_bytes(data)
    _all_log_in(server.port)

    passwd.chmod(0)
    try:
        with open(passwd, "rb"):
            pass
        if os.geteuid() != 0:
            pytest.fail("chmod 000 left the passwd-file readable")
    except PermissionError:
        pass
    reply = pop_login(server.port, "alice", PASSWD_USERS["alice"])
    assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    passwd.chmod(0o600)
    _all_log_in(server.port)

    # Replaced by a directory (a botched deployment): unreadable too.
    passwd.unlink()
    passwd.mkdir()
    reply = pop_login(server.port, "alice", PASSWD_USERS["alice"])
    assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    passwd.rmdir()
    passwd.write_bytes(data)
    _all_log_in(server.port)


def test_half_written_passwd_file(passwd_server: tuple[Server, Path, bytes]) -> None:
    """The file cut short at seeded offsets inside alice's line (user name,
    scheme, salt, hash), as a reader sees a writer in progress: alice gets
    [AUTH] (never in with a partial hash, nor with the stale whole one);
    carol, entirely missing, [AUTH]; bob, whose line is whole, logs in."""
    server, passwd, data = passwd_server
    _all_log_in(server.port)
    start = data.index(b"\nalice:") + 1
    end = data.index(b":", start + len("alice:"))  # where her hash is whole
    rng = random.Random(BASE_SEED)
    cuts = sorted({start + 1, start + 6, start + 10, end - 1,
                   *rng.sample(range(start, end), 8)})
    for cut in cuts:
        write_in_place(passwd, data[:cut])
        context = f"file cut at byte {cut}: {data[start:cut]!r}"
        reply = pop_login(server.port, "alice", PASSWD_USERS["alice"])
        assert reply.startswith(b"-ERR [AUTH]"), (context, reply)
        reply = pop_login(server.port, "carol", PASSWD_USERS["carol"])
        assert reply.startswith(b"-ERR [AUTH]"), (context, reply)
        reply = pop_login(server.port, "bob", PASSWD_USERS["bob"])
        assert reply.startswith(b"+OK"), (context, reply)
    write_in_place(passwd, data[:end])  # her hash whole, the rest of the file not yet
    assert pop_login(server.port, "alice", PASSWD_USERS["alice"]).startswith(b"+OK")
    assert pop_login(server.port, "carol", PASSWD_USERS["carol"]).startswith(b"-ERR [AUTH]")
    write_in_place(passwd, data)
    _all_log_in(server.port)


def test_changed_passwd_file_is_never_used_stale(
    passwd_server: tuple[Server, Path, bytes],
) -> None:
    """A new password takes effect at once, whether the file is replaced
    (rename) or rewritten in place at the same size (SHA512-CRYPT hashes
    are all one length)."""
    server, passwd, data = passwd_server
    _all_log_in(server.port)
    for round_, new in enumerate(["alice's new one", "alice's 3rd one"]):
        old = PASSWD_USERS["alice"] if round_ == 0 else "alice's new one"
        changed = data.replace(
            data[data.index(b"\nalice:") + 1 : data.index(b"\n", data.index(b"\nalice:") + 1)],
            f"alice:{make_hash('SHA512-CRYPT', new.encode())}::::::".encode(),
        )
        assert len(changed) == len(data)
        if round_ == 0:
            temporary = passwd.with_suffix(".new")
            temporary.write_bytes(changed)
            os.replace(temporary, passwd)
        else:
            write_in_place(passwd, changed)
        assert pop_login(server.port, "alice", old).startswith(b"-ERR [AUTH]"), round_
        assert pop_login(server.port, "alice", new).startswith(b"+OK"), round_
    write_in_place(passwd, data)
    _all_log_in(server.port)
