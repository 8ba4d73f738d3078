"""Reading a password as an admin types it, or from a pipe, and hashing it."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from popframe.cli.errors import CLIError

__all__ = ["hash_schemes", "new_password_hash", "read_password"]


def read_password(prompt: str = "Password: ", confirm: bool = True,
                  stdin: TextIO | None = None) -> bytes:
    """A new password: typed twice without echo on a terminal, or the
    first line of standard input when it is not one (scripts).  Empty or
    mismatched input is a :class:`CLIError`."""
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        password = getpass.getpass(prompt)
        if confirm and getpass.getpass("Again: ") != password:
            raise CLIError("the passwords do not match")
    else:
        line = stream.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise CLIError("empty password")
    return password.encode("utf-8")


def hash_schemes() -> list[str]:
    """The schemes popframe can make new hashes in."""
    from popframe.auth.schemes import SCHEMES

    return sorted(name for name, scheme in SCHEMES.items() if scheme.make is not None)


def new_password_hash(scheme: str, rounds: int | None = None,
                      stdin: TextIO | None = None) -> str:
    """Read a new password (:func:`read_password`) and return its
    ``{SCHEME}hash`` field; a scheme popframe cannot hash in, or a bad
    cost, is a :class:`CLIError` naming the choices."""
    from popframe.auth.schemes import UnknownScheme, find_scheme, make_hash

    try:
        find_scheme(scheme)
    except UnknownScheme as error:
        raise CLIError(f"{error}; choose one of {', '.join(hash_schemes())}") from None
    password = read_password(stdin=stdin)
    try:
        return make_hash(scheme, password, rounds=rounds)
    except ValueError as error:
        raise CLIError(f"--scheme {scheme}: {error}") from None
