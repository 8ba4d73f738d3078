"""``popframe expire --store STORE [--days N] [--auth TYPE:ARGS] [USER...|--all]``:
remove mail retrieved more than N days ago (RFC 2449 EXPIRE), for cron.

A message is dated when a POP3 session that retrieved it (RETR) ends with
QUIT, on a server run with ``--expire`` or a per-user EXPIRE; this
removes those older than the user's days, through the store's own commit
(all or none; with ``dele=hide`` they are hidden).  A maildrop a session
holds is skipped and counted; the next run takes it.
"""

from __future__ import annotations

import argparse
import sys
import time

from popframe.cli.errors import CLIError

__all__ = ["configure", "run"]

HELP = "Remove mail retrieved more than N days ago (RFC 2449 EXPIRE), e.g. from cron."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True,
                        help="where maildrops live, as twistd pop3 --store takes it, e.g. "
                             "maildir:/var/mail/%%u/Maildir")
    parser.add_argument("--days", type=int, default=None,
                        help="days after retrieval (the server's --expire); a user's own "
                             "value from --auth wins")
    parser.add_argument("--auth", action="append", default=[], metavar="TYPE:ARGS",
                        help="a checker that knows users' own EXPIRE (passwd-file:PATH, "
                             "sql:dsn=URL, ...), repeatable")
    parser.add_argument("--all", action="store_true",
                        help="every user the store holds a maildrop for")
    parser.add_argument("users", nargs="*", metavar="USER", help="the users, as they log in")


def run(args: argparse.Namespace) -> int:
    from twisted.cred import strcred
    from twisted.internet import defer

    from popframe.cli._reactor import run_reactor
    from popframe.interfaces import IListableStore, IUserSettings
    from popframe.stores import store_from_description
    from popframe.stores.expiry import expire_maildrops

    if bool(args.users) == bool(args.all):
        raise CLIError("name the users, or give --all (not both)")
    if args.days is not None and args.days < 0:
        raise CLIError("--days must not be negative")
    if args.days is None and not args.auth:
        raise CLIError("give --days N (the server's --expire), or --auth for users' own values")
    store = store_from_description(args.store)  # a ConfigurationError is one line
    if args.all and not IListableStore.providedBy(store):
        raise CLIError(f"{args.store}: this store cannot list its users; name them")
    sources = []
    for description in args.auth:
        try:
            checker = strcred.makeChecker(description)
        except (strcred.InvalidAuthType, strcred.InvalidAuthArgumentString) as error:
            raise CLIError(f"--auth {description}: {error}") from None
        if IUserSettings.providedBy(checker):
            sources.append(checker)
    try:
        report = run_reactor(lambda: defer.Deferred.fromCoroutine(expire_maildrops(
            store, args.users or None, args.days, time.time(), sources)))
    except TypeError as error:  # a store that cannot list its users after all
        raise CLIError(f"{args.store}: {error}") from None
    for user, count in sorted(report.removed.items()):
        if count:
            print(f"{user}: {count} messages removed")
    print(f"removed {report.total} messages of {len(report.removed)} users"
          + (f"; {len(report.in_use)} in use (skipped: {' '.join(report.in_use)})"
             if report.in_use else "")
          + (f"; {len(report.never)} without EXPIRE" if report.never else ""))
    if report.failed:
        print(f"failed: {' '.join(report.failed)} (see the log above)", file=sys.stderr)
        return 1
    return 0
