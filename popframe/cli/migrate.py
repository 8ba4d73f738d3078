"""``popframe migrate --from dovecot|courier|maildir|mbox SOURCE --store
STORE USER``: copy a maildrop another POP3 server served into any store
that keeps UIDLs (:class:`~popframe.interfaces.IImportingStore`: Maildir,
mbox, SQL), so clients that leave mail on the server download nothing
again (docs/migration.md).

- The source is read as popframe serves it with the matching ``uidl=``
  format (:mod:`popframe.stores.maildir.uidls`): ``--from dovecot`` (or
  ``dovecot:TEMPLATE``, Dovecot's ``pop3_uidl_format``), ``courier``,
  ``maildir`` (qmail, tpop3d); ``--from mbox`` reads an mbox as
  popframe's mbox store does (``X-UIDL`` headers, as qpopper wrote them).
  Its octets are copied unchanged (an mbox target adds its ``X-UIDL``).
- Resumable: the UIDLs the target already has are skipped, and every
  store adds a message whole or not at all, so an interrupted migration
  (Ctrl-C, a kill, a crash) is finished by running it again, without
  duplicates.  SIGINT/SIGTERM finish the message under way first.
- A progress bar on a terminal, quiet otherwise, a summary at the end
  (shared with ``popframe import``: :mod:`popframe.cli._transfer`).
- ``--verify`` copies nothing: it lists the UIDLs and sizes of source and
  target and compares them, naming each difference (exit status 1).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet import defer

from popframe.cli._transfer import (
    Message,
    Pending,
    Progress,
    StopRequest,
    copy_messages,
    rate,
)
from popframe.cli.errors import CLIError
from popframe.protocol.encoding import wire_size
from popframe.stores.template import PathTemplate

__all__ = ["compare", "differences", "source_store"]

HELP = ("Copy a user's maildrop from another POP3 server (Dovecot, Courier, qmail/tpop3d "
        "maildirs, mbox) into a store, keeping every UIDL; resumable; --verify compares.")

#: The user name the source is opened as (its path has no %u).
_SOURCE_USER = "source"
#: Differences --verify names before it only counts them.
_SHOWN = 20


class FixedPath(PathTemplate):
    """One path, whoever the user: the source of a migration."""

    def __init__(self, path: str) -> None:
        self.template = self.prefix = path

    def expand(self, user: str) -> str:
        return self.template

    def resolve(self, user: str) -> str:
        return self.template


def _source_format(text: str) -> str:
    from popframe.stores.maildir.uidls import parse_uidl_format

    if text == "mbox":
        return text
    if text.partition(":")[0] not in ("dovecot", "courier", "maildir", "x-uidl"):
        raise argparse.ArgumentTypeError(
            "expected dovecot[:TEMPLATE], courier, maildir, mbox or x-uidl")
    try:
        return parse_uidl_format(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source_format", required=True, metavar="FORMAT",
                        type=_source_format,
                        help="whose UIDLs SOURCE holds: dovecot (dovecot-uidlist, else "
                             "pop3_uidl_format %%08Xu%%08Xv; dovecot:TEMPLATE for another "
                             "format), courier (courierpop3dsizelist), maildir (the file "
                             "names, as qmail and tpop3d), mbox (X-UIDL headers; x-uidl: "
                             "of a maildir's messages)")
    parser.add_argument("source", metavar="SOURCE", type=Path,
                        help="the user's maildir (a directory with cur/ and new/) or mbox file")
    parser.add_argument("--store", required=True,
                        help="where the maildrop goes, as twistd pop3 --store takes it, e.g. "
                             "sql:dsn=postgresql://popframe@db/mail")
    parser.add_argument("user", metavar="USER", help="the user whose maildrop receives the mail")
    parser.add_argument("--verify", action="store_true",
                        help="copy nothing: compare the UIDLs and sizes of SOURCE and the "
                             "user's maildrop in STORE (exit status 1 on a difference)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar, even on a terminal")


def source_store(source_format: str, source: Path) -> Any:
    """The store that serves ``source`` as its old server did."""
    import stat

    from popframe.stores.maildir import MaildirStore
    from popframe.stores.mbox import MboxStore

    try:
        mode = source.stat().st_mode
    except OSError as error:
        raise CLIError(f"{source}: {error.strerror}") from None
    template = FixedPath(str(source.resolve()))
    if source_format == "mbox":
        if not stat.S_ISREG(mode):
            raise CLIError(f"{source}: --from mbox needs an mbox file")
        return MboxStore(template)
    if not (stat.S_ISDIR(mode) and ((source / "cur").is_dir() or (source / "new").is_dir())):
        raise CLIError(f"{source}: --from {source_format} needs a maildir (cur/ and new/)")
    return MaildirStore(template, create=False, uidl=source_format)


def target_store(description: str) -> Any:
    from popframe.interfaces import IImportingStore
    from popframe.stores import store_from_description

    store = store_from_description(description)
    if not IImportingStore.providedBy(store):
        raise CLIError(f"--store: the {description.partition(':')[0]!r} store cannot keep "
                       "UIDLs (it does not provide IImportingStore)")
    return store


def run(args: argparse.Namespace) -> int:
    from popframe.cli._reactor import Interrupted, run_reactor

    source = source_store(args.source_format, args.source)
    target = target_store(args.store)
    if args.verify:
        found = run_reactor(lambda: defer.Deferred.fromCoroutine(
            compare(source, target, args.user)))
        for line in found[:_SHOWN]:
            print(line)
        if len(found) > _SHOWN:
            print(f"... and {len(found) - _SHOWN} more differences")
        if found:
            print(f"popframe migrate: {len(found)} differences between {args.source} and "
                  f"{args.user}'s maildrop", file=sys.stderr)
            return 1
        print(f"verified: {args.user}'s maildrop has every UIDL of {args.source} and no "
              "other, each with the size expected")
        return 0
    stop = StopRequest()
    progress: list[Progress] = []

    def work() -> defer.Deferred[Progress]:
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "shutdown", stop.request)
        d = defer.Deferred.fromCoroutine(
            migrate(source, target, args.user, stop, progress, quiet=args.quiet))

        def ended(result: Any) -> Any:
            stop.finished()  # also when it failed before the copy began
            return result

        return d.addBoth(ended)

    try:
        done = run_reactor(work)
    except Interrupted:
        done = None
    finally:
        if progress:
            progress[0].end()
    copied = progress[0].messages if progress else 0
    if done is None or stop.requested:
        print(f"popframe migrate: interrupted after {copied} messages; run the same "
              "command again to go on", file=sys.stderr)
        return 1
    print(f"migrated {done.messages} messages ({done.imported_octets} octets) for "
          f"{args.user} {rate(done)}; {done.skipped} were already there; "
          "check with --verify")
    return 0


async def _listing(store: Any, user: str) -> list[tuple[str, int]]:
    """(UIDL, size) of ``user``'s maildrop, opened (locked) and abandoned."""
    maildrop = await _opened(store, user, user)
    try:
        return [(info.uid, info.size) for info in maildrop.listing()]
    finally:
        await maildrop.abandon()


