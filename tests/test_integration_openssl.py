"""STLS as ``openssl s_client -starttls pop3`` does it, certificate verified."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is installed by tests/run.sh"),
]


def test_starttls_session(mail_home, pop3_server) -> None:
    mail_home.deliver("alice", b"Subject: hi\n\nhello\n")
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "pop3", "-connect", f"127.0.0.1:{pop3_server.port}",
         "-CAfile", str(mail_home.cert), "-verify_return_error", "-quiet", "-crlf"],
        input=b"USER alice\nPASS alice password\nSTAT\nRETR 1\nQUIT\n",
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(b"\r\n") == [
        b"+OK send your password",
        b"+OK maildrop has 1 messages (22 octets)",
        b"+OK 1 22",
        b"+OK 22 octets",
        b"Subject: hi",
        b"",
        b"hello",
        b".",
        b"+OK popframe signing off (1 messages left)",
        b"",
    ]


def test_tls_1_1_refused_after_stls(mail_home, pop3_server) -> None:
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "pop3", "-connect", f"127.0.0.1:{pop3_server.port}",
         "-tls1_1", "-cipher", "ALL:@SECLEVEL=0"],
        input=b"QUIT\n", capture_output=True, timeout=30,
    )
    assert result.returncode != 0
