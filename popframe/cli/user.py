"""``popframe user add|passwd|del|list``: the users of a passwd-file
(``--passwd-file FILE``, what ``--auth passwd-file:FILE`` reads) or of
``--auth sql:dsn=URL`` (``--dsn URL``: popframe's own ``popframe_users``
table).

Each action works on a user table through four calls (``add``,
``set_password``, ``delete``, ``rows``): :class:`PasswdFileUsers` or
:class:`SQLUsers`.  The passwd-file is edited line by line: comments, the
order of lines and every other field stay as they were; it is replaced
atomically with its mode and owner kept, under a lock on its directory so
two admins' edits do not lose one another.  A running server sees a
change at its next login (it re-reads the file when it changes).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from popframe.auth.passwdfile import parse_line
from popframe.auth.schemes import split_field
from popframe.cli.errors import CLIError
from popframe.cli.prompt import hash_schemes, new_password_hash
from popframe.files import write_file_atomically

__all__ = ["PasswdFileUsers", "SQLUsers", "UserTable", "add_table_options", "add_user",
           "delete_user", "list_users", "set_password", "table"]

HELP = ("Add, change, delete and list users: of a passwd-file (--passwd-file FILE) or of "
        "--auth sql:dsn=URL (--dsn URL).")


class UserTable(Protocol):
    """Where users are kept."""

    def add(self, name: str, stored: str, login_delay: int | None,
            maildrop: str | None = None) -> None:
        """Add ``name`` with the password field ``stored``; CLIError if it exists."""

    def set_password(self, name: str, stored: str) -> bool:
        """False when there is no ``name``."""

    def delete(self, name: str) -> bool:
        """False when there is no ``name``."""

    def rows(self, name: str | None = None) -> list[str]:
        """One line per user (``name`` alone, if given): the name, then
        ``key=value`` details."""


def add_table_options(parser: argparse.ArgumentParser) -> None:
    """Which user table an action works on (one is required)."""
    from popframe.cli.db import add_dsn

    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--passwd-file", metavar="FILE",
                       help="a Dovecot-style passwd-file, as --auth passwd-file:FILE reads it "
                            "(created by add when missing)")
    add_dsn(where, required=False)


def table(args: argparse.Namespace) -> UserTable:
    if args.passwd_file is not None:
        if getattr(args, "maildrop", None) is not None:
            raise CLIError("--maildrop: a passwd-file has no maildrop field (--dsn tables do)")
        return PasswdFileUsers(args.passwd_file)
    return SQLUsers(args)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    texts = {
        "add": "add a user; the password is read without echo, or from standard input "
               "when it is not a terminal",
        "passwd": "set a user's password (read as add reads it)",
        "del": "delete a user (their mail stays)",
        "list": "list the users, one per line",
    }
    subs = {name: actions.add_parser(name, help=text, description=text)
            for name, text in texts.items()}
    for sub in subs.values():
        add_table_options(sub)
    for name in ("add", "passwd", "del"):
        subs[name].add_argument("name", metavar="NAME", help="the user name, as users log in")
    subs["list"].add_argument("name", metavar="NAME", nargs="?",
                              help="list only this user (exit status 1 if there is none)")
    for name in ("add", "passwd"):
        subs[name].add_argument(
            "-s", "--scheme", default="SHA512-CRYPT",
            help=f"password scheme (default SHA512-CRYPT; one of {', '.join(hash_schemes())}; "
                 "SCRAM-SHA-256 also serves SASL SCRAM)")
    subs["add"].add_argument("--login-delay", type=int, metavar="SECONDS",
                             help="the user's own RFC 2449 LOGIN-DELAY")
    subs["add"].add_argument("--maildrop", help="the user's maildrop, if not their name (--dsn)")


def run(args: argparse.Namespace) -> int:
    users = table(args)
    if args.action == "list":
        rows = users.rows(args.name)
        for row in rows:
            print(row)
        return 0 if rows or args.name is None else 1
    check_name(args.name)
    if args.action == "del":
        if not users.delete(args.name):
            raise CLIError(f"no user {args.name!r}")
        return 0
    if args.action == "add":
        if args.login_delay is not None and args.login_delay < 0:
            raise CLIError("--login-delay must not be negative")
        if users.rows(args.name):
            raise CLIError(f"user {args.name!r} exists (popframe user passwd changes the "
                           "password)")
        users.add(args.name, new_password_hash(args.scheme), args.login_delay, args.maildrop)
        return 0
    if not users.rows(args.name):
        raise CLIError(f"no user {args.name!r}")
    if not users.set_password(args.name, new_password_hash(args.scheme)):
        raise CLIError(f"no user {args.name!r}")
    return 0


def check_name(name: str) -> None:
    """A name a passwd-file line and a POP3 USER command can both carry."""
    if not name or any(c in name for c in ":\n\r\0") or any(c.isspace() for c in name):
        raise CLIError(f"{name!r} is not a user name: no spaces, colons or control characters")
    if name.startswith("#"):
        raise CLIError(f"{name!r} is not a user name: a line starting with # is a comment")


# -- the passwd-file -----------------------------------------------------------------


class PasswdFileUsers:
    """The users of the passwd-file at ``path`` (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def _lines(self, must_exist: bool = True) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                return f.read().splitlines(keepends=True)
        except FileNotFoundError:
            if must_exist:
                raise CLIError(f"{self.path}: no such file") from None
            return []
        except (OSError, UnicodeDecodeError) as error:
            raise CLIError(f"{self.path}: {getattr(error, 'strerror', None) or error}") from None

    @staticmethod
    def _user_of(line: str) -> str | None:
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            return None
        return line.split(":", 1)[0]

    def _find(self, lines: list[str], name: str) -> int | None:
        for index, line in enumerate(lines):
            if self._user_of(line) == name:
                return index  # the first line wins, as the server reads it
        return None

    @contextmanager
    def _editing(self, must_exist: bool = True) -> Iterator[list[str]]:
        """The file's lines, to change in place; written back atomically
        (mode and owner kept) when the block ends without an error."""
        directory = os.path.dirname(self.path)
        try:
            lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            raise CLIError(f"{directory}: {error.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lines = self._lines(must_exist)
            before = list(lines)
            yield lines
            if lines != before:
                self._write(lines)
        finally:
            os.close(lock)

    def _write(self, lines: list[str]) -> None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        try:
            old = os.stat(self.path)
        except FileNotFoundError:
            old = None
        mode = stat.S_IMODE(old.st_mode) if old is not None else 0o600
        try:
            write_file_atomically(self.path, "".join(lines).encode("utf-8"), mode)
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                os.chown(self.path, old.st_uid, old.st_gid)
        except OSError as error:
            raise CLIError(f"{self.path}: {error.strerror}") from None

    def add(self, name: str, stored: str, login_delay: int | None = None,
            maildrop: str | None = None) -> None:
        with self._editing(must_exist=False) as lines:
            if self._find(lines, name) is not None:
                raise CLIError(f"user {name!r} exists")
            extra = f"login_delay={login_delay}" if login_delay is not None else ""
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(f"{name}:{stored}::::::{extra}\n")

    def set_password(self, name: str, stored: str) -> bool:
        with self._editing() as lines:
            index = self._find(lines, name)
            if index is None:
                return False
            line = lines[index]
            body = line.rstrip("\r\n")
            fields = body.split(":", 7)
            fields[1] = stored
            lines[index] = ":".join(fields) + line[len(body):]
            return True

    def delete(self, name: str) -> bool:
        with self._editing() as lines:
            index = self._find(lines, name)
            if index is None:
                return False
            del lines[index]
            return True

    def rows(self, name: str | None = None) -> list[str]:
        rows = []
        seen = set()
        for line in self._lines(must_exist=name is None):
            user = self._user_of(line)
            if user is None or user in seen or (name is not None and user != name):
                continue
            seen.add(user)
            try:
                record = parse_line(line.rstrip("\r\n"))
            except ValueError:
                rows.append(f"{user} unreadable")
                continue
            scheme = split_field(record.password)[0] if record.password.startswith("{") else None
            details = [f"scheme={scheme}" if scheme else "scheme=none (no {SCHEME} prefix)"]
            details += [f"{key}={value}" if value else key
                        for key, value in sorted(record.extra.items())]
            rows.append(" ".join([user, *details]))
        return rows


# -- popframe's SQL table (--dsn) ----------------------------------------------------


class SQLUsers:
    """The ``popframe_users`` table of the database ``args.dsn`` names, at
    this popframe's schema version (``popframe db upgrade`` makes it)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from popframe.cli.db import call, database
        from popframe.db.schema import LATEST, current_version

        self._call = call
        self.db = database(args)
        version = call(self.db, current_version)
        if version != LATEST:
            raise CLIError(f"{self.db.url}: the schema is at version {version or 0}, this "
                           f"popframe's is {LATEST}: run popframe db upgrade --dsn URL first")

    def add(self, name: str, stored: str, login_delay: int | None = None,
            maildrop: str | None = None) -> None:
        self._call(self.db, add_user, name, stored, maildrop, login_delay)

    def set_password(self, name: str, stored: str) -> bool:
        return bool(self._call(self.db, set_password, name, stored))

    def delete(self, name: str) -> bool:
        return bool(self._call(self.db, delete_user, name))

    def rows(self, name: str | None = None) -> list[str]:
        rows = []
        for user, maildrop, delay, enabled in self._call(self.db, list_users, name):
            extra = [f"maildrop={maildrop}"] if maildrop else []
            extra += [f"login_delay={delay}"] if delay is not None else []
            extra += [] if enabled else ["disabled"]
            rows.append(" ".join([user, *extra]))
        return rows


# -- the blocking work (also what tests and other tools call) ----------------------------


def add_user(session: Any, name: str, stored: str, maildrop: str | None = None,
             login_delay: int | None = None) -> None:
    session.execute("INSERT INTO popframe_users (name, password, maildrop, login_delay) "
                    "VALUES (?, ?, ?, ?)", (name, stored, maildrop, login_delay))


def set_password(session: Any, name: str, stored: str) -> bool:
    return bool(session.execute("UPDATE popframe_users SET password = ? WHERE name = ?",
                                (stored, name)) > 0)


def delete_user(session: Any, name: str) -> bool:
    return bool(session.execute("DELETE FROM popframe_users WHERE name = ?", (name,)) > 0)


def list_users(session: Any, name: str | None = None) -> list[tuple[Any, ...]]:
    columns = "SELECT name, maildrop, login_delay, enabled FROM popframe_users"
    if name is not None:
        return list(session.query(columns + " WHERE name = ?", (name,)))
    return list(session.query(columns + " ORDER BY name"))
