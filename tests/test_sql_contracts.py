"""The kit's contract suites (popframe.testing.contracts) for the SQL store
and the SQL checker, on each engine: SQLite, PostgreSQL, MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sql_support import empty_tables, fresh_database

from popframe.auth.schemes import make_hash
from popframe.auth.sql import SQLChecker
from popframe.cli.user import add_user
from popframe.db import Database, Session, parse_url
from popframe.stores.sql import SQLStore, queries

pytestmark = pytest.mark.external

contracts = pytest.importorskip("popframe.testing.contracts")

#: A scheme per contract user, so every kind of secret is served by someone.
SCHEMES = ["SCRAM-SHA-256", "PLAIN", "SHA512-CRYPT", "SSHA512"]


class _OnEngine:
    """Each test gets an empty database of the class's engine."""

    engine = ""
    url = ""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path, shared_databases: dict[str, str]) -> Iterator[None]:
        if self.engine == "sqlite":
            with fresh_database("sqlite", tmp_path) as url:
                self.url = url
                yield
            return
        self.url = shared_databases[self.engine]
        empty_tables(self.url)
        yield


def _fail_the_second(monkeypatch: pytest.MonkeyPatch, statement: str) -> None:
    """QUIT's statements one id each; the second starting with
    ``statement`` fails, after the first has run inside the transaction."""
    monkeypatch.setattr(queries, "_BATCH", 1)
    real = Session.execute
    seen = [0]

    def failing(session: Session, text: str, params: Any = ()) -> int:
        if text.startswith(statement):
            seen[0] += 1
            if seen[0] == 2:
                raise RuntimeError("injected failure between two statements of a commit")
        return real(session, text, params)

    monkeypatch.setattr(Session, "execute", failing)


class _StoreContract(_OnEngine, contracts.StoreContract):
    def make_store(self, tmp_path: Path) -> SQLStore:
        return SQLStore(Database(parse_url(self.url)))

    def break_deletions(self, store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """The second DELETE of messages fails (one id per statement), after
        the first has run inside the transaction."""
        _fail_the_second(monkeypatch, "DELETE FROM popframe_messages")


class _CheckerContract(_OnEngine, contracts.CheckerContract):
    def make_checker(self, users: dict[str, bytes], tmp_path: Path) -> SQLChecker:
        database = Database(parse_url(self.url))
        for n, (name, password) in enumerate(users.items()):
            scheme = SCHEMES[n % len(SCHEMES)]
            rounds = 1000 if scheme == "SHA512-CRYPT" else None
            database.call(add_user, name, make_hash(scheme, password, rounds=rounds))
        return SQLChecker(database)

    def break_backend(self, checker: SQLChecker) -> None:
        checker.database = Database(parse_url("postgresql://nobody@127.0.0.1:9/gone"
                                              "?connect_timeout=1"))


class _HidingStoreContract(_StoreContract):
    """The contract with ``dele=hide``: rows stay, marked hidden."""

    def make_store(self, tmp_path: Path) -> SQLStore:
        return SQLStore(Database(parse_url(self.url)), dele="hide")

    def break_deletions(self, store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
        _fail_the_second(monkeypatch, "UPDATE popframe_messages SET hidden")

    def test_hidden_rows_stay(self, store: SQLStore) -> None:
        self.add(store, "alice", b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n")
        maildrop = self.open(store)
        self.wait(maildrop.commit([list(self.listed(maildrop).uids)[0]]))
        assert self.contents(store) == [b"Subject: 2\n\ntwo\n"]
        rows = store.database.call(lambda s: s.query(
            "SELECT hidden FROM popframe_messages ORDER BY id"))
        assert [bool(r[0]) for r in rows] == [True, False]


@pytest.mark.core
class TestSQLiteStore(_StoreContract):
    engine = "sqlite"


@pytest.mark.core
class TestSQLiteHidingStore(_HidingStoreContract):
    engine = "sqlite"


class TestPostgreSQLHidingStore(_HidingStoreContract):
    engine = "postgresql"


class TestMariaDBHidingStore(_HidingStoreContract):
    engine = "mysql"


class TestPostgreSQLStore(_StoreContract):
    engine = "postgresql"


class TestMariaDBStore(_StoreContract):
    engine = "mysql"


@pytest.mark.core
class TestSQLiteChecker(_CheckerContract):
    engine = "sqlite"


class TestPostgreSQLChecker(_CheckerContract):
    engine = "postgresql"


class TestMariaDBChecker(_CheckerContract):
    engine = "mysql"
