"""A ``--config`` file: TOML whose keys are the ``pop3`` options.

The file becomes the command-line arguments it stands for
(``idle-timeout = 300`` is ``--idle-timeout=300``; ``listen = ["tcp:110",
"ssl:995:..."]`` is two ``--listen``), put before the real command line,
so the options class checks both the same way and every process that
parses the arguments (each ``--workers`` process, a SIGHUP reload) reads
the file again.  A key the command line gives is left out of the file's
arguments: the command line overrides it, repeatable keys included.

A value that names a plugin (``store``, ``auth``) may also be a table:
``{ type = "ldap", file = "/etc/popframe/ldap.toml" }`` is
``ldap:/etc/popframe/ldap.toml``, and a table with the plugin's own keys
(``{ type = "sql", dsn = "postgresql://..." }``) is an *inline* settings
table: the plugin gets a reference, ``FILE#auth[1]``, that
:func:`read_toml` (which plugins call instead of opening the file
themselves) answers with the table.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from popframe.config import ConfigurationError
from popframe.config.keys import Key, Kind
from popframe.config.snapshot import read_file

__all__ = ["INLINE", "MISSING", "Problem", "arguments", "read_config", "read_toml", "show"]

#: Inline settings tables by their reference (``FILE#KEY[N]``), for read_toml.
INLINE: dict[str, dict[str, Any]] = {}

#: The keys of a plugin table that are not the plugin's own settings.
_REFERENCE_KEYS = ("file", "argument")


@dataclass(frozen=True)
class Problem:
    """One mistake in a file: the key, the value found and what was wrong."""

    key: str
    value: Any
    problem: str

    def __str__(self) -> str:
        if self.value is MISSING:
            return f"{self.key}: {self.problem}"
        return f"{self.key} = {show(self.value)}: {self.problem}"


#: A Problem about a key that has no value (missing, or the file itself).
MISSING: Any = object()


def show(value: Any) -> str:
    """A value as TOML would write it (near enough for a message)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + " }"
    return str(value)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML table in ``path``; a ``ConfigurationError`` naming the file
    when it cannot be read or is not TOML."""
    path = os.fspath(path)
    try:
        return tomllib.loads(read_file(path).decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigurationError(path, f"not UTF-8 text: {error}") from None
    except OSError as error:
        raise ConfigurationError(path, f"cannot read the configuration file: "
                                 f"{error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(path, f"not valid TOML: {error}") from None


def read_toml(path: str) -> dict[str, Any]:
    """A plugin's settings file, or the inline table a ``--config`` file
    gave for it (``path`` is then ``FILE#KEY[N]``): what a plugin that
    takes ``NAME:FILE.toml`` calls to read it."""
    if path in INLINE:
        return dict(INLINE[path])
    return read_config(path)


def arguments(table: Mapping[str, Any], keys: Mapping[str, Key], source: str,
              skip: frozenset[str] = frozenset()) -> tuple[list[str], list[Problem]]:
    """The command-line arguments ``table`` stands for (leaving out the keys
    in ``skip``), and the problems of the keys that could not be turned
    into arguments (unknown, or of the wrong type)."""
    args: list[str] = []
    problems: list[Problem] = []
    for name, value in table.items():
        key = keys.get(name) or keys.get(name.replace("_", "-"))
        if key is None:
            problems.append(Problem(name, value, _unknown(name, keys)))
            continue
        if key.name in skip:
            continue
        try:
            args += _arguments(key, value, source)
        except _Wrong as wrong:
            problems.append(Problem(name, value, str(wrong)))
    return args, problems


class _Wrong(Exception):
    """A value does not fit its key; the message says what was expected."""


def _unknown(name: str, keys: Mapping[str, Key]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(keys), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (twistd pop3 --help lists the options)"
    return f"unknown key{hint}"


def _arguments(key: Key, value: Any, source: str) -> list[str]:
    option = f"--{key.name}"
    if key.kind is Kind.FLAG:
        if not isinstance(value, bool):
            raise _Wrong(f"expected {key.expected}")
        return [option] if value else []
    if key.kind is Kind.REPEATABLE:
        items = value if isinstance(value, list) else [value]
        return [f"{option}={_text(key, item, source, index)}"
                for index, item in enumerate(items, start=1)]
    if isinstance(value, bool) or not isinstance(value, key.toml_type):
        raise _Wrong(f"expected {key.expected}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Wrong(f"expected {key.expected}, not {value}")
    return [f"{option}={_text(key, value, source)}"]


def _text(key: Key, value: Any, source: str, index: int | None = None) -> str:
    if isinstance(value, dict):
        return _plugin_reference(key, value, source, index)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Wrong(f"expected {key.expected}")
    return str(value)


def _plugin_reference(key: Key, table: dict[str, Any], source: str, index: int | None) -> str:
    """``{ type = NAME, file = PATH }`` → ``NAME:PATH``; a table of the
    plugin's own settings → ``NAME:`` and a reference to it."""
    kind = table.get("type")
    if not isinstance(kind, str) or not kind:
        raise _Wrong('a table here needs type = "NAME" (the plugin), with file = "PATH" '
                     "or the plugin's own settings")
    settings = {k: v for k, v in table.items() if k != "type"}
    given = [k for k in _REFERENCE_KEYS if k in settings]
    if given:
        if len(settings) != 1 or not isinstance(settings[given[0]], str):
            raise _Wrong(f'{given[0]} = "..." stands alone beside type: put the plugin\'s '
                         "settings in that file, or here without it")
        return f"{kind}:{settings[given[0]]}"
    reference = f"{source}#{key.name}" + (f"[{index}]" if index is not None else "")
    INLINE[reference] = settings
    return f"{kind}:{reference}"
