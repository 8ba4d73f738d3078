"""popframe's own schema, as a list of migrations: version N is
``MIGRATIONS[N - 1]``.  A release that changes the schema appends one (never
edits one that shipped); ``popframe db upgrade`` applies the missing ones
in order.  The tables (docs/sql.md explains each column):

- ``popframe_schema``: one row, the version (made by :mod:`.schema`);
- ``popframe_users``: the ``--auth sql:dsn=URL`` users;
- ``popframe_messages``: one row per message, what LIST, UIDL and STAT
  need, listed from the covering index ``popframe_messages_listing``
  without reading a body;
- ``popframe_message_parts``: the stored octets in parts of at most
  :data:`PART_SIZE`, so a 100 MB message is written and read a part at a
  time (and fits MariaDB's ``max_allowed_packet``).

Version 2 adds ``popframe_messages.hidden`` (DELE with ``dele=hide``),
``popframe_messages.retrieved_at`` (Unix seconds of the session that
retrieved it, for EXPIRE) and ``popframe_users.expire``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "PART_SIZE"]

#: Octets per row of popframe_message_parts.
PART_SIZE = 256 * 1024


@dataclass(frozen=True)
class Migration:
    description: str
    #: engine name -> statements, run in order (in one transaction where
    #: the engine has transactional DDL: PostgreSQL, SQLite).
    statements: dict[str, tuple[str, ...]]


_MYSQL_TABLE = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

MIGRATIONS: list[Migration] = [
    Migration(
        "users, messages and message parts",
        {
            "postgresql": (
                """CREATE TABLE popframe_users (
                    name VARCHAR(255) PRIMARY KEY,
                    password VARCHAR(1024) NOT NULL,
                    maildrop VARCHAR(1024),
                    login_delay INTEGER,
                    enabled BOOLEAN NOT NULL DEFAULT TRUE)""",
                """CREATE TABLE popframe_messages (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    maildrop VARCHAR(255) NOT NULL,
                    uid VARCHAR(70) NOT NULL,
                    size BIGINT NOT NULL,
                    stored_size BIGINT NOT NULL,
                    ready BOOLEAN NOT NULL,
                    parts INTEGER NOT NULL,
                    UNIQUE (maildrop, uid))""",
                """CREATE INDEX popframe_messages_listing
                    ON popframe_messages (maildrop, id) INCLUDE (uid, size, ready)""",
                """CREATE TABLE popframe_message_parts (
                    message_id BIGINT NOT NULL
                        REFERENCES popframe_messages (id) ON DELETE CASCADE,
                    part INTEGER NOT NULL,
                    data BYTEA NOT NULL,
                    PRIMARY KEY (message_id, part))""",
                # Mail is mostly compressed already (base64, images): no
                # pglz pass on every write and read; and parts up to ~8 KB
                # (half of all mail) stay in the row, not in TOAST chunks.
                "ALTER TABLE popframe_message_parts ALTER COLUMN data SET STORAGE EXTERNAL",
                "ALTER TABLE popframe_message_parts SET (toast_tuple_target = 8160)",
            ),
            "mysql": (
                """CREATE TABLE popframe_users (
                    name VARCHAR(255) NOT NULL PRIMARY KEY,
                    password VARCHAR(1024) NOT NULL,
                    maildrop VARCHAR(1024) NULL,
                    login_delay INT NULL,
                    enabled BOOLEAN NOT NULL DEFAULT TRUE)""" + _MYSQL_TABLE,
                """CREATE TABLE popframe_messages (
                    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                    maildrop VARCHAR(255) NOT NULL,
                    uid VARCHAR(70) NOT NULL,
                    size BIGINT NOT NULL,
                    stored_size BIGINT NOT NULL,
                    ready BOOLEAN NOT NULL,
                    parts INT NOT NULL,
                    UNIQUE KEY popframe_messages_uid (maildrop, uid),
                    KEY popframe_messages_listing (maildrop, id, uid, size, ready)
                    )""" + _MYSQL_TABLE,
                """CREATE TABLE popframe_message_parts (
                    message_id BIGINT NOT NULL,
                    part INT NOT NULL,
                    data LONGBLOB NOT NULL,
                    PRIMARY KEY (message_id, part),
                    FOREIGN KEY (message_id) REFERENCES popframe_messages (id)
                        ON DELETE CASCADE)""" + _MYSQL_TABLE,
            ),
            "sqlite": (
                """CREATE TABLE popframe_users (
                    name TEXT NOT NULL PRIMARY KEY,
                    password TEXT NOT NULL,
                    maildrop TEXT,
                    login_delay INTEGER,
                    enabled INTEGER NOT NULL DEFAULT 1)""",
                """CREATE TABLE popframe_messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    maildrop TEXT NOT NULL,
                    uid TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    stored_size INTEGER NOT NULL,
                    ready INTEGER NOT NULL,
                    parts INTEGER NOT NULL,
                    UNIQUE (maildrop, uid))""",
                """CREATE INDEX popframe_messages_listing
                    ON popframe_messages (maildrop, id, uid, size, ready)""",
                """CREATE TABLE popframe_message_parts (
                    message_id INTEGER NOT NULL
                        REFERENCES popframe_messages (id) ON DELETE CASCADE,
                    part INTEGER NOT NULL,
                    data BLOB NOT NULL,
                    PRIMARY KEY (message_id, part))""",
            ),
        },
    ),
    Migration(
        "leave-on-server and EXPIRE: messages hidden by DELE (dele=hide) and "
        "when they were retrieved; a user's own EXPIRE",
        {
            "postgresql": (
                "ALTER TABLE popframe_messages ADD COLUMN hidden BOOLEAN NOT NULL DEFAULT FALSE",
                "ALTER TABLE popframe_messages ADD COLUMN retrieved_at BIGINT",
                "ALTER TABLE popframe_users ADD COLUMN expire INTEGER",
                "DROP INDEX popframe_messages_listing",
                """CREATE INDEX popframe_messages_listing
                    ON popframe_messages (maildrop, id) INCLUDE (uid, size, ready, hidden)""",
            ),
            "mysql": (
                """ALTER TABLE popframe_messages
                    ADD COLUMN hidden BOOLEAN NOT NULL DEFAULT FALSE,
                    ADD COLUMN retrieved_at BIGINT NULL,
                    DROP KEY popframe_messages_listing,
                    ADD KEY popframe_messages_listing (maildrop, id, uid, size, ready, hidden)""",
                "ALTER TABLE popframe_users ADD COLUMN expire INT NULL",
            ),
            "sqlite": (
                "ALTER TABLE popframe_messages ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE popframe_messages ADD COLUMN retrieved_at INTEGER",
                "ALTER TABLE popframe_users ADD COLUMN expire INTEGER",
                "DROP INDEX popframe_messages_listing",
                """CREATE INDEX popframe_messages_listing
                    ON popframe_messages (maildrop, id, uid, size, ready, hidden)""",
            ),
        },
    ),
]
