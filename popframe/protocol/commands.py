"""Command lines to typed, validated command events (RFC 1939, 2449, 2595).

One small immutable class per command.  ``parse_command`` raises a
:class:`popframe.errors.ClientError` subtype for anything malformed, so the
session never sees a half-valid command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from popframe.errors import BadArguments, NoSuchMessage, UnknownCommand

# Message numbers above this are answered "no such message" without int()
# on an unbounded string.
_MAX_NUMBER_DIGITS = 10


@dataclass(frozen=True, slots=True)
class Command:
    keyword: ClassVar[bytes] = b""


@dataclass(frozen=True, slots=True)
class User(Command):
    keyword = b"USER"
    name: str


@dataclass(frozen=True, slots=True, repr=False)
class Pass(Command):
    keyword = b"PASS"
    password: bytes

    def __repr__(self) -> str:  # never log a secret by accident
        return "Pass(password=<hidden>)"


@dataclass(frozen=True, slots=True)
class Quit(Command):
    keyword = b"QUIT"


@dataclass(frozen=True, slots=True)
class Stat(Command):
    keyword = b"STAT"


@dataclass(frozen=True, slots=True)
class List(Command):
    keyword = b"LIST"
    number: int | None = None


@dataclass(frozen=True, slots=True)
class Retr(Command):
    keyword = b"RETR"
    number: int


@dataclass(frozen=True, slots=True)
class Dele(Command):
    keyword = b"DELE"
    number: int


@dataclass(frozen=True, slots=True)
class Noop(Command):
    keyword = b"NOOP"


@dataclass(frozen=True, slots=True)
class Rset(Command):
    keyword = b"RSET"


@dataclass(frozen=True, slots=True)
class Top(Command):
    keyword = b"TOP"
    number: int
    lines: int


@dataclass(frozen=True, slots=True)
class Uidl(Command):
    keyword = b"UIDL"
    number: int | None = None


@dataclass(frozen=True, slots=True)
class Capa(Command):
    keyword = b"CAPA"


@dataclass(frozen=True, slots=True)
class Stls(Command):
    keyword = b"STLS"


def _number(word: bytes) -> int:
    """A message number or line count: ASCII digits only."""
    if not word.isdigit():
        raise BadArguments("invalid number")
    if len(word) > _MAX_NUMBER_DIGITS:
        raise NoSuchMessage()
    return int(word)


def _words(argument: bytes, minimum: int, maximum: int) -> list[bytes]:
    words = argument.split()
    if not minimum <= len(words) <= maximum:
        raise BadArguments("wrong number of arguments")
    return words


def _no_arguments(cls: type[Command]):
    def parse(argument: bytes) -> Command:
        _words(argument, 0, 0)
        return cls()

    return parse


def _optional_number(cls: type[List] | type[Uidl]):
    def parse(argument: bytes) -> Command:
        words = _words(argument, 0, 1)
        return cls(_number(words[0])) if words else cls()

    return parse


def _one_number(cls: type[Retr] | type[Dele]):
    def parse(argument: bytes) -> Command:
        return cls(_number(_words(argument, 1, 1)[0]))

    return parse


def _parse_user(argument: bytes) -> User:
    name = argument.strip(b" ")
    if not name or b" " in name:
        raise BadArguments("USER takes one user name")
    try:
        return User(name.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadArguments("user name is not valid UTF-8") from None


def _parse_pass(argument: bytes) -> Pass:
    # RFC 1939 section 7: the password is the rest of the line, spaces
    # included.
    if not argument:
        raise BadArguments("PASS takes a password")
    return Pass(argument)


def _parse_top(argument: bytes) -> Top:
    number, lines = _words(argument, 2, 2)
    return Top(_number(number), _number(lines))


_PARSERS = {
    b"USER": _parse_user,
    b"PASS": _parse_pass,
    b"QUIT": _no_arguments(Quit),
    b"STAT": _no_arguments(Stat),
    b"LIST": _optional_number(List),
    b"RETR": _one_number(Retr),
    b"DELE": _one_number(Dele),
    b"NOOP": _no_arguments(Noop),
    b"RSET": _no_arguments(Rset),
    b"TOP": _parse_top,
    b"UIDL": _optional_number(Uidl),
    b"CAPA": _no_arguments(Capa),
    b"STLS": _no_arguments(Stls),
}


def parse_command(line: bytes) -> Command:
    """Parse one command line, without its line end."""
    if b"\0" in line:
        raise BadArguments("NUL in command line")
    keyword, _, argument = line.partition(b" ")
    parser = _PARSERS.get(keyword.upper())
    if parser is None:
        raise UnknownCommand()
    return parser(argument)
