"""What differs between SQLite, PostgreSQL and MariaDB: connecting (with
the timeouts), placeholders, starting a write transaction, the id of a new
row, and which driver errors mean "this connection is gone".

Every connection is in autocommit mode: a lookup is one round trip, with
no BEGIN and COMMIT around it (a third of a lookup's cost, measured:
docs/sql.md).  Transactions are explicit (:meth:`Engine.begin`).
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Callable
from typing import Any

from popframe.config import ConfigurationError
from popframe.db.url import DatabaseURL

__all__ = ["Engine", "engine_for", "placeholders"]

#: MariaDB client and server errors that mean the connection is gone.
_MYSQL_GONE = {1053, 1927, 2003, 2006, 2013, 2055, 4031}


def placeholders(text: str, mark: Callable[[int], str], percent: str = "%") -> str:
    """popframe's ``?`` placeholders (outside ``'strings'`` and
    ``"names"``) as a driver's: ``mark(n)`` for the n-th (from 1); each
    ``%`` as ``percent`` (``%%`` for the drivers that use ``%s``)."""
    out: list[str] = []
    n, quote = 0, ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            n += 1
            out.append(mark(n))
            continue
        out.append(percent if char == "%" else char)
    return "".join(out)


class Engine:
    """One engine's ways.  SQL in popframe is written with ``?``
    placeholders; :meth:`sql` turns it into the driver's style."""

    name = ""
    format_style = True  # the driver wants %s (and %% for a literal %)

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url

    def connect(self) -> Any:
        raise NotImplementedError

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def _format(text: str) -> str:
        return placeholders(text, lambda n: "%s", percent="%%")

    def sql(self, text: str) -> str:
        return self._format(text) if self.format_style else text

    def cursor(self, connection: Any) -> Any:
        return connection.cursor()

    def begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN")

    def insert_id(self, cursor: Any, text: str, params: tuple[Any, ...]) -> int:
        """Run an INSERT into a table with an ``id`` key; its new id."""
        cursor.execute(self.sql(text), params)
        return int(cursor.lastrowid)

    def is_gone(self, connection: Any, error: BaseException) -> bool:
        """Whether ``error`` left ``connection`` unusable (server restart,
        network, timeout): it is closed and a new one made."""
        raise NotImplementedError

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exception classes (its ``Error``)."""
        raise NotImplementedError

    def blob(self, value: Any) -> bytes:
        return bytes(value)


class SQLiteEngine(Engine):
    name = "sqlite"
    format_style = False

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.url.database, timeout=self.url.timeout,
                                     isolation_level=None, check_same_thread=False)
        # FULL: a commit (a delivery, QUIT's deletions) is on disk when it
        # returns, in WAL mode too.  The schema sets WAL once (persistent).
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def begin(self, cursor: Any) -> None:
        # IMMEDIATE takes the write lock now: a transaction that reads and
        # then writes cannot fail half-way with "database is locked".
        cursor.execute("BEGIN IMMEDIATE")

    def is_gone(self, connection: Any, error: BaseException) -> bool:
        return False  # a file: nothing to reconnect to

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)


class PostgreSQLEngine(Engine):
    name = "postgresql"

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError("dsn", "postgresql:// needs psycopg: pip install "
                                     "'popframe[sql]'") from None
        self._psycopg = psycopg

    def connect(self) -> Any:
        return self._psycopg.connect(autocommit=True, **self._parameters())

    def conninfo(self, address: str | None = None) -> bytes:
        """The libpq connection string (the password read now) for
        :mod:`popframe.db.pq`'s connections on the reactor; ``address``:
        the host's, resolved already (libpq would block to resolve it)."""
        from psycopg.conninfo import make_conninfo

        parameters = self._parameters()
        if address is not None:
            parameters["hostaddr"] = address
        return make_conninfo(**parameters).encode()

    def _parameters(self) -> dict[str, Any]:
        url = self.url
        kwargs: dict[str, Any] = dict(
            host=url.socket or url.host, port=url.port, dbname=url.database,
            connect_timeout=max(2, math.ceil(url.connect_timeout)),
            application_name="popframe",
            # The server ends a statement that runs too long; keepalives
            # notice a peer that vanished without closing.
            options=f"-c statement_timeout={int(url.timeout * 1000)}",
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        if url.user is not None:
            kwargs["user"] = url.user
        password = url.resolved_password()
        if password is not None:
            kwargs["password"] = password
        return kwargs

    def cursor(self, connection: Any) -> Any:
        # Results in binary: a bytea part comes as its octets, not as hex
        # text twice its size that both sides encode and decode.
        return connection.cursor(binary=True)

    def insert_id(self, cursor: Any, text: str, params: tuple[Any, ...]) -> int:
        cursor.execute(self.sql(text + " RETURNING id"), params)
        return int(cursor.fetchone()[0])

    def is_gone(self, connection: Any, error: BaseException) -> bool:
        if isinstance(error, (self._psycopg.OperationalError, self._psycopg.InterfaceError)):
            return True
        return connection is not None and (connection.broken or connection.closed)

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)


class MySQLEngine(Engine):
    """MariaDB (and MySQL) through mysqlclient, or PyMySQL (pure Python,
    1.5x the CPU per query here) when mysqlclient is not installed or
    ``driver=pymysql`` asks for it."""

    name = "mysql"

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__(url)
        self.driver, self._module = self._load(url.driver)

    @staticmethod
    def _load(wanted: str | None) -> tuple[str, Any]:
        if wanted in (None, "mysqlclient"):
            try:
                import MySQLdb  # type: ignore[import-untyped]

                return "mysqlclient", MySQLdb
            except ImportError:
                if wanted is not None:
                    raise ConfigurationError("dsn", "driver=mysqlclient is not installed") from None
        try:
            import pymysql  # type: ignore[import-untyped]

            return "pymysql", pymysql
        except ImportError:
            raise ConfigurationError("dsn", "mysql:// needs PyMySQL or mysqlclient: pip install "
                                     "'popframe[sql]'") from None

    def connect(self) -> Any:
        url = self.url
        timeout = max(1, math.ceil(url.timeout))
        kwargs: dict[str, Any] = dict(
            host=url.host or "localhost", port=url.port, database=url.database, charset="utf8mb4",
            autocommit=True, connect_timeout=max(1, math.ceil(url.connect_timeout)),
            read_timeout=timeout + 1, write_timeout=timeout + 1)
        if url.user is not None:
            kwargs["user"] = url.user
        if url.socket is not None:
            kwargs["unix_socket"] = url.socket
        password = url.resolved_password()
        if password is not None:
            kwargs["password"] = password
        connection = self._module.connect(**kwargs)
        cursor = connection.cursor()
        # MariaDB's own statement bound; strict mode so nothing is silently
        # truncated; READ COMMITTED so a listing sees what is committed.
        cursor.execute(f"SET SESSION max_statement_time = {timeout}, "
                       "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.close()
        return connection

    def begin(self, cursor: Any) -> None:
        cursor.execute("START TRANSACTION")

    def is_gone(self, connection: Any, error: BaseException) -> bool:
        module = self._module
        if isinstance(error, module.InterfaceError):
            return True
        if isinstance(error, module.OperationalError):
            code = error.args[0] if error.args and isinstance(error.args[0], int) else None
            return code is None or code in _MYSQL_GONE or code >= 2000
        return False

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (self._module.Error,)


def engine_for(url: DatabaseURL) -> Engine:
    kind = {"sqlite": SQLiteEngine, "postgresql": PostgreSQLEngine, "mysql": MySQLEngine}
    return kind[url.engine](url)