async def _opened(store: Any, user: str, name: str) -> Any:
    """``user``'s maildrop in ``store``, opened; ``name`` in any error."""
    from popframe.errors import MaildropInUse, POP3Error

    try:
        return await store.open(user)
    except MaildropInUse:
        raise CLIError(f"{name}: the maildrop is in use (a POP3 session holds it); "
                       "try again") from None
    except POP3Error as error:
        raise CLIError(f"{name}: cannot open the maildrop ({error.message})") from None


async def migrate(source: Any, target: Any, user: str, stop: StopRequest,
                  holder: list[Progress], quiet: bool = False) -> Progress:
    """Copy every message of ``source`` whose UIDL ``target`` lacks."""
    present = {uid for uid, _ in await _listing(target, user)}
    maildrop = await _opened(source, _SOURCE_USER, "the source")
    try:
        listing = list(maildrop.listing())
        _check_uids(target, [info.uid for info in listing if info.uid not in present])
        progress = Progress(sys.stderr if sys.stderr.isatty() and not quiet else None,
                            sum(info.size for info in listing))
        holder.append(progress)

        def loader(uid: str, size: int) -> Callable[[], defer.Deferred[Message]]:
            return lambda: defer.Deferred.fromCoroutine(_message(maildrop, uid, size))

        def pending() -> Iterator[Pending]:
            for info in listing:
                yield Pending(info.uid, info.size, loader(info.uid, info.size))

        def put(message: Message) -> defer.Deferred[None]:
            d: defer.Deferred[None] = defer.maybeDeferred(
                target.add_message, user, io.BytesIO(message.octets), message.key)
            return d.addErrback(_refused, message.key)

        result: Progress = await copy_messages(pending(), present, put, present.add, progress,
                                               stop, user=user, verb="migrated")
        return result
    finally:
        await maildrop.abandon()


