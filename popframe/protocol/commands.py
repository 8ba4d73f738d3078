"""Command lines to typed, validated command events (RFC 1939, 2449, 2595).

One small immutable class per command.  ``parse_command`` raises a
:class:`popframe.errors.ClientError` subtype for anything malformed, so the
session never sees a half-valid command.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from popframe.errors import BadArguments, NoSuchMessage, UnknownCommand

__all__ = [
    "Apop",
    "Auth",
    "Capa",
    "Command",
    "Dele",
    "Lang",
    "List",
    "Noop",
    "Parser",
    "Pass",
    "Quit",
    "Retr",
    "Rset",
    "Stat",
    "Stls",
    "Top",
    "Uidl",
    "User",
    "Utf8",
    "Xclient",
    "decode_base64",
    "parse_command",
]

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


@dataclass(frozen=True, slots=True, repr=False)
class Auth(Command):
    """AUTH alone lists mechanisms; ``initial_response`` is decoded (``=``
    is the empty response, RFC 5034 section 4)."""

    keyword = b"AUTH"
    mechanism: str | None = None
    initial_response: bytes | None = None

    def __repr__(self) -> str:
        hidden = None if self.initial_response is None else "<hidden>"
        return f"Auth(mechanism={self.mechanism!r}, initial_response={hidden})"


@dataclass(frozen=True, slots=True)
class Apop(Command):
    keyword = b"APOP"
    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class Utf8(Command):
    keyword = b"UTF8"


@dataclass(frozen=True, slots=True)
class Lang(Command):
    """RFC 6856: ``LANG`` lists the languages, ``LANG range`` picks one."""

    keyword = b"LANG"
    language_range: str | None = None


def decode_base64(data: bytes) -> bytes:
    """Strict base64 (RFC 4648): anything else is the client's error."""
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadArguments("invalid base64") from None


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


#: Parses what follows a command's keyword.
@dataclass(frozen=True, slots=True)
class Xclient(Command):
    """Dovecot's ``XCLIENT ADDR=... PORT=...``: a proxy on a trusted
    network names the client it speaks for.  Other attributes (SESSION,
    TTL, FORWARD, ...) are accepted and ignored."""

    keyword = b"XCLIENT"
    address: str | None = None
    port: int | None = None


Parser = Callable[[bytes], Command]


def _no_arguments(cls: type[Command]) -> Parser:
    def parse(argument: bytes) -> Command:
        _words(argument, 0, 0)
        return cls()

    return parse


def _optional_number(cls: type[List] | type[Uidl]) -> Parser:
    def parse(argument: bytes) -> Command:
        words = _words(argument, 0, 1)
        return cls(_number(words[0])) if words else cls()

    return parse


def _one_number(cls: type[Retr] | type[Dele]) -> Parser:
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


def _parse_auth(argument: bytes) -> Auth:
    words = _words(argument, 0, 2)
    if not words:
        return Auth()
    mechanism = words[0].upper()
    if not mechanism.isascii():
        raise BadArguments("invalid mechanism name")
    initial = decode_base64(words[1]) if len(words) == 2 else None
    return Auth(mechanism.decode("ascii"), initial)


def _parse_apop(argument: bytes) -> Apop:
    name, digest = _words(argument, 2, 2)
    digest = digest.lower()
    if len(digest) != 32 or not all(c in b"0123456789abcdef" for c in digest):
        raise BadArguments("APOP digest must be 32 hex digits")
    return Apop(_parse_user(name).name, digest.decode("ascii"))


def _parse_lang(argument: bytes) -> Lang:
    words = argument.split()
    if len(words) > 1 or not argument.isascii():
        raise BadArguments("LANG takes one language range")
    return Lang(words[0].decode("ascii") if words else None)


def _parse_xclient(argument: bytes) -> Xclient:
    words = argument.split()
    if not words:
        raise BadArguments("XCLIENT takes NAME=VALUE attributes")
    address: str | None = None
    port: int | None = None
    for word in words:
        name, equals, value = word.partition(b"=")
        if not equals:
            raise BadArguments("XCLIENT takes NAME=VALUE attributes")
        name = name.upper()
        if name == b"ADDR":
            text = value.decode("ascii", "replace")
            if text[:5].upper() == "IPV6:":
                text = text[5:]
            try:
                address = str(ipaddress.ip_address(text.strip("[]")))
            except ValueError:
                raise BadArguments("XCLIENT ADDR is not an IP address") from None
        elif name == b"PORT":
            if not value.isdigit() or len(value) > 5 or not 0 < int(value) < 65536:
                raise BadArguments("XCLIENT PORT is not a port number")
            port = int(value)
    return Xclient(address, port)


_PARSERS: dict[bytes, Parser] = {
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
    b"AUTH": _parse_auth,
    b"APOP": _parse_apop,
    b"UTF8": _no_arguments(Utf8),
    b"LANG": _parse_lang,
    b"XCLIENT": _parse_xclient,
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
