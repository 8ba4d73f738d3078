"""Database URLs: the one parser for every ``dsn=`` popframe takes.

- ``sqlite:////absolute/path.db`` (four slashes: the path is absolute);
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`` (port 5432);
- ``mysql://USER[:PASSWORD]@HOST[:PORT]/DB`` (MariaDB or MySQL, port 3306).

Query parameters (all optional): ``password_file=/path`` (the password is
the file's first line, so it stays out of the process list and the
config), ``connect_timeout=SECONDS`` (3), ``timeout=SECONDS`` (10: one
statement's, and a whole call's, bound), ``pool=N`` (8 connections),
``driver=pymysql|mysqlclient`` (``mysql://`` only; default: mysqlclient when
installed, else PyMySQL), ``socket=/path`` (a Unix-domain socket instead of
TCP: for PostgreSQL the directory of ``.s.PGSQL.PORT``, as libpq's
``host=/dir``; for MariaDB the socket file; the host may then be left out:
``postgresql://USER@/DB?socket=/var/run/postgresql``).  Without a password in the URL or a file, the
driver's usual environment applies: libpq's ``PGPASSWORD`` and
``~/.pgpass``, and ``MYSQL_PWD`` for MariaDB.  A URL is shown with its
password replaced by ``***``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, unquote, urlsplit

from popframe.config import ConfigurationError

__all__ = ["DatabaseURL", "parse_url"]

ENGINES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql",
           "mysql": "mysql", "mariadb": "mysql"}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
MYSQL_DRIVERS = ("mysqlclient", "pymysql")
_PARAMETERS = ("password_file", "connect_timeout", "timeout", "pool", "driver", "socket")


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL.  ``password`` is resolved (URL, file or
    environment) by :meth:`resolved_password`, not at parse time, so a
    rotated password file is read again at the next connect."""

    engine: str  # "sqlite" | "postgresql" | "mysql"
    database: str  # the absolute file for SQLite
    user: str | None = None
    host: str | None = None
    port: int | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    connect_timeout: float = 3.0
    timeout: float = 10.0
    pool: int = 8
    driver: str | None = None
    socket: str | None = None  # a Unix-domain socket (PostgreSQL: its directory)

    def resolved_password(self) -> str | None:
        """The password to send: from the URL, else the first line of
        ``password_file``, else None (the driver's environment decides)."""
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        if self.engine == "mysql":
            return os.environ.get("MYSQL_PWD")
        return None

    def key(self) -> tuple[object, ...]:
        """What makes two URLs the same database for sharing one pool."""
        return (self.engine, self.database, self.user, self.host, self.port, self.socket)

    def __str__(self) -> str:
        if self.engine == "sqlite":
            return f"sqlite:///{self.database}"
        auth = (self.user or "") + (":***" if self.password is not None else "")
        port = f":{self.port}" if self.port is not None else ""
        socket = f"?socket={self.socket}" if self.socket is not None else ""
        return (f"{self.engine}://{auth}{'@' if auth else ''}{self.host or ''}{port}/"
                f"{self.database}{socket}")


def parse_url(text: str, key: str = "dsn") -> DatabaseURL:
    """Parse a database URL, or raise ``ConfigurationError(key, ...)``
    naming what is wrong (never quoting a password)."""

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(key, problem)

    scheme, sep, _ = text.partition("://")
    engine = ENGINES.get(scheme.lower()) if sep else None
    if engine is None:
        raise bad("a database URL starts with sqlite://, postgresql:// or mysql://")
    parts = urlsplit(text)
    if parts.fragment:
        raise bad("a database URL has no #fragment")
    url = DatabaseURL(engine=engine, database="")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        url = _with_parameter(url, name, value, bad)
    if engine == "sqlite":
        if parts.netloc:
            raise bad("sqlite URLs have no host: sqlite:////absolute/path.db")
        path = unquote(parts.path)
        if not path.startswith("//"):
            raise bad("sqlite needs an absolute path: sqlite:////absolute/path.db (four slashes)")
        return replace(url, database=path[1:])
    if parts.password is not None and url.password_file is not None:
        raise bad("give the password in the URL or in password_file=, not both")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise bad(f"name the database: {engine}://USER@HOST:PORT/DATABASE")
    if not parts.hostname and url.socket is None:
        raise bad(f"name the host: {engine}://USER@HOST:PORT/DATABASE (or ?socket=/path)")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port is not a number from 1 to 65535") from None
    if url.driver is not None and engine != "mysql":
        raise bad("driver= is for mysql:// URLs")
    return replace(
        url, database=database, host=parts.hostname, port=port or DEFAULT_PORTS[engine],
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None)


def _with_parameter(url: DatabaseURL, name: str, value: str,
                    bad: Callable[[str], ConfigurationError]) -> DatabaseURL:
    if name not in _PARAMETERS:
        raise bad(f"unknown URL parameter {name!r} (known: {', '.join(_PARAMETERS)})")
    if name == "password_file":
        if not value:
            raise bad("password_file= needs a path")
        return replace(url, password_file=value)
    if name == "socket":
        if not value.startswith("/"):
            raise bad("socket= needs an absolute path")
        return replace(url, socket=value)
    if name == "driver":
        if value not in MYSQL_DRIVERS:
            raise bad(f"driver={value!r}: use one of {', '.join(MYSQL_DRIVERS)}")
        return replace(url, driver=value)
    try:
        number = float(value) if name != "pool" else int(value)
    except ValueError:
        raise bad(f"{name}={value!r} is not a number") from None
    if number <= 0 or (name == "pool" and number > 256):
        raise bad(f"{name}={value!r} is out of range")
    if name == "pool":
        return replace(url, pool=int(number))
    if name == "timeout":
        return replace(url, timeout=number)
    return replace(url, connect_timeout=number)
