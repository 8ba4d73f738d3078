"""Watching a real ``twistd pop3``: the --metrics page scraped over HTTP
after real sessions, its values checked (one process, and --workers 2
with sessions pinned to each worker, and a worker killed), the logout
line after each way a real session ends, and the logs as JSON."""

from __future__ import annotations

import json
import os
import poplib
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MailHome, server_args, start_server
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families
from support.clients import pop3_login
from test_workers import Pool, only, start_pool

from popframe.protocol.encoding import wire_size
from popframe.testing import POP3, TWISTD, run_twistd, wait_until

pytestmark = pytest.mark.process

#: The name other test modules import (tests/test_autoconfig.py, ...).
wait_for = wait_until

MESSAGES = [b"Subject: one\r\n\r\nhello\r\n", b"Subject: two\n\nsecond\n.dot\n"]
WAIT = 30.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_port(log: Path) -> int:
    found = wait_until(lambda: re.search(r"popframe metrics starting on (\d+)",
                                       log.read_text(errors="replace")), "the metrics port")
    return int(found.group(1))


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        page = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return page, samples


def scrape_until(port: int, done: Callable[[Samples], bool], what: str) -> Samples:
    def scraped() -> Samples | None:
        samples = scrape(port)[1]
        return samples if done(samples) else None

    found: Samples = wait_until(scraped, what)
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def promtool_check(page: str) -> None:
    """Prometheus' own linter on the page (naming, units, help)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (tests/run.sh installs the prometheus package)")
        return
    checked = subprocess.run([promtool, "check", "metrics"], input=page.encode(),
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
def home(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    mail_home.add_user("bob", "bob password")
    for message in MESSAGES:
        mail_home.deliver("alice", message)
    return mail_home


def tls_client(port: int) -> poplib.POP3_SSL:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=10)


# -- the metrics page, one process ----------------------------------------------------


@pytest.mark.external
def test_metrics_after_real_sessions(home: MailHome) -> None:
    server = start_server(server_args(home, "--metrics", "tcp:0:interface=127.0.0.1",
                                      "--throttle-base", "0"), home.root, listeners=2)
    try:
        port = metrics_port(server.log)
        # A session that reads everything and deletes one message.
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("alice password")
        client.retr(1)
        client.retr(2)
        client.dele(1)
        client.quit()
        # A wrong password, then QUIT.
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("bob")
        with pytest.raises(poplib.error_proto):
            client.pass_("wrong")
        client.quit()
        # Implicit TLS.
        client = tls_client(server.tls_port)
        client.user("bob")
        client.pass_("bob password")
        client.quit()
        # One session left open, and a second login to its maildrop.
        held = poplib.POP3("127.0.0.1", server.port, timeout=10)
        held.user("alice")
        held.pass_("alice password")
        conflict = poplib.POP3("127.0.0.1", server.port, timeout=10)
        conflict.user("alice")
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            conflict.pass_("alice password")
        conflict.quit()

        def settled() -> Any:
            page, samples = scrape(port)
            return (page, samples) if total(samples, "popframe_sessions_total") == 4 else None

        page, samples = wait_until(settled, "4 ended sessions on the page")
        octets = wire_size(MESSAGES[0]) + wire_size(MESSAGES[1]) + 1  # a stuffed dot
        assert value(samples, "popframe_sessions_total", listener="tcp:0", tls="no", end="QUIT") == 3
        tls_ended = [dict(ls) for (n, ls), v in samples.items()
                     if n == "popframe_sessions_total" and dict(ls)["listener"] == "ssl:0"]
        assert tls_ended == [{"listener": "ssl:0", "tls": "TLSv1.3", "end": "QUIT"}]
        assert value(samples, "popframe_sessions_open", listener="tcp:0", tls="no") == 1
        assert value(samples, "popframe_sessions_open", listener="ssl:0", tls="yes") == 0
        assert value(samples, "popframe_logins_total", mechanism="USER", result="ok") == 3
        assert value(samples, "popframe_logins_total", mechanism="USER", result="failed") == 1
        assert value(samples, "popframe_logins_total", mechanism="USER", result="in-use") == 1
        assert value(samples, "popframe_lock_conflicts_total") == 1
        assert value(samples, "popframe_messages_retrieved_total", command="RETR") == 2
        assert value(samples, "popframe_retrieved_bytes_total", command="RETR") == octets
        assert value(samples, "popframe_deletions_committed_total") == 1
        assert value(samples, "popframe_retr_duration_seconds_count") == 2
        assert value(samples, "popframe_login_duration_seconds_count", result="ok") == 3
        assert value(samples, "popframe_login_duration_seconds_bucket", result="ok", le="+Inf") == 3
        assert value(samples, "popframe_backend_errors_total") == 0
        certificate = x509.load_pem_x509_certificate(home.cert.read_bytes())
        labels = frozenset({"path": str(home.cert), "name": "localhost"}.items())
        assert samples.get(("popframe_tls_certificate_expiry_timestamp_seconds", labels)
                           ) == certificate.not_valid_after_utc.timestamp()
        assert value(samples, "popframe_build_info", version=__import__("popframe").__version__) == 1
        promtool_check(page)
        held.quit()
    finally:
        server.stop()


# -- the metrics page, --workers 2 ------------------------------------------------------


def test_one_view_across_workers(home: MailHome) -> None:
    args = server_args(home, "--metrics", "tcp:0:interface=127.0.0.1")
    args = args[:args.index("--workers")] + args[args.index("--workers") + 2:]
    pool: Pool = start_pool(args, home.root, 2)
    try:
        port = metrics_port(pool.log)

        def sessions(count: int) -> None:
            for _ in range(count):
                client = pop3_login(pool.port(), "bob")
                client.stat()
                client.quit()

        def logins(samples: Samples) -> float:
            return value(samples, "popframe_logins_total", mechanism="USER", result="ok")

        with only(pool, 1):
            sessions(2)
        with only(pool, 2):
            sessions(3)
        samples = scrape_until(
            port, lambda s: logins(s) == 5 and total(s, "popframe_sessions_total") == 5,
            "5 sessions over both workers")
        assert total(samples, "popframe_sessions_open") == 0
        def served(text: str) -> dict[int, int] | None:
            """Logins per worker, once the log has all five (a worker's
            lines reach it up to workers.LOG_PAUSE after the metrics)."""
            found = {w: len(re.findall(rf"\[worker-{w} popframe\.server#info\] login ok", text))
                     for w in (1, 2)}
            return found if sum(found.values()) == 5 else None

        assert pool.wait(served, "five login lines") == {1: 2, 2: 3}
        # A stopped worker does not hold the page up beyond the timeout.
        stopped = pool.pids()[2]
        os.kill(stopped, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert logins(scrape(port)[1]) == 5
            assert time.monotonic() - started < 5
        finally:
            os.kill(stopped, signal.SIGCONT)
        # A killed worker's counts stay; its restart is counted.
        os.kill(pool.pids()[1], signal.SIGKILL)
        pool.wait_ready(1, replacing=pool.pids()[1])
        with only(pool, 1):
            sessions(1)
        samples = scrape_until(port, lambda s: logins(s) == 6, "6 logins after a worker was killed")
        assert value(samples, "popframe_worker_restarts_total") == 1
    finally:
        pool.stop()


# -- the logout line on a real server ---------------------------------------------------


def logout_lines(log: Path) -> list[str]:
    return re.findall(r"\[popframe\.session#info\] (session ended .*)", log.read_text())


def test_logout_line_after_each_way_a_real_session_ends(home: MailHome) -> None:
    server = start_server(server_args(home, "--idle-timeout", "1", "--allow-short-idle-timeout",
                                      "--max-auth-failures", "1",
                                      "--throttle-base", "0"), home.root, listeners=2)
    try:
        def ended(count: int) -> list[str]:
            def enough() -> list[str] | None:
                lines = logout_lines(server.log)
                return lines if len(lines) >= count else None

            found: list[str] = wait_until(enough, f"{count} logout lines")
            return found

        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("alice password")
        client.retr(2)
        client.quit()
        assert re.fullmatch(
            r"session ended user='alice' peer=127\.0\.0\.1:\d+ listener=tcp:0 tls=- "
            rf"mechanism=USER retr=1/{wire_size(MESSAGES[1]) + 1} top=0/0 deleted=0 end=QUIT "
            r"duration=\d+\.\d{3}s", ended(1)[0])

        client = tls_client(server.tls_port)  # dropped: no QUIT
        client.user("bob")
        client.pass_("bob password")
        client.close()  # the socket, without QUIT
        assert re.search(r"user='bob' .* listener=ssl:0 tls=TLSv1\.3 mechanism=USER .* "
                         r"end=dropped ", ended(2)[1])

        client = poplib.POP3("127.0.0.1", server.port, timeout=10)  # idle 1 s
        client.user("alice")
        client.pass_("alice password")
        assert client.file.readline() == b"-ERR disconnected for inactivity\r\n"
        client.close()
        assert " end=timeout " in ended(3)[2]

        client = poplib.POP3("127.0.0.1", server.port, timeout=10)  # --max-auth-failures 1
        client.user("bob")
        with pytest.raises(poplib.error_proto, match="too many failures"):
            client.pass_("wrong")
        client.close()
        assert "user=- " in ended(4)[3] and " end=too-many-failures " in ended(4)[3]
    finally:
        server.stop()
    # A session still in progress when the stop's grace is over (SIGTERM).
    server = start_server(server_args(home, "--shutdown-grace", "0.5"), home.root, listeners=2)
    try:
        held = poplib.POP3("127.0.0.1", server.port, timeout=10)
        held.user("alice")
        held.pass_("alice password")
        server.stop()
        held.close()
        [line] = logout_lines(server.log)
        assert "user='alice' " in line and " end=shutdown " in line
        for secret in ("alice password", "bob password"):
            assert secret not in server.log.read_text()
    finally:
        server.stop()


def json_events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@pytest.mark.parametrize("how", ["--log-format", "--logger"])
def test_json_logs(home: MailHome, how: str) -> None:
    if how == "--log-format":
        server = start_server(server_args(home, "--log-format", "json"), home.root, listeners=2)
    else:
        server = start_server(server_args(home), home.root, listeners=2,
                              twistd=[*TWISTD, "--logger", "popframe.ops.logformat.json_stdout"])
    try:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("alice password")
        client.retr(1)
        client.quit()

        def logout() -> Any:
            return [e for e in json_events(server.log) if e.get("end")]

        [event] = wait_until(logout, "the logout event")
        assert event["user"] == "alice" and event["end"] == "QUIT"
        assert event["retrieved"] == 1 and event["retrieved_octets"] == wire_size(MESSAGES[0])
        assert event["tls"] is None and event["listener"] == "tcp:0"
        assert event["level"] == "info" and event["system"] == "popframe.session"
        assert event["message"].startswith("session ended user='alice'")
        lines = [line for line in server.log.read_text().splitlines() if line.strip()]
        assert all(line.startswith("{") for line in lines), lines[:3]
    finally:
        server.stop()


def test_json_logs_from_workers(home: MailHome) -> None:
    args = server_args(home, "--log-format", "json")
    args[args.index("--workers") + 1] = "2"
    server = start_server(args, home.root, listeners=2)
    try:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("bob")
        client.pass_("bob password")
        client.quit()
        [event] = wait_until(lambda: [e for e in json_events(server.log) if e.get("end")],
                           "the logout event")
        assert event["user"] == "bob" and event["system"].startswith("worker-")
        assert isinstance(event["popframe_worker"], int)
    finally:
        server.stop()


def test_metrics_endpoint_errors_are_one_line(home: MailHome) -> None:
    done = run_twistd(*POP3, *server_args(home, "--metrics", "bogus:1"), cwd=home.root)
    assert done.returncode != 0
    assert "popframe: --metrics: 'bogus:1':" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.core
def test_options_check_the_new_values(home: MailHome) -> None:
    from twisted.python import usage

    from popframe.tap import Options

    base = server_args(home)
    for bad, message in ((["--max-connections", "-1"], "--max-connections: must not be negative"),
                         (["--trusted-networks", "10.0.0.0/33"], "--trusted-networks: '10.0.0.0/33'"),
                         (["--log-format", "xml"], "--log-format: 'xml': use text or json")):
        with pytest.raises(usage.UsageError, match=re.escape(message)):
            Options().parseOptions([*base, *bad])
