"""The ``key=value`` options after a store's path template
(``maildir:/var/mail/%u:create=no``): one parser, so every store reads its
options the same way and names a bad one the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from popframe.config import ConfigurationError

__all__ = ["DELE_DEFAULT", "DELE_OPTION", "choice", "parse_store_options", "positive_seconds",
           "split_options"]

#: Turns an option's text into its value; raises ``ValueError`` saying
#: what was expected.
OptionParser = Callable[[str], Any]


def parse_store_options(
    store: str, options: Iterable[str], parsers: Mapping[str, OptionParser],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The values of ``options`` (``key=value`` texts) over ``defaults``.

    An unknown key or a bad value is a ``ConfigurationError`` on
    ``--store`` naming the store, the option and what was expected."""
    values = dict(defaults)
    known = ", ".join(sorted(parsers))
    for option in options:
        key, equals, text = option.partition("=")
        parser = parsers.get(key)
        if parser is None or not equals:
            raise ConfigurationError(
                "--store", f"{store}: unknown option {option!r} (known: {known})")
        try:
            values[key] = parser(text)
        except ValueError as error:
            raise ConfigurationError("--store", f"{store}: {key}={text!r}: {error}") from None
    return values


def choice(*allowed: str) -> OptionParser:
    """A parser accepting exactly one of ``allowed``."""
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected {'|'.join(allowed)}")
        return text
    return parse


def positive_seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return seconds


#: ``dele=unlink|hide``, every store's: what QUIT does with DELE'd messages
#: (hide: keep them, no longer listed by POP3; leave-on-server archives).
DELE_OPTION: dict[str, OptionParser] = {"dele": choice("unlink", "hide")}
DELE_DEFAULT: dict[str, Any] = {"dele": "unlink"}


def split_options(argstring: str, known: Iterable[str]) -> tuple[str, list[str]]:
    """``argstring`` without the trailing ``:key=value`` options whose key
    is in ``known``, and those options: for a store whose own argument may
    hold colons (``sql:dsn=postgresql://h:5432/db:dele=hide``)."""
    keys = set(known)
    options: list[str] = []
    while True:
        head, colon, tail = argstring.rpartition(":")
        if not colon or tail.partition("=")[0] not in keys or "=" not in tail:
            return argstring, options[::-1]
        options.append(tail)
        argstring = head
