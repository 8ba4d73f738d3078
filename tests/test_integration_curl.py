"""The whole server over real sockets, driven by curl (plain, STLS, pop3s)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

MESSAGES = [
    b"From: a@example.org\nSubject: one\n\nHello from curl\n.dotted\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nsecond\r\n",
]

pytestmark = [pytest.mark.process, pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by tests/run.sh")]


def crlf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def alice(mail_home, pop3_server):
    for message in MESSAGES:
        mail_home.deliver("alice", message)
    return pop3_server


def curl(mail_home, url: str, *args: str) -> bytes:
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20",
         "--cacert", str(mail_home.cert), "--user", "alice:alice password", *args, url],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def test_list_and_retrieve_plain(mail_home, alice) -> None:
    listing = curl(mail_home, f"pop3://127.0.0.1:{alice.port}/")
    assert listing == b"1 %d\r\n2 %d\r\n" % (len(crlf(MESSAGES[0])), len(crlf(MESSAGES[1])))
    assert curl(mail_home, f"pop3://127.0.0.1:{alice.port}/1") == crlf(MESSAGES[0])


def test_retrieve_over_stls_required(mail_home, alice) -> None:
    assert curl(mail_home, f"pop3://127.0.0.1:{alice.port}/2", "--ssl-reqd") == crlf(MESSAGES[1])


def test_retrieve_over_implicit_tls(mail_home, alice) -> None:
    assert curl(mail_home, f"pop3s://127.0.0.1:{alice.tls_port}/1") == crlf(MESSAGES[0])


def test_dele_then_quit_removes_the_file(mail_home, alice) -> None:
    curl(mail_home, f"pop3://127.0.0.1:{alice.port}/", "--request", "DELE 1", "--head")
    assert mail_home.messages("alice") == [MESSAGES[1]]


def test_bad_password_fails(mail_home, alice) -> None:
    result = subprocess.run(
        ["curl", "--silent", "--max-time", "20", "--user", "alice:wrong",
         f"pop3://127.0.0.1:{alice.port}/1"],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 67  # CURLE_LOGIN_DENIED


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_sasl_login_options(mail_home, alice, mechanism: str) -> None:
    url = f"pop3://127.0.0.1:{alice.port}/1"
    assert curl(mail_home, url, "--ssl-reqd", "--login-options", f"AUTH={mechanism}") == crlf(
        MESSAGES[0]
    )
    assert curl(mail_home, url, "--login-options", f"AUTH={mechanism}", "--sasl-ir") == crlf(
        MESSAGES[0]
    )
