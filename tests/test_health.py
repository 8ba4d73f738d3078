"""``GET /health`` (popframe/ops/health.py): which databases it asks, and
its answer when they answer and when one does not."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.web.test.requesthelper import DummyRequest

from popframe.db import Database, parse_url
from popframe.ops.health import HealthPage, databases_of
from popframe.stores.leases import LeaseLocker, PostgreSQLLeases
from popframe.stores.maildir import MaildirStore
from popframe.stores.sql import SQLStore
from popframe.testing import wait_for

pytestmark = pytest.mark.core


def render(page: HealthPage) -> tuple[int, bytes]:
    request = DummyRequest([b""])
    finished = request.notifyFinish()
    page.render_GET(request)  # type: ignore[arg-type]
    wait_for(finished, timeout=10)
    return request.responseCode or 200, b"".join(request.written)


def test_finds_the_databases_behind_stores_lockers_and_checkers(tmp_path: Path) -> None:
    database = Database(parse_url(f"sqlite:///{tmp_path / 'a.db'}"))

    class CachingChecker:  # a cache wraps the checker that has the database
        checker = SQLStore(database)

    leases = PostgreSQLLeases("postgresql://nobody@127.0.0.1:1/none")
    maildir = MaildirStore(str(tmp_path / "%u"), LeaseLocker(leases))
    found = databases_of([SQLStore(database), CachingChecker(), maildir, object()])
    assert sorted(map(id, found)) == sorted([id(database), id(leases.database)])
    assert databases_of([MaildirStore(str(tmp_path / "%u"))]) == []


def test_ok_and_unavailable(tmp_path: Path) -> None:
    database = Database(parse_url(f"sqlite:///{tmp_path / 'a.db'}"))
    assert render(HealthPage([database], reactor)) == (200, b"ok\n")
    assert render(HealthPage([], reactor)) == (200, b"ok\n")
    gone = Database(parse_url("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"))
    code, body = render(HealthPage([database, gone], reactor))
    assert code == 503
    assert body == b"database postgresql://nobody@127.0.0.1:1/none does not answer\n"
