"""``popframe check-config FILE``: check a ``--config`` file without
starting the server."""

from __future__ import annotations

import argparse

HELP = ("Check a twistd pop3 --config file without starting the server: every mistake, "
        "with its key, its value and what was expected (exit status 1).")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="the TOML file, e.g. /etc/popframe/popframe.toml")


def run(args: argparse.Namespace) -> int:
    from popframe.config.check import check_config

    problems = check_config(args.file)
    for problem in problems:
        text = str(problem)
        print(text if text.startswith(args.file) else f"{args.file}: {text}")
    if problems:
        count = len(problems)
        print(f"{count} mistake{'s' if count > 1 else ''} in {args.file}")
        return 1
    print(f"{args.file}: OK")
    return 0
