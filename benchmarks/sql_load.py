#!/usr/bin/env python3
"""Load the benchmark corpus into a popframe SQL database, with the popframe
on PYTHONPATH (the one the benchmark runs), so its schema is the server's.

    python benchmarks/sql_load.py --dsn URL --corpus DIR schema      # create the tables, load passwd
    python benchmarks/sql_load.py --dsn URL --corpus DIR load u0001 u0002 ...
    python benchmarks/sql_load.py --dsn URL --corpus DIR count u0001 ...

``load`` replaces each user's maildrop with the corpus's messages, in the
corpus's order, each message's UIDL its maildir base name (as popframe's
Maildir store and Dovecot show it), so the load generator's checks hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from popframe.db import Database, parse_url
from popframe.db.schema import upgrade
from popframe.stores.sql.queries import store_message


def empty_maildrop(session, user: str) -> None:
    session.execute("DELETE FROM popframe_message_parts WHERE message_id IN "
                    "(SELECT id FROM popframe_messages WHERE maildrop = ?)", (user,))
    session.execute("DELETE FROM popframe_messages WHERE maildrop = ?", (user,))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("action", choices=["schema", "load", "count"])
    p.add_argument("users", nargs="*")
    a = p.parse_args()
    database = Database(parse_url(a.dsn))
    if a.action == "schema":
        database.call(upgrade)
        users = []
        for line in (a.corpus / "passwd").read_text().splitlines():
            name, password = line.split(":")[:2]
            users.append((name, password))

        def add(session):
            with session.transaction():
                for name, password in users:
                    session.execute("INSERT INTO popframe_users (name, password) VALUES (?, ?)",
                                    (name, password))

        database.call(add)
        return
    if a.action == "count":
        marks = ", ".join("?" * len(a.users))
        print(database.call(lambda s: s.one(
            f"SELECT COUNT(*) FROM popframe_messages WHERE maildrop IN ({marks})", a.users)[0]))
        return
    manifest = json.loads((a.corpus / "manifest.json").read_text())
    started, count = time.monotonic(), 0
    for user in a.users:
        database.call(empty_maildrop, user)
        cur = a.corpus / "maildirs" / user / "Maildir" / "cur"
        for base, _size, _crc in manifest["users"][user]["messages"]:
            with open(cur / f"{base}:2,", "rb") as f:
                database.call(store_message, user, base, f)
            count += 1
    print(f"loaded {count} messages for {len(a.users)} users in {time.monotonic() - started:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
