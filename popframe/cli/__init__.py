"""``popframe``: the admin command line, one subcommand per module.

Each public module of this package is a subcommand: it defines ``NAME``
(the word after ``popframe``), ``HELP`` (one line for the command list),
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

__all__ = ["main", "subcommands"]


def subcommands() -> dict[str, ModuleType]:
    """The subcommand modules of this package, by ``NAME``."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in ("errors", "prompt"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "NAME", None)
        if name is not None:
            found[name] = module
    return dict(sorted(found.items()))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="popframe", description="Administer a popframe POP3 server: users, "
        "passwords, mail stores and databases.  The server itself runs as 'twistd pop3'.")
    top.add_argument("--version", action="version", version=f"popframe {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in subcommands().items():
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run one subcommand and return its exit status."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CLIError, ConfigurationError) as error:
        print(f"popframe {args.command}: {error}", file=sys.stderr)
        return getattr(error, "status", 1)
    except KeyboardInterrupt:
        print(f"popframe {args.command}: interrupted", file=sys.stderr)
        return 130
