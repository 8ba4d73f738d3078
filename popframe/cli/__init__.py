"""``popframe``: the admin command line, one subcommand per module.

Each public module of this package is a subcommand, named by its file
(``pw.py`` is ``popframe pw``): it defines ``HELP`` (one line for the
command list),
``configure(parser)`` (its arguments, on an ``argparse`` parser) and
``run(args) -> int`` (the exit status).  A module is a thin shell over
library calls that tests use directly; problems are raised as
:class:`~popframe.cli.errors.CLIError` and printed as one line naming the
problem, never a traceback.  Adding a subcommand is adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from popframe import __version__
from popframe.cli.errors import CLIError
from popframe.config import ConfigurationError

__all__ = ["main", "parser", "subcommand_names", "subcommands"]

#: Modules of this package that are not subcommands.
_NOT_COMMANDS = ("errors", "prompt")


def subcommand_names() -> list[str]:
    """The subcommands: the public modules of this package (a module's file
    name is its command), found without importing them."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_") and info.name not in _NOT_COMMANDS)


def subcommands(names: Sequence[str] | None = None) -> dict[str, ModuleType]:
    """The subcommand modules, imported, by name (all, or ``names``)."""
    return {name: importlib.import_module(f"{__name__}.{name}")
            for name in (subcommand_names() if names is None else names)}


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand's (so a
    command such as ``deliver``, run per message by an MTA, imports no
    other command's modules)."""
    top = argparse.ArgumentParser(
        prog="popframe", description="Administer a popframe POP3 server: users, "
        "passwords, mail stores and databases.  The server itself runs as 'twistd pop3'.")
    top.add_argument("--version", action="version", version=f"popframe {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in subcommands([only] if only else None).items():
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run one subcommand and return its exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = words[0] if words and words[0] in subcommand_names() else None
    args = parser(chosen).parse_args(words)
    try:
        return int(args.run(args))
    except (CLIError, ConfigurationError) as error:
        print(f"popframe {args.command}: {error}", file=sys.stderr)
        return getattr(error, "status", 1)
    except KeyboardInterrupt:
        print(f"popframe {args.command}: interrupted", file=sys.stderr)
        return 130
