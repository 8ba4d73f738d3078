"""``dsn=URL`` as ``--store`` and ``--auth`` take it."""

from __future__ import annotations

from popframe.config import ConfigurationError
from popframe.db.pool import Database, database_for
from popframe.db.schema import check_schema
from popframe.db.url import parse_url

__all__ = ["configured_database"]


def configured_database(argstring: str, key: str, name: str, *,
                        own_schema: bool = True) -> Database:
    """The process's shared pool for ``dsn=URL``; with ``own_schema``, the
    schema checked (blocking: at start-up only)."""
    if not argstring.startswith("dsn="):
        raise ConfigurationError(key, f"{name}: give dsn=URL, e.g. "
                                 "dsn=postgresql://popframe@127.0.0.1:5432/mail")
    return open_database(argstring[len("dsn="):], key, name, own_schema=own_schema)


def open_database(text: str, key: str, name: str, *, own_schema: bool = True) -> Database:
    try:
        url = parse_url(text, key)
    except ConfigurationError as error:
        raise ConfigurationError(key, f"{name}: dsn: {error.problem}") from None
    database = database_for(url)
    if own_schema:
        check_schema(database, key)
    return database
