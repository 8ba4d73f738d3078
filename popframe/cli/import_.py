"""``popframe import --store STORE USER SOURCE``: move a user's mail in
from an mbox file or a Maildir, as the LDA and LMTP deliver it (through
the store's :class:`~popframe.interfaces.IDeliverableStore`), oldest
first, so UIDLs and order come out as if the mail had been delivered here.

- Resumable: each message delivered is written to a journal (``--journal``;
  by default under ``$XDG_STATE_HOME/popframe/import/``, one per store,
  user and source) before the next one starts.  Running the same command
  again, after an interruption or once new mail has arrived in the
  source, imports only what the journal does not list.  A Maildir message
  is known by its base name, an mbox message by its content's SHA-256
  (and how many identical ones came before it).  The journal is flushed
  after every message and synced to disk every 100: a killed process
  loses nothing, a crash of the machine may import the last few again.
- On a terminal, a progress bar on standard error (messages, percent,
  rate, time left); quiet otherwise.  A summary line at the end either way.
- SIGINT (Ctrl-C) or SIGTERM: the message being delivered is finished and
  noted, then the import stops (exit status 1), ready to be resumed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat as stat_module
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from twisted.internet import defer

from popframe.cli._transfer import (
    Message,
    Progress,
    StopRequest,
    copy_messages,
    rate,
)
from popframe.cli.errors import CLIError

__all__ = ["Journal", "Message", "Progress", "import_messages", "read_source"]

HELP = ("Import a user's mail from an mbox file or a Maildir into a store, resumably "
        "(a progress bar on a terminal, a summary at the end).")

_SYNC_EVERY = 100


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True,
                        help="where maildrops live, as twistd pop3 --store takes it, e.g. "
                             "maildir:/var/mail/%%u/Maildir")
    parser.add_argument("user", metavar="USER", help="the user whose maildrop receives the mail")
    parser.add_argument("source", metavar="SOURCE", type=Path,
                        help="an mbox file, or a Maildir (a directory with cur/ and new/)")
    parser.add_argument("--journal", type=Path, metavar="FILE",
                        help="where to note what was imported (default: under "
                             "$XDG_STATE_HOME/popframe/import/, one per store, user and source)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar, even on a terminal")


def run(args: argparse.Namespace) -> int:
    from popframe.cli._reactor import Interrupted, run_reactor
    from popframe.interfaces import IDeliverableStore
    from popframe.stores import store_from_description

    store = store_from_description(args.store)
    if not IDeliverableStore.providedBy(store):
        raise CLIError(f"--store: the {args.store.partition(':')[0]!r} store cannot take mail")
    source = args.source
    kind = source_kind(source)
    journal_path = args.journal or default_journal(args.store, args.user, source)
    progress = Progress(sys.stderr if sys.stderr.isatty() and not args.quiet else None,
                        total_octets(source, kind))
    stop = StopRequest()

    def work() -> defer.Deferred[Progress]:
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "shutdown", stop.request)
        return import_messages(store, args.user, read_source(source, kind), journal,
                               progress, stop)

    with Journal(journal_path, {"store": args.store, "user": args.user,
                                "source": str(source.resolve())}) as journal:
        try:
            done = run_reactor(work)
        except CLIError:
            progress.end()
            raise
        except Interrupted:
            done = None
    progress.end()
    if done is None or stop.requested:
        print(f"popframe import: interrupted after {progress.messages} messages; run the "
              "same command again to go on", file=sys.stderr)
        return 1
    print(summary(done, args.user, journal_path))
    return 0


# -- the sources -----------------------------------------------------------------------


def source_kind(source: Path) -> str:
    """``maildir`` or ``mbox``, or a CLIError saying what the source is not."""
    try:
        mode = source.stat().st_mode
    except OSError as error:
        raise CLIError(f"{source}: {error.strerror}") from None
    if stat_module.S_ISDIR(mode):
        if (source / "cur").is_dir() or (source / "new").is_dir():
            return "maildir"
        raise CLIError(f"{source}: a directory, but not a Maildir (no cur/ or new/)")
    if stat_module.S_ISREG(mode):
        with open(source, "rb") as f:
            start = f.read(5)
        if start and start != b"From ":
            raise CLIError(f"{source}: not an mbox (it does not start with a 'From ' line)")
        return "mbox"
    raise CLIError(f"{source}: neither an mbox file nor a Maildir")


def _maildir_files(source: Path) -> list[tuple[str, Path]]:
    """(delivery order, path) of the messages in ``new/`` and ``cur/``."""
    from popframe.stores.maildir.names import base_name, delivery_order

    files = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(source / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            files.append((delivery_order(base_name(entry.name)), Path(entry.path)))
    files.sort()
    return files


def total_octets(source: Path, kind: str) -> int:
    if kind == "mbox":
        return source.stat().st_size
    return sum(path.stat().st_size for _, path in _maildir_files(source))


def read_source(source: Path, kind: str) -> Iterator[Message]:
    """The messages of ``source``, oldest first."""
    if kind == "maildir":
        return _read_maildir(source)
    return _read_mbox(source)


def _read_maildir(source: Path) -> Iterator[Message]:
    from popframe.stores.maildir.names import base_name

    for _, path in _maildir_files(source):
        try:
            octets = path.read_bytes()
        except FileNotFoundError:  # deleted meanwhile (a client of the old server)
            continue
        yield Message("maildir:" + base_name(path.name), octets, len(octets))


def _read_mbox(source: Path) -> Iterator[Message]:
    """mboxrd: a message starts at a ``From `` line at the start of the
    file or after an empty line, and ends with the empty line before the
    next; ``>From`` lines lose one ``>``."""
    from popframe.stores.mbox.format import NO_FINAL_NEWLINE, Unquoter

    seen: dict[str, int] = {}

    def finished(lines: list[bytes], from_line: bytes, consumed: int) -> Message:
        if lines and lines[-1] in (b"\n", b"\r\n"):
            lines.pop()  # the separator, not the message's
        unquoter = Unquoter()
        octets = unquoter.feed(b"".join(lines)) + unquoter.finish()
        if NO_FINAL_NEWLINE in from_line and octets.endswith(b"\n"):
            octets = octets[:-1]
        digest = hashlib.sha256(octets).hexdigest()[:32]
        seen[digest] = seen.get(digest, 0) + 1
        return Message(f"mbox:{digest}#{seen[digest]}", octets, consumed)

    with open(source, "rb") as f:
        lines: list[bytes] = []
        from_line: bytes | None = None
        consumed = 0
        previous_empty = True
        for line in f:
            if line.startswith(b"From ") and previous_empty:
                if from_line is not None:
                    yield finished(lines, from_line, consumed)
                from_line, lines, consumed = line, [], len(line)
                previous_empty = False
                continue
            lines.append(line)
            consumed += len(line)
            previous_empty = line in (b"\n", b"\r\n")
        if from_line is not None:
            yield finished(lines, from_line, consumed)


# -- the journal -------------------------------------------------------------------------


def default_journal(store: str, user: str, source: Path) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    identity = "\0".join([store, user, str(source.resolve())]).encode("utf-8")
    name = f"{hashlib.sha256(identity).hexdigest()[:24]}.journal"
    return Path(state) / "popframe" / "import" / name


class Journal:
    """The keys of the messages already imported, one per line after a
    JSON header naming the store, user and source."""

    def __init__(self, path: Path, header: dict[str, str]) -> None:
        self.path = path
        self.header = header
        self.done: set[str] = set()
        self._file: IO[str] | None = None
        self._unsynced = 0

    def __enter__(self) -> Journal:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._load()
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            if self.path.stat().st_size == 0:
                self._file.write(json.dumps(self.header) + "\n")
                self._file.flush()
        except OSError as error:
            raise CLIError(f"--journal {self.path}: {error.strerror}") from None
        return self

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            first = f.readline()
            try:
                header = json.loads(first)
            except ValueError:
                header = None
            if header != self.header:
                raise CLIError(f"--journal {self.path}: it belongs to another import "
                               f"({first.strip()[:200]})")
            self.done = {line.rstrip("\n") for line in f if line.endswith("\n")}

    def add(self, key: str) -> None:
        assert self._file is not None
        self._file.write(key + "\n")
        self._file.flush()
        self.done.add(key)
        self._unsynced += 1
        if self._unsynced >= _SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None


# -- the summary -------------------------------------------------------------


def summary(progress: Progress, user: str, journal: Path) -> str:
    return (f"imported {progress.messages} messages ({progress.imported_octets} octets) for "
            f"{user} {rate(progress)}; {progress.skipped} already imported; journal {journal}")


# -- the import --------------------------------------------------------------------------


def import_messages(store: Any, user: str, messages: Iterator[Message], journal: Journal,
                    progress: Progress, stop: StopRequest | None = None) -> defer.Deferred[Any]:
    """Deliver each message the journal does not list, in order, noting
    each in the journal once the store has it durably (see
    :func:`~popframe.cli._transfer.copy_messages`)."""
    return copy_messages(messages, journal.done,
                         lambda message: store.deliver(user, io.BytesIO(message.octets)),
                         journal.add, progress, stop, user=user)
