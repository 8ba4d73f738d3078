"""Reading a password as an admin types it, or from a pipe."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from popframe.cli.errors import CLIError

__all__ = ["read_password"]


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
