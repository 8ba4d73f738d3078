"""Leave-on-server: ``dele=hide`` parsed by every store, and the schema
upgrade that adds the SQL columns to a database of version 1.  (The
stores' all-or-none hiding runs in their contract suites:
tests/test_store_contracts.py, test_mbox_contract.py, test_sql_contracts.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from sql_support import fresh_database

from popframe.config import ConfigurationError
from popframe.db import Database, parse_url
from popframe.db.migrations import MIGRATIONS
from popframe.db.schema import current_version, upgrade
from popframe.stores import store_from_description
from popframe.stores.options import split_options


def test_dele_option_in_every_store(tmp_path: Path) -> None:
    assert store_from_description(f"maildir:{tmp_path}/%u:dele=hide").dele == "hide"  # type: ignore[attr-defined]
    assert store_from_description(f"maildir:{tmp_path}/%u").dele == "unlink"  # type: ignore[attr-defined]
    assert store_from_description(f"mbox:{tmp_path}/%u:dele=hide").dele == "hide"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"dele='keep': expected unlink\|hide"):
        store_from_description(f"mbox:{tmp_path}/%u:dele=keep")
    assert split_options("dsn=postgresql://u@h:5432/db:dele=hide", ["dele"]) == (
        "dsn=postgresql://u@h:5432/db", ["dele=hide"])
    assert split_options("dsn=sqlite:////x.db", ["dele"]) == ("dsn=sqlite:////x.db", [])


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_upgrade_adds_the_columns_to_a_version_1_database(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path, schema=False) as dsn:
        database = Database(parse_url(dsn))

        def version_1(session):  # type: ignore[no-untyped-def]
            session.execute("CREATE TABLE popframe_schema (version INTEGER NOT NULL)")
            session.execute("INSERT INTO popframe_schema (version) VALUES (1)")
            for statement in MIGRATIONS[0].statements[session.engine.name]:
                session.execute(statement)
            session.execute("INSERT INTO popframe_messages (maildrop, uid, size, stored_size, "
                            "ready, parts) VALUES ('alice', 'u1', 3, 3, ?, 0)", (True,))

        database.call(version_1)
        assert database.call(current_version) == 1
        assert database.call(upgrade).after == len(MIGRATIONS)
        rows = database.call(lambda s: s.query(
            "SELECT uid, hidden, retrieved_at FROM popframe_messages"))
        assert [(r[0], bool(r[1]), r[2]) for r in rows] == [("u1", False, None)]
        store = store_from_description(f"sql:dsn={dsn}:dele=hide")
        assert store.dele == "hide"  # type: ignore[attr-defined]
        database.close()
