"""``popframe user``: the users of ``--auth sql:dsn=URL`` (popframe's own
``popframe_users`` table)."""

from __future__ import annotations

import argparse
from typing import Any

from popframe.auth.schemes import UnknownScheme, make_hash
from popframe.cli.db import add_dsn, call, database
from popframe.cli.errors import CLIError
from popframe.cli.prompt import read_password
from popframe.db import Session
from popframe.db.schema import LATEST, current_version

NAME = "user"
HELP = "Add, change, delete and list the users of --auth sql:dsn=URL."


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user (the password is read without echo, or "
                             "from standard input when it is not a terminal)")
    passwd = actions.add_parser("passwd", help="set a user's password")
    delete = actions.add_parser("del", help="delete a user (their mail stays)")
    listing = actions.add_parser("list", help="list users, one per line")
    for sub in (add, passwd, delete, listing):
        add_dsn(sub)
    for sub in (add, passwd, delete):
        sub.add_argument("name", metavar="NAME")
    listing.add_argument("name", metavar="NAME", nargs="?",
                         help="list only this user (exit 1 if there is none)")
    for sub in (add, passwd):
        sub.add_argument("-s", "--scheme", default="SHA512-CRYPT",
                         help="password scheme (default SHA512-CRYPT; e.g. BLF-CRYPT, "
                              "ARGON2ID, SCRAM-SHA-256, which also serves SASL SCRAM)")
    add.add_argument("--maildrop", help="the user's maildrop, if not their name")
    add.add_argument("--login-delay", type=int, metavar="SECONDS",
                     help="the user's own RFC 2449 LOGIN-DELAY")


def run(args: argparse.Namespace) -> int:
    db = database(args)
    version = call(db, current_version)
    if version != LATEST:
        raise CLIError(f"{db.url}: the schema is at version {version or 0}, this popframe's is "
                       f"{LATEST}: run popframe db upgrade --dsn URL first")
    if args.action == "list":
        rows = call(db, list_users, args.name)
        for name, maildrop, delay, enabled in rows:
            extra = [f"maildrop={maildrop}"] if maildrop else []
            extra += [f"login_delay={delay}"] if delay is not None else []
            extra += [] if enabled else ["disabled"]
            print(" ".join([name, *extra]))
        return 0 if rows or args.name is None else 1
    if args.action == "del":
        if not call(db, delete_user, args.name):
            raise CLIError(f"no user {args.name!r}")
        return 0
    if args.action == "add" and call(db, list_users, args.name):
        raise CLIError(f"user {args.name!r} exists (popframe user passwd changes the password)")
    password = read_password()
    try:
        stored = make_hash(args.scheme, password)
    except UnknownScheme as error:
        raise CLIError(str(error)) from None
    except ValueError as error:
        raise CLIError(f"--scheme {args.scheme}: {error}") from None
    if args.action == "add":
        call(db, add_user, args.name, stored, args.maildrop, args.login_delay)
    elif not call(db, set_password, args.name, stored):
        raise CLIError(f"no user {args.name!r}")
    return 0


# -- the blocking work (also what tests and other tools call) ----------------------------


def add_user(session: Session, name: str, stored: str, maildrop: str | None = None,
             login_delay: int | None = None) -> None:
    session.execute("INSERT INTO popframe_users (name, password, maildrop, login_delay) "
                    "VALUES (?, ?, ?, ?)", (name, stored, maildrop, login_delay))


def set_password(session: Session, name: str, stored: str) -> bool:
    return session.execute("UPDATE popframe_users SET password = ? WHERE name = ?",
                           (stored, name)) > 0


def delete_user(session: Session, name: str) -> bool:
    return session.execute("DELETE FROM popframe_users WHERE name = ?", (name,)) > 0


def list_users(session: Session, name: str | None = None) -> list[tuple[Any, ...]]:
    columns = "SELECT name, maildrop, login_delay, enabled FROM popframe_users"
    if name is not None:
        return session.query(columns + " WHERE name = ?", (name,))
    return session.query(columns + " ORDER BY name")
