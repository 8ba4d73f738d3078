"""The SQL store (``--store sql:dsn=URL``): see :mod:`.store`; its blocking
queries are in :mod:`.queries`, the database plumbing in :mod:`popframe.db`."""

from popframe.stores.sql.store import SQLMaildrop, SQLMessageBody, SQLStore, SQLStoreFactory

__all__ = ["SQLMaildrop", "SQLMessageBody", "SQLStore", "SQLStoreFactory"]
