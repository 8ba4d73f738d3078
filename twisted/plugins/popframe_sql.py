"""popframe's SQL plugins: ``--auth sql:...`` and ``--store sql:dsn=URL``."""

from popframe.auth.sql import SQLCheckerFactory
from popframe.stores.sql import SQLStoreFactory

sqlAuth = SQLCheckerFactory()
sqlStore = SQLStoreFactory()
