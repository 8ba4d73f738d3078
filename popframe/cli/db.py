"""``popframe db``: create or migrate popframe's tables in a database."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from popframe.cli.errors import CLIError
from popframe.db import Database, DatabaseError, open_database
from popframe.db.schema import LATEST, SchemaTooNew, current_version, upgrade

T = TypeVar("T")

NAME = "db"
HELP = "Create or upgrade popframe's tables in a database (PostgreSQL, MariaDB, SQLite)."


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("upgrade", "create the tables, or migrate them to this popframe's "
                                     "schema; safe to run again"),
                         ("status", "print the schema version of the database and of popframe")):
        sub = actions.add_parser(action, help=text, description=text)
        add_dsn(sub)


def add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", required=True, metavar="URL",
                        help="postgresql://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB or "
                             "sqlite:////absolute/path.db (password: in the URL, "
                             "?password_file=PATH, PGPASSWORD or MYSQL_PWD)")


def database(args: argparse.Namespace) -> Database:
    return open_database(args.dsn, "--dsn", "dsn", own_schema=False)


def call(db: Database, function: Callable[..., T], *arguments: Any) -> T:
    """``db.call`` with a database failure as one line, not a traceback."""
    try:
        return db.call(function, *arguments)
    except DatabaseError as error:
        cause = error.__cause__
        text = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() \
            else "database error"
        raise CLIError(f"{db.url}: {text}", status=2) from None
    finally:
        db.close()


def run(args: argparse.Namespace) -> int:
    db = database(args)
    if args.action == "status":
        found = call(db, current_version)
        state = "no popframe tables" if found is None else f"version {found}"
        print(f"{db.url}: {state}; this popframe's schema: version {LATEST}")
        return 0 if found == LATEST else 1
    try:
        done = call(db, upgrade)
    except SchemaTooNew as error:
        raise CLIError(str(error)) from None
    if done.before == done.after:
        print(f"{db.url}: already at schema version {done.after}")
    else:
        print(f"{db.url}: schema upgraded from version {done.before} to {done.after}")
    return 0
