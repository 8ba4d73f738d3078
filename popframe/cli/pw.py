"""``popframe pw``: hash a password for a passwd-file or SQL user table, as
``doveadm pw`` does."""

from __future__ import annotations

import argparse

from popframe.cli.prompt import new_password_hash

HELP = "Hash a password ({SCHEME}hash, as doveadm pw prints it), read without echo."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--scheme", default="SHA512-CRYPT",
                        help="password scheme (default SHA512-CRYPT; e.g. BLF-CRYPT, "
                             "ARGON2ID, SSHA512, SCRAM-SHA-256)")
    parser.add_argument("-r", "--rounds", type=int, default=None,
                        help="cost parameter of the scheme, where it has one")


def run(args: argparse.Namespace) -> int:
    print(new_password_hash(args.scheme, args.rounds))
    return 0
