"""``popframe deliver``: a local delivery agent for Postfix's
``mailbox_command`` or a ``pipe`` transport, as ``dovecot-lda`` is.

    popframe deliver --store maildir:/var/mail/%u/Maildir --user alice < message

Exit statuses (sysexits.h, which MTAs read): 0 stored durably; 75 a
temporary failure (the MTA keeps the message and tries again); 67 the
user is unknown to the ``--auth`` checkers (or cannot name a maildrop);
65 the input is no message; 69 the store refuses for good; 78 a mistake
in these arguments (the MTA defers, so mail waits while the admin fixes
the command line).  The work is :mod:`popframe.delivery.lda`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from twisted.internet import defer
from twisted.python.failure import Failure

from popframe.cli.errors import CLIError
from popframe.config import ConfigurationError
from popframe.delivery.errors import EX_CONFIG, EX_OK, EX_TEMPFAIL
from popframe.delivery.recipients import USER_FORMATS, RecipientRules

HELP = ("Deliver one message from standard input into a store: a local delivery agent "
        "for Postfix (mailbox_command, pipe); exits 0, 75, 67 or 65 as sysexits.h says.")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True,
                        help="where maildrops live, as twistd pop3 --store takes it, e.g. "
                             "maildir:/var/mail/%%u/Maildir or mbox:/var/mail/%%u")
    parser.add_argument("--user", required=True,
                        help="the recipient: a user name or an address (normalised as "
                             "the LMTP listener does: see --user-format)")
    parser.add_argument("--auth", action="append", default=[], metavar="TYPE:ARGUMENTS",
                        help="a checker, as twistd pop3 --auth takes it (repeatable): a user "
                             "none of them knows exits 67 (EX_NOUSER)")
    parser.add_argument("--return-path", metavar="ADDRESS",
                        help="prepend 'Return-Path: <ADDRESS>' (nothing is added otherwise)")
    parser.add_argument("--user-format", default="%u", choices=USER_FORMATS,
                        help="the user an address names: %%u the whole address (default), "
                             "%%n its local part; %%L lower-cases")
    parser.add_argument("--recipient-delimiter", default="", metavar="CHARACTERS",
                        help="characters that start an address extension (e.g. +): "
                             "alice+news@example.org is alice@example.org")
    parser.error = _usage_error  # type: ignore[method-assign]


def _usage_error(message: str) -> NoReturn:
    # argparse would exit 2, which Postfix bounces: a typo in
    # mailbox_command must defer mail, not return it to its senders.
    print(f"popframe deliver: {message}", file=sys.stderr)
    raise SystemExit(EX_CONFIG)


def run(args: argparse.Namespace) -> int:
    from popframe.delivery.agent import DeliveryAgent
    from popframe.delivery.lda import deliver_input

    agent = DeliveryAgent(_store(args.store), _user_sources(args.auth), _rules(args))
    try:
        status, text = _run_reactor(lambda: defer.Deferred.fromCoroutine(
            deliver_input(sys.stdin.buffer, agent, args.user, args.return_path)))
    except Exception as error:  # a bug: keep the mail, say what broke
        Failure(error).printTraceback(file=sys.stderr)
        return EX_TEMPFAIL
    if status != EX_OK:
        print(f"popframe deliver: {text}", file=sys.stderr)
    return status


def _rules(args: argparse.Namespace) -> RecipientRules:
    return RecipientRules(user_format=args.user_format, delimiter=args.recipient_delimiter)


def _store(description: str) -> Any:
    from popframe.interfaces import IDeliverableStore
    from popframe.stores import store_from_description

    try:
        store = store_from_description(description)
    except ConfigurationError as error:
        raise CLIError(str(error), EX_CONFIG) from None
    if not IDeliverableStore.providedBy(store):
        name = description.partition(":")[0]
        raise CLIError(f"--store: the {name!r} store cannot take deliveries", EX_CONFIG)
    return store


def _user_sources(descriptions: list[str]) -> list[Any]:
    """The checkers of ``--auth`` that can look users up."""
    if not descriptions:
        return []
    from twisted.cred import strcred

    from popframe.interfaces import IUserSettings

    checkers = []
    for description in descriptions:
        try:
            checkers.append(strcred.makeChecker(description))
        except (strcred.InvalidAuthType, strcred.InvalidAuthArgumentString,
                ConfigurationError, ValueError, OSError) as error:
            raise CLIError(f"--auth {description}: {error}", EX_CONFIG) from None
    sources = [c for c in checkers if IUserSettings.providedBy(c)]
    if not sources:
        raise CLIError("--auth: none of these checkers can tell whether a user exists", EX_CONFIG)
    return sources


def _run_reactor(work: Callable[[], defer.Deferred[Any]]) -> Any:
    """Run the reactor until ``work()`` fires; its result, or its error
    raised.  (Stores hand blocking work to the reactor's threads.)"""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Stores log why they defer; the MTA shows what the command printed.
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)
    outcome: list[Any] = []

    def start() -> None:
        d = defer.maybeDeferred(work)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]
