"""Real mail clients no one here wrote, against a real server: fetchmail,
mpop and getmail6 download every message over STLS or implicit TLS,
verifying the certificate, and leave the maildrop as it was (keep)."""

from __future__ import annotations

import mailbox
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

MESSAGES = [
    b"From: a@example.org\nTo: alice@example.org\nSubject: first\nMessage-ID: <1@example.org>\n\n"
    b"Hello from the first message\n.a line starting with a dot\n",
    b"From: b@example.org\r\nTo: alice@example.org\r\nSubject: second\r\n"
    b"Message-ID: <2@example.org>\r\n\r\nSecond body\r\n",
    b"From: c@example.org\nSubject: third\nMessage-ID: <3@example.org>\n\nno final newline",
]
BODIES = [b"Hello from the first message", b"Second body", b"no final newline"]


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: tests/run.sh installs it")
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it)")


@pytest.fixture
def alice(mail_home, pop3_server):
    for message in MESSAGES:
        mail_home.deliver("alice", message)
    return pop3_server


def empty_maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def delivered(maildir: Path) -> list[bytes]:
    box = mailbox.Maildir(str(maildir), create=False)
    return sorted((bytes(message) for message in box), key=lambda m: m.count(b"x"))


def assert_all_downloaded(maildir: Path) -> None:
    messages = [bytes(m) for m in mailbox.Maildir(str(maildir), create=False)]
    assert len(messages) == len(MESSAGES)
    for body in BODIES:
        assert sum(body in message for message in messages) == 1
    assert any(b"\n.a line starting with a dot" in m for m in messages)  # unstuffed


def delivery_script(tmp_path: Path, maildir: Path) -> Path:
    """An MDA that stores stdin as one message in ``maildir``."""
    script = tmp_path / "deliver.py"
    script.write_text(
        "import mailbox, sys\n"
        f"mailbox.Maildir({str(maildir)!r}).add(sys.stdin.buffer.read())\n"
    )
    return script


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def run(command: list[str], home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run(command, capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result


def test_fetchmail_over_stls(tmp_path, mail_home, alice) -> None:
    require("fetchmail")
    out = empty_maildir(tmp_path / "out")
    rc = private_file(tmp_path / "fetchmailrc", f"""
poll 127.0.0.1 with proto POP3 port {alice.port} and options no dns
  user "alice" there with password "alice password" is "root" here
  options keep fetchall sslproto "tls1.2+" sslcertck sslcertfile "{mail_home.cert}"
  sslcommonname "localhost"
  mda "python3 {delivery_script(tmp_path, out)}"
""")
    run(["fetchmail", "--nosyslog", "--fetchmailrc", str(rc), "--pidfile", str(tmp_path / "pid")],
        tmp_path)
    assert_all_downloaded(out)
    assert len(mail_home.messages("alice")) == len(MESSAGES)  # keep: nothing deleted


def test_mpop_over_stls_with_auth_plain(tmp_path, mail_home, alice) -> None:
    require("mpop")
    out = empty_maildir(tmp_path / "out")
    rc = private_file(tmp_path / "mpoprc", f"""
account test
host 127.0.0.1
port {alice.port}
user alice
password alice password
auth plain
tls on
tls_starttls on
tls_trust_file {mail_home.cert}
keep on
delivery maildir {out}
""")
    run(["mpop", "--file", str(rc), "--quiet", "test"], tmp_path)
    assert_all_downloaded(out)
    assert len(mail_home.messages("alice")) == len(MESSAGES)


def test_mpop_auth_login_and_uidl_tracking(tmp_path, mail_home, alice) -> None:
    require("mpop")
    out = empty_maildir(tmp_path / "out")
    rc = private_file(tmp_path / "mpoprc", f"""
account test
host 127.0.0.1
port {alice.tls_port}
user alice
password alice password
auth login
tls on
tls_starttls off
tls_trust_file {mail_home.cert}
keep on
only_new on
uidls_file {tmp_path / "uidls"}
delivery maildir {out}
""")
    run(["mpop", "--file", str(rc), "--quiet", "test"], tmp_path)
    assert_all_downloaded(out)
    run(["mpop", "--file", str(rc), "--quiet", "test"], tmp_path)  # UIDL: nothing new
    assert len(list(mailbox.Maildir(str(out), create=False))) == len(MESSAGES)


def test_getmail_over_implicit_tls(tmp_path, mail_home, alice) -> None:
    require("getmail")
    out = empty_maildir(tmp_path / "out")
    rc = private_file(tmp_path / "getmailrc", f"""
[retriever]
type = SimplePOP3SSLRetriever
server = 127.0.0.1
port = {alice.tls_port}
username = alice
password = alice password
ca_certs = {mail_home.cert}

[destination]
type = MDA_external
path = {shutil.which("python3")}
arguments = ("{delivery_script(tmp_path, out)}",)
allow_root_commands = true

[options]
delete = false
read_all = true
verbose = 0
""")
    run(["getmail", "--rcfile", str(rc), "--getmaildir", str(tmp_path)], tmp_path)
    assert_all_downloaded(out)
    assert len(mail_home.messages("alice")) == len(MESSAGES)
