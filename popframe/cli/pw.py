"""``popframe pw``: hash a password for a passwd-file or SQL user table, as
``doveadm pw`` does."""

from __future__ import annotations

import argparse

from popframe.auth.schemes import UnknownScheme, make_hash
from popframe.cli.errors import CLIError
from popframe.cli.prompt import read_password

HELP = "Hash a password ({SCHEME}hash, as doveadm pw prints it), read without echo."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--scheme", default="SHA512-CRYPT",
                        help="password scheme (default SHA512-CRYPT; e.g. BLF-CRYPT, "
                             "ARGON2ID, SSHA512, SCRAM-SHA-256)")
    parser.add_argument("-r", "--rounds", type=int, default=None,
                        help="cost parameter of the scheme, where it has one")


def run(args: argparse.Namespace) -> int:
    password = read_password()
    try:
        print(make_hash(args.scheme, password, rounds=args.rounds))
    except UnknownScheme as error:
        raise CLIError(str(error)) from None
    except ValueError as error:
        raise CLIError(f"--scheme {args.scheme}: {error}") from None
    return 0
