"""The schema's version, and upgrading it (``popframe db upgrade``).

``popframe_schema`` holds one row: the number of migrations applied.
Upgrading applies the missing ones in order, each with its version bump in
one transaction on PostgreSQL and SQLite (MariaDB commits each DDL
statement by itself: a failed upgrade there is re-run after the cause is
fixed).  A database newer than this popframe is refused, never downgraded.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from popframe.config import ConfigurationError
from popframe.db.migrations import MIGRATIONS
from popframe.db.pool import Database, DatabaseError, Session

__all__ = ["LATEST", "SchemaTooNew", "Upgrade", "check_schema", "current_version", "upgrade"]

log = Logger(namespace="popframe.db")

#: The schema version this popframe writes and reads.
LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was upgraded by a newer popframe."""

    def __init__(self, found: int) -> None:
        super().__init__(f"the database's schema is version {found}, newer than this "
                         f"popframe's {LATEST}: upgrade popframe, not the database")
        self.found = found


@dataclass(frozen=True)
class Upgrade:
    before: int
    after: int


def current_version(session: Session) -> int | None:
    """The schema version, or None when popframe's tables are not there."""
    try:
        row = session.one("SELECT version FROM popframe_schema")
    except session.engine.driver_errors():
        return None
    return int(row[0]) if row is not None else 0


def upgrade(session: Session) -> Upgrade:
    """Create or migrate popframe's tables; idempotent."""
    engine = session.engine.name
    if engine == "sqlite":  # readers never wait for the writer (persistent)
        session.execute("PRAGMA journal_mode = WAL")
    session.execute("CREATE TABLE IF NOT EXISTS popframe_schema (version INTEGER NOT NULL)")
    with session.transaction():
        row = session.one("SELECT version FROM popframe_schema")
        if row is None:
            session.execute("INSERT INTO popframe_schema (version) VALUES (0)")
    before = current_version(session) or 0
    if before > LATEST:
        raise SchemaTooNew(before)
    for version in range(before + 1, LATEST + 1):
        with session.transaction():
            # Another upgrade that got here first has moved the version on.
            if int(session.one("SELECT version FROM popframe_schema")[0]) >= version:  # type: ignore[index]
                continue
            for statement in MIGRATIONS[version - 1].statements[engine]:
                session.execute(statement)
            session.execute("UPDATE popframe_schema SET version = ?", (version,))
    return Upgrade(before, LATEST)


def check_schema(database: Database, key: str) -> None:
    """At start-up (blocking, before the reactor runs): refuse a database
    whose schema is not this popframe's, naming the fix.  A database that
    does not answer is only logged: service starts when it comes back."""
    try:
        found = database.call(current_version)
    except DatabaseError:
        log.warn("database {url} does not answer yet; logins fail with [SYS/TEMP] until it "
                 "does", url=str(database.url))
        return
    if found is None or found < LATEST:
        raise ConfigurationError(key, f"{database.url}: the schema is at version {found or 0}, "
                                 f"this popframe needs {LATEST}: run popframe db upgrade --dsn URL")
    if found > LATEST:
        raise ConfigurationError(key, str(SchemaTooNew(found)))
