"""popframe with its SQL store and SQL users, for ``run.py --servers``:

- ``sql-postgresql``: PostgreSQL at 127.0.0.1:5432 (user postgres), a
  database ``popbench_<random>`` made for the run and dropped after;
- ``sql-mariadb``: MariaDB at 127.0.0.1:3306 (root), likewise;
- ``sql-sqlite``: a file in the server's directory;

each optionally with ``-wN`` (``--workers N``), ``+cache``
(``--auth-cache-ttl 3600``), ``+socket`` and ``+py=PYTHON`` (another
interpreter, as for ``popframe``), e.g. ``sql-postgresql-w2``.  The server runs
``--store sql:dsn=URL --auth sql:dsn=URL``; the corpus's passwd-file is
loaded into ``popframe_users`` (the same SHA512-CRYPT fields) and each
user's maildir into ``popframe_messages`` by ``benchmarks/sql_load.py``,
UIDLs being the maildir base names, so the load generator checks the same
things as for the Maildir store.  "Copying" a user's maildir (run.py does
before the timed runs, and for drain+dele) reloads its rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import servers as srv

HERE = Path(__file__).resolve().parent
ADMIN = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/{db}",
    "mariadb": "mysql://root@127.0.0.1:3306/{db}",
}
#: ``+socket``: the same servers over their Unix-domain sockets.
SOCKET = {
    "postgresql": "postgresql://postgres@/{db}?socket=/var/run/postgresql",
    "mariadb": "mysql://root@/{db}?socket=/run/mysqld/mysqld.sock",
}


class SQLPopframe(srv.Popframe):
    def __init__(self, engine: str, workdir: Path, corpus: Path, workers: int | None,
                 src: Path, auth_cache: bool, revision: str | None = None,
                 socket: bool = False, python: str | None = None) -> None:
        super().__init__(workdir, corpus, workers=workers, src=src, auth_cache=auth_cache,
                         python=python)
        self.engine = engine
        self.socket = socket  # popframe talks to the database over its Unix-domain socket
        self.name = f"sql-{engine}" + (f"-w{workers}" if workers else "") + \
            ("+cache" if auth_cache else "") + ("+socket" if socket else "") + \
            (f"+py={python}" if python else "") + (f"@{revision}" if revision else "")
        self.dir = workdir / self.name
        self.log = self.dir / "server.log"
        self.maildirs = self.dir / "maildirs"  # unused: the mail is in the database
        self.database = f"popbench_{uuid.uuid4().hex[:10]}"
        self.dsn = ""

    def _python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], env=self.env(), check=check,
                              capture_output=True, text=True)

    def _admin(self, statement: str) -> None:
        code = ("import sys; from popframe.db import Database, parse_url; "
                "c = Database(parse_url(sys.argv[1])).engine.connect(); "
                "c.cursor().execute(sys.argv[2]); c.close()")
        self._python("-c", code, ADMIN[self.engine].format(db="test"), statement)

    def prepare(self) -> None:
        if self.engine == "sqlite":
            self.dsn = f"sqlite:///{self.dir / 'mail.db'}"
        else:
            self._admin(f"CREATE DATABASE {self.database}")
            self.dsn = (SOCKET if self.socket else ADMIN)[self.engine].format(db=self.database)
        self._python(str(HERE / "sql_load.py"), "--dsn", self.dsn, "--corpus", str(self.corpus),
                     "schema")

    def command(self) -> list[str]:
        cmd = super().command()
        store = cmd.index("--store")
        cmd[store + 1] = f"sql:dsn={self.dsn}"
        auth = cmd.index("--auth")
        cmd[auth + 1] = f"sql:dsn={self.dsn}"
        return cmd

    def copy_users(self, users: list[str]) -> float:
        import time

        started = time.monotonic()
        for i in range(0, len(users), 100):
            self._python(str(HERE / "sql_load.py"), "--dsn", self.dsn, "--corpus",
                         str(self.corpus), "load", *users[i:i + 100])
        return time.monotonic() - started

    def remaining_messages(self, users: list[str]) -> int:
        out = self._python(str(HERE / "sql_load.py"), "--dsn", self.dsn, "--corpus",
                           str(self.corpus), "count", *users)
        return int(out.stdout.strip())

    def database_cpu(self) -> float:
        """The database server's CPU seconds (all its processes, so other
        users of the same server count too: run when nothing else does)."""
        pidfile = {"postgresql": [*Path("/var/lib/postgresql").glob("*/main/postmaster.pid")],
                   "mariadb": [Path("/run/mysqld/mysqld.pid")]}.get(self.engine, [])
        for path in pidfile:
            try:
                return srv.tree_cpu(int(path.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return 0.0

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": f"{self.src}{os.pathsep}{HERE}"}

    def stop(self) -> None:
        super().stop()
        if self.engine != "sqlite" and self.dsn:
            drop = f"DROP DATABASE IF EXISTS {self.database}"
            self._admin(drop + (" WITH (FORCE)" if self.engine == "postgresql" else ""))
            self.dsn = ""


def make_sql_server(kind: str, workdir: Path, corpus: Path, src: Path,
                    revision: str | None = None) -> SQLPopframe:
    base, *options = kind.split("+")
    pythons = [o[len("py="):] for o in options if o.startswith("py=")]
    if set(options) - {"cache", "socket", *(f"py={p}" for p in pythons)} or len(pythons) > 1:
        raise ValueError(f"unknown server {kind!r}")
    engine, _, workers = base[len("sql-"):].partition("-w")
    if engine not in ("postgresql", "mariadb", "sqlite") or (workers and not workers.isdigit()):
        raise ValueError(f"unknown server {kind!r}")
    return SQLPopframe(engine, workdir, corpus, int(workers) if workers else None, src,
                       "cache" in options, revision, socket="socket" in options,
                       python=pythons[0] if pythons else None)
