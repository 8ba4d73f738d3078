"""Command line parsing (RFC 1939, RFC 2449)."""

from __future__ import annotations

import pytest

from popframe.errors import BadArguments, NoSuchMessage, UnknownCommand
from popframe.protocol import commands as c
from popframe.protocol.commands import parse_command

pytestmark = pytest.mark.core


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"USER alice", c.User("alice")),
        (b"user alice", c.User("alice")),
        (b"PASS with spaces inside ", c.Pass(b"with spaces inside ")),
        (b"STAT", c.Stat()),
        (b"LIST", c.List()),
        (b"LIST 3", c.List(3)),
        (b"lIsT 3", c.List(3)),
        (b"RETR 1", c.Retr(1)),
        (b"DELE 2", c.Dele(2)),
        (b"TOP 1 0", c.Top(1, 0)),
        (b"UIDL", c.Uidl()),
        (b"UIDL 7", c.Uidl(7)),
        (b"NOOP", c.Noop()),
        (b"RSET", c.Rset()),
        (b"QUIT", c.Quit()),
        (b"CAPA", c.Capa()),
        (b"STLS", c.Stls()),
        (b"USER j\xc3\xbcrgen", c.User("j\u00fcrgen")),
    ],
)
def test_valid_lines(line: bytes, command: c.Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"FROB", UnknownCommand),
        (b"", UnknownCommand),
        (b"RETR", BadArguments),
        (b"RETR x", BadArguments),
        (b"RETR -1", BadArguments),
        (b"RETR +1", BadArguments),
        (b"RETR 1 2", BadArguments),
        (b"TOP 1", BadArguments),
        (b"TOP 1 -1", BadArguments),
        (b"STAT now", BadArguments),
        (b"USER", BadArguments),
        (b"USER a b", BadArguments),
        (b"USER \xff", BadArguments),
        (b"PASS", BadArguments),
        (b"RETR 1\x002", BadArguments),
        (b"RETR 99999999999999999999", NoSuchMessage),
    ],
)
def test_invalid_lines(line: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_command(line)


def test_password_is_hidden_from_repr() -> None:
    assert "secret" not in repr(c.Pass(b"secret"))