def _check_uids(target: Any, uids: list[str]) -> None:
    """Refuse, before copying anything, UIDLs the target cannot keep."""
    refused = []
    for uid in uids:
        try:
            target.check_uid(uid)
        except ValueError as error:
            refused.append(str(error))
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise CLIError(f"the target cannot keep {len(refused)} of the source's UIDLs, so "
                       f"nothing was copied: {refused[0]}{more}")


def _refused(failure: Any, uid: str) -> None:
    if failure.check(ValueError):
        raise CLIError(f"the target cannot keep UIDL {uid!r}: {failure.value}")
    failure.raiseException()


async def _message(maildrop: Any, uid: str, size: int) -> Message:
    """A source message's stored octets."""
    from popframe.interfaces import IMessageBody

    opened = await maildrop.open_message(uid)
    try:
        if IMessageBody.providedBy(opened):
            chunks = []
            while chunk := await opened.read(1 << 16):
                chunks.append(chunk)
            octets = b"".join(chunks)
        else:
            octets = opened.read()
    finally:
        opened.close()
    return Message(uid, octets, size)


async def compare(source: Any, target: Any, user: str) -> list[str]:
    """Each difference between the source's and the target's UIDLs and
    sizes, as a line naming it (none: they agree)."""
    have = dict(await _listing(target, user))
    maildrop = await _opened(source, _SOURCE_USER, "the source")
    try:
        wanted = [(info.uid, info.size) for info in maildrop.listing()]
        # A size taken from a name (Dovecot's ,W=) leaves out the line end
        # a message without a final one is sent with; the target counts
        # it.  So a size that differs is measured again from the octets.
        for i, (uid, size) in enumerate(wanted):
            if uid in have and have[uid] != target.stored_size(uid, size):
                octets = (await _message(maildrop, uid, size)).octets
                wanted[i] = (uid, wire_size(octets))
    finally:
        await maildrop.abandon()
    return differences(wanted, have, target.stored_size)


def differences(wanted: list[tuple[str, int]], have: dict[str, int],
                stored_size: Any) -> list[str]:
    found = []
    known = set()
    for uid, size in wanted:
        known.add(uid)
        if uid not in have:
            found.append(f"missing: UIDL {uid} ({size} octets) is not in the target")
        elif have[uid] != (expected := stored_size(uid, size)):
            also = "" if expected == size else f", {expected} with the UIDL kept"
            found.append(f"size: UIDL {uid} has {have[uid]} octets in the target, "
                         f"{size} in the source{also}")
    for uid, size in have.items():
        if uid not in known:
            found.append(f"extra: UIDL {uid} ({size} octets) is only in the target")
    return found
