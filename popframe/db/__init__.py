"""The one place for databases: URLs (:mod:`.url`), what differs between
engines (:mod:`.engines`), the connection pool (:mod:`.pool`), PostgreSQL
on the reactor thread (:mod:`.pq`), the schema and its migrations
(:mod:`.schema`, :mod:`.migrations`), and maildrop locks that hold across
hosts (:mod:`.locks`).  The SQL checker, the SQL store and
the ``popframe db`` / ``popframe user`` commands all go through it: one URL
parser, and one pool per database per process.
"""

from popframe.db.configured import configured_database, open_database
from popframe.db.pool import Database, DatabaseError, Rows, Session, database_for
from popframe.db.url import DatabaseURL, parse_url

__all__ = ["Database", "DatabaseError", "DatabaseURL", "Rows", "Session", "configured_database",
           "database_for", "open_database", "parse_url"]
