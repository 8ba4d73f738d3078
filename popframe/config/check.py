"""``popframe check-config FILE``: every mistake in a ``--config`` file,
found without starting anything.

Three passes, each reporting all it finds:

1. each key on its own: known, of the right TOML type, accepted by its
   option's coerce function, and, for repeatable keys (``auth``...), each
   item accepted by its option method;
2. the keys left, as a command line: the options' own checks (the store,
   checkers and certificates are built, as at start-up).  A failing key is
   reported and left out (a required one stood in for), and the rest
   parsed again, so one mistake does not hide the next;
3. each ``listen`` and ``lmtp`` endpoint, parsed as the server parses it
   (nothing is bound).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from popframe.config import ConfigurationError
from popframe.config.endpoints import check_endpoint
from popframe.config.file import MISSING, Problem, arguments, read_config
from popframe.config.keys import Key, Kind

__all__ = ["check_config"]

#: Keys whose values are endpoint strings, checked one by one.
_ENDPOINT_KEYS = ("listen", "lmtp")

#: What stands in for a required key that is missing or wrong, so the
#: other keys can still be checked.
_STAND_INS = {
    "listen": "tcp:0:interface=127.0.0.1",
    "store": "maildir:/nonexistent/popframe-check-config/%u",
    "auth": "memory:check-config:check-config",
}


def check_config(path: str | os.PathLike[str]) -> list[Problem]:
    """The mistakes in the file at ``path`` (empty: it is fine)."""
    from popframe.options import Options

    path = os.fspath(path)
    try:
        table = read_config(path)
    except ConfigurationError as error:
        return [Problem(path, MISSING, error.problem)]
    keys = Options.config_keys()
    problems = _each_key(table, keys, path)
    wrong = {problem.key for problem in problems}
    remaining = {name: value for name, value in table.items() if name not in wrong}
    problems += _as_command_line(remaining, keys, path, frozenset(wrong))
    return problems


def _each_key(table: Mapping[str, Any], keys: Mapping[str, Key], path: str) -> list[Problem]:
    from popframe.options import Options

    _, problems = arguments(table, keys, path)
    wrong = {problem.key for problem in problems}
    for name, value in table.items():
        key = keys.get(name)
        if key is None or name in wrong:
            continue
        if key.kind is Kind.VALUE and key.coerce is not None:
            try:
                key.coerce(str(value))
            except ValueError as error:
                problems.append(Problem(name, value, _expected(key, error)))
        elif key.kind is Kind.REPEATABLE:
            items = value if isinstance(value, list) else [value]
            item_args, _ = arguments({name: items}, keys, path)
            for item, arg in zip(items, item_args, strict=True):
                method = getattr(Options(), "opt_" + name.replace("-", "_"))
                value = arg.partition("=")[2]
                try:
                    method(value)
                    if name in _ENDPOINT_KEYS:
                        check_endpoint(value, f"--{name}")
                except (usage.UsageError, ConfigurationError) as error:
                    problems.append(Problem(name, item, _problem_text(error, name).removeprefix(
                        f"{value!r}: ")))
    return problems


def _expected(key: Key, error: ValueError) -> str:
    if key.coerce in (int, float):
        return f"expected {key.expected}"
    return str(error).removeprefix(f"--{key.name}: ")


def _problem_text(error: Exception, name: str) -> str:
    cause = error if isinstance(error, ConfigurationError) else error.__cause__
    text = cause.problem if isinstance(cause, ConfigurationError) else str(error)
    return text.removeprefix(f"--{name}: ")


def _as_command_line(remaining: dict[str, Any], keys: Mapping[str, Key], path: str,
                     wrong: frozenset[str]) -> list[Problem]:
    from popframe.options import Options

    problems: list[Problem] = []
    reported: set[str] = set(wrong)
    stand_ins: dict[str, str] = {}
    for _attempt in range(len(remaining) + len(_STAND_INS) + 2):
        args, _ = arguments(remaining, keys, path)
        args += [f"--{name}={value}" for name, value in stand_ins.items()]
        options = Options()
        try:
            options.parseOptions(args)
        except usage.UsageError as error:
            cause = error.__cause__
            name = cause.key.removeprefix("--") if isinstance(cause, ConfigurationError) else ""
            if name in wrong and name in _STAND_INS and name not in stand_ins:
                stand_ins[name] = _STAND_INS[name]  # reported already
                continue
            if name in reported or not (name in remaining or name in _STAND_INS):
                problems.append(Problem(name or path, MISSING, _problem_text(error, name)))
                break
            reported.add(name)
            missing = name not in remaining
            problems.append(Problem(name, remaining.pop(name, MISSING),
                                    _problem_text(error, name) +
                                    (" (here or on the command line)" if missing else "")))
            if name in _STAND_INS:
                stand_ins[name] = _STAND_INS[name]
            continue
        problems += _endpoints(options, remaining, keys, stand_ins)
        break
    return problems


def _endpoints(options: Any, remaining: Mapping[str, Any], keys: Mapping[str, Key],
               stand_ins: Mapping[str, str]) -> list[Problem]:
    from twisted.internet import reactor

    from popframe.config.endpoints import parse_server_endpoint
    from popframe.workers.sockets import check_shareable

    problems = []
    for name in ("listen", "lmtp"):
        if name not in remaining or name in stand_ins:
            continue
        given, _ = arguments({name: remaining[name]}, keys, "")
        for description in (arg.partition("=")[2] for arg in given):
            try:
                parse_server_endpoint(reactor, description, f"--{name}")
                if options["workers"] > 1:
                    check_shareable(description, f"--{name}")
            except ConfigurationError as error:
                problems.append(Problem(name, description, error.problem.removeprefix(
                    f"{description!r}: ")))
    return problems
