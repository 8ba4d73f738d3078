"""The real databases the SQL tests use, each run in databases of its own.

- PostgreSQL at 127.0.0.1:5432 (user ``postgres``, trust auth) and MariaDB
  at 127.0.0.1:3306 (``root``, no password), overridable with
  ``POPFRAME_TEST_POSTGRESQL`` / ``POPFRAME_TEST_MARIADB`` (an admin URL
  whose database is only used to create the test's own).  A run makes
  ``popframe_test_<random>`` on each, upgrades it, and drops it at the end,
  so runs never see each other's rows; between tests the tables are
  emptied.  SQLite: a file in the test's ``tmp_path``.
- Locally a missing server skips its tests; with ``CI=true`` it fails them.
- Tests wait for store and checker calls (thread pools) with
  ``popframe.testing.wait_for``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from popframe.db import Database, DatabaseURL, parse_url
from popframe.db.schema import upgrade
from popframe.testing import stop_reactor

ENGINES = ("sqlite", "postgresql", "mysql")
ADMIN_URLS = {
    "postgresql": os.environ.get("POPFRAME_TEST_POSTGRESQL",
                                 "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("POPFRAME_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test"),
}
TABLES = ("popframe_message_parts", "popframe_messages", "popframe_users")


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"SQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def admin_connection(engine: str) -> Any:
    """An autocommit connection to the admin URL's database, or a skip
    (a failure in CI)."""
    url = parse_url(ADMIN_URLS[engine])
    try:
        return Database(url).engine.connect()
    except Exception as error:  # a missing driver, or no server
        unavailable(f"no {engine} at {url}: {error}")
        raise


@contextmanager
def fresh_database(engine: str, tmp_path: Path | None = None, *, schema: bool = True
                   ) -> Iterator[str]:
    """A new, empty database (upgraded unless ``schema=False``); its URL.
    Dropped afterwards."""
    if engine == "sqlite":
        assert tmp_path is not None
        url = f"sqlite:///{tmp_path / f'mail-{uuid.uuid4().hex[:8]}.db'}"
        if schema:
            Database(parse_url(url)).call(upgrade)
        yield url
        return
    name = f"popframe_test_{uuid.uuid4().hex[:12]}"
    admin = admin_connection(engine)
    admin.cursor().execute(f"CREATE DATABASE {name}")
    admin.close()  # a test may restart the server: the drop connects again
    admin_url = parse_url(ADMIN_URLS[engine])
    url = str(DatabaseURL(engine, name, admin_url.user, admin_url.host, admin_url.port,
                          admin_url.password))
    if admin_url.password:
        url = url.replace(":***@", f":{admin_url.password}@")
    try:
        if schema:
            database = Database(parse_url(url))
            database.call(upgrade)
            database.close()
        yield url
    finally:
        drop = f"DROP DATABASE IF EXISTS {name}"
        admin = admin_connection(engine)
        admin.cursor().execute(drop + (" WITH (FORCE)" if engine == "postgresql" else ""))
        admin.close()


def empty_tables(url: str) -> None:
    database = Database(parse_url(url))

    def empty(session: Any) -> None:
        for table in TABLES:
            session.execute(f"DELETE FROM {table}")

    database.call(empty)
    database.close()


@pytest.fixture(scope="session")
def shared_databases() -> Iterator[dict[str, str]]:
    """One database per server engine for the whole run, made when first
    asked for."""
    made: dict[str, str] = {}
    stack: list[Any] = []
    yield _LazyDatabases(made, stack)  # type: ignore[misc]
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


class _LazyDatabases(dict):  # type: ignore[type-arg]
    def __init__(self, made: dict[str, str], stack: list[Any]) -> None:
        super().__init__()
        self._made = made
        self._stack = stack

    def __missing__(self, engine: str) -> str:
        manager = fresh_database(engine)
        url = manager.__enter__()
        self._stack.append(manager)
        self[engine] = url
        return url


@pytest.fixture(params=ENGINES)
def dsn(request: pytest.FixtureRequest, tmp_path: Path, shared_databases: dict[str, str]
        ) -> Iterator[str]:
    """A database URL with popframe's schema and no rows, for each engine."""
    engine = request.param
    if engine == "sqlite":
        with fresh_database("sqlite", tmp_path) as url:
            yield url
        return
    url = shared_databases[engine]
    empty_tables(url)
    yield url


# -- the reactor -------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _reactor_stopped_at_exit() -> Iterator[None]:
    """Shut the reactor down after the run if a test ran it: the thread
    pools tied to it would keep the interpreter alive."""
    yield
    stop_reactor()


@pytest.fixture(autouse=True)
def _databases_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every :class:`Database` a test makes has its idle connections closed
    when the test ends: the SQL tests make several hundred pools, and
    PostgreSQL takes 100 connections in all."""
    opened: list[Database] = []
    real_init = Database.__init__

    def init(self: Database, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(Database, "__init__", init)
    yield
    for database in opened:
        database.close()
