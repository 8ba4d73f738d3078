"""The database goes down under a running server, for real: logins get
``-ERR [SYS/TEMP]`` promptly, and service comes back by itself when the
database does.  The database server is running again at the end of each
test, whatever happens in it."""

from __future__ import annotations

import os
import poplib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sql_support import ADMIN_URLS, admin_connection, fresh_database, unavailable

from popframe.auth.schemes import make_hash
from popframe.cli.user import add_user
from popframe.db import Database, parse_url
from popframe.testing import start_server, wait_until

pytestmark = pytest.mark.external

PASSWORD = "outage test"
#: How long a login may take to be refused while the database is down.
PROMPT = 5.0


def postgresql_control(action: str) -> None:
    versions = os.listdir("/etc/postgresql")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", action],
                   check=True, capture_output=True, timeout=60)


def mariadb_control(action: str) -> None:
    if action == "stop":
        subprocess.run(["mariadb-admin", "-uroot", "--protocol=socket", "shutdown"], check=True,
                       capture_output=True, timeout=60)
    else:  # how this machine starts it
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                        "/usr/sbin/mariadbd"], check=True, capture_output=True, timeout=60)


CONTROLS: dict[str, tuple[str, Callable[[str], None]]] = {
    "postgresql": ("pg_ctlcluster", postgresql_control),
    "mysql": ("mariadb-admin", mariadb_control),
}


def wait_until_up(engine: str, seconds: float = 60) -> None:
    """Until the server takes connections again (MariaDB's start returns
    before it listens).  Connects directly: ``admin_connection`` would
    skip (or, in CI, fail) at the first refusal instead of retrying."""
    url = parse_url(ADMIN_URLS[engine])
    wait_until(lambda: Database(url).engine.connect().close() or True, f"{engine} to be up",
               seconds, interval=0.2, retry_on=(Exception,))


@pytest.fixture(params=["postgresql", "mysql"])
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    tool, control = CONTROLS[request.param]
    if shutil.which(tool) is None or os.geteuid() != 0:
        unavailable(f"restarting {request.param} needs root and {tool}")
    yield request.param
    try:
        admin_connection(request.param).close()
    except BaseException:
        control("start")
        wait_until_up(request.param)


def try_login(port: int) -> tuple[bool, bytes, float]:
    started = time.monotonic()
    try:
        client = poplib.POP3("127.0.0.1", port, timeout=30)
        client.user("alice")
        client.pass_(PASSWORD)
        count = client.stat()[0]
        client.quit()
        return True, str(count).encode(), time.monotonic() - started
    except poplib.error_proto as error:
        return False, error.args[0], time.monotonic() - started


def test_outage_is_sys_temp_and_service_returns(engine: str, tmp_path: Path) -> None:
    _, control = CONTROLS[engine]
    with fresh_database(engine) as url:
        database = Database(parse_url(url))
        database.call(add_user, "alice", make_hash("SHA512-CRYPT", PASSWORD.encode(), rounds=1000))
        database.close()
        server = start_server(["--listen", "tcp:0:interface=127.0.0.1", "--store",
                               f"sql:dsn={url}?connect_timeout=2&timeout=3", "--auth",
                               f"sql:dsn={url}?connect_timeout=2&timeout=3", "--workers", "1"],
                              tmp_path)
        try:
            assert try_login(server.port)[:2] == (True, b"0")
            control("stop")
            try:
                ok, reply, took = try_login(server.port)
                assert not ok and b"[SYS/TEMP]" in reply, reply
                assert took < PROMPT, f"refused after {took:.1f} s"
            finally:
                control("start")
                wait_until_up(engine)
            # The pool's connections died with the server: the first use of
            # each is run again on a new one, so the first login works.
            ok, reply, _ = try_login(server.port)
            assert ok, reply
            assert try_login(server.port)[:2] == (True, b"0")
        finally:
            server.stop()
        log = server.log.read_text()
        assert "available again" in log
