"""The keys a ``--config`` file may hold, read off the options class.

A key is an option's long name (``idle-timeout``, ``listen``), so the
table is made from the ``usage.Options`` subclass itself: its
``optFlags`` (booleans), its ``optParameters`` (one value, typed by the
coerce function: ``int``, ``float``, or a string another function checks)
and its ``opt_NAME(value)`` methods (a string, or a list of strings for a
repeatable option such as ``listen`` or ``auth``).  A new option is a new
key without a line here.  Methods without an argument (``--help-stores``)
and the help and version options are actions, not settings.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from twisted.python import reflect

__all__ = ["Key", "Kind", "NOT_SETTINGS", "key_table"]

#: Options that are never settings (besides argument-less methods).
NOT_SETTINGS = frozenset({"config", "help", "version"})


class Kind(Enum):
    """How a key's value becomes command-line arguments."""

    FLAG = "flag"  # true or false: --NAME, or nothing
    VALUE = "value"  # one value: --NAME=VALUE
    REPEATABLE = "repeatable"  # an opt_NAME(value) method: a string or a list of them


@dataclass(frozen=True)
class Key:
    """One key: its option, how it is given, its type and its help text."""

    name: str
    kind: Kind
    #: The optParameters coerce function (None: a string).
    coerce: Callable[[str], Any] | None = None
    default: Any = None
    help: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words."""
        if self.kind is Kind.FLAG:
            return "true or false"
        if self.kind is Kind.REPEATABLE:
            return "a string or a list of strings"
        if self.coerce is int:
            return "an integer"
        if self.coerce is float:
            return "a number"
        return "a string"

    @property
    def toml_type(self) -> tuple[type, ...]:
        """The TOML (Python) types a value may have."""
        if self.kind is Kind.FLAG:
            return (bool,)
        if self.kind is Kind.REPEATABLE:
            return (str, list, dict)
        if self.coerce is int:
            return (int,)
        if self.coerce is float:
            return (int, float)
        return (str, dict)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def key_table(options_class: type) -> dict[str, Key]:
    """Every settable option of ``options_class``, by long name."""
    keys: dict[str, Key] = {}
    flags: list[list[Any]] = []
    reflect.accumulateClassList(options_class, "optFlags", flags)
    for entry in flags:
        long, doc = entry[0], (entry[2] if len(entry) > 2 else "")
        if long not in NOT_SETTINGS:
            keys[long] = Key(long, Kind.FLAG, default=False, help=_one_line(doc))
    parameters: list[list[Any]] = []
    reflect.accumulateClassList(options_class, "optParameters", parameters)
    for entry in parameters:
        long = entry[0]
        default, doc, coerce = (list(entry[2:5]) + [None, None, None])[:3]
        if long not in NOT_SETTINGS:
            function = coerce if coerce is not str else None
            keys[long] = Key(long, Kind.VALUE, function, default, _one_line(doc))
    methods: dict[str, Any] = {}
    reflect.addMethodNamesToDict(options_class, methods, "opt_")
    for method_name in methods:
        name = method_name.replace("_", "-")
        method = getattr(options_class, "opt_" + method_name)
        if name in NOT_SETTINGS or name.startswith("help") or name in keys:
            continue
        if len(inspect.signature(method).parameters) < 2:  # (self) alone: an action
            continue
        keys[name] = Key(name, Kind.REPEATABLE, help=_one_line(method.__doc__))
    return dict(sorted(keys.items()))
