"""The --demo environment: what it creates, and what a rerun reuses."""

from __future__ import annotations

import datetime
import email
import email.policy
import os
import re
import shlex
import stat
from pathlib import Path

import crypt_r
import pytest
from cryptography import x509

from popframe.auth.schemes import verify_password
from popframe.config import ConfigurationError
from popframe.demo import demo_instructions, prepare_demo
from popframe.tls import load_tls_options, make_self_signed

pytestmark = pytest.mark.core

MAILDIR_NAME = re.compile(r"^\d+\.M\d{1,6}P\d+Q\d+\.[A-Za-z0-9_-]+$")


def _messages(maildir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((maildir / "new").iterdir())}


def _verify(passwd_file: Path, user: str, password: str) -> bool:
    """Check the line with libxcrypt directly, as Dovecot would."""
    (line,) = passwd_file.read_text().splitlines()
    name, stored = line.split(":", 1)
    scheme, _, hashed = stored.partition("}")
    assert scheme == "{SHA512-CRYPT" and hashed.startswith("$6$")
    return name == user and crypt_r.crypt(password, hashed) == hashed


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the first run -------------------------------------------------------------------


def test_creates_everything(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path / "demo")
    directory = tmp_path / "demo"
    assert env.directory == directory
    assert env.user == "demo"
    assert env.password == (directory / "demo-password").read_text().strip()
    assert len(env.password) >= 16
    assert env.passwd_file == directory / "users"
    assert env.maildir_template == f"{directory}/mail/%u/Maildir"
    assert env.maildir == directory / "mail" / "demo" / "Maildir"
    assert (env.cert_path, env.key_path) == (directory / "cert.pem", directory / "key.pem")

    assert _mode(directory) == 0o700
    for private in ("demo-password", "users", "key.pem"):
        assert _mode(directory / private) == 0o600, private
    assert sorted(p.name for p in directory.iterdir()) == [
        "cert.pem", "demo-password", "key.pem", "mail", "users",
    ]


def test_passwd_file_verifies(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    assert _verify(env.passwd_file, "demo", env.password)
    assert not _verify(env.passwd_file, "demo", env.password + "x")


def test_passwd_file_verifies_with_popframe(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    _, stored = env.passwd_file.read_text().strip().split(":", 1)
    assert verify_password(stored, env.password.encode())
    assert not verify_password(stored, b"wrong")


def test_maildir_holds_the_sample_mail(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    assert sorted(p.name for p in env.maildir.iterdir()) == ["cur", "new", "tmp"]
    assert list((env.maildir / "cur").iterdir()) == []
    assert list((env.maildir / "tmp").iterdir()) == []
    assert [p.name for p in env.maildir.parent.iterdir()] == ["Maildir"]  # no staging left
    messages = _messages(env.maildir)
    assert 4 <= len(messages) <= 5
    for name, data in messages.items():
        assert MAILDIR_NAME.match(name), name
        assert len(name) <= 70  # usable as the UIDL as it is
        assert all(0x21 <= ord(c) <= 0x7E for c in name)
        assert _mode(env.maildir / "new" / name) == 0o600
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        for header in ("From", "To", "Subject", "Date", "Message-ID", "Received"):
            assert parsed[header], (name, header)
        assert max(len(line) for line in data.splitlines()) <= 998
    # The Maildir order (by name) is the delivery order; the welcome comes first.
    first = email.message_from_bytes(next(iter(messages.values())), policy=email.policy.default)
    assert first["Subject"] == "Welcome to popframe"


def test_sample_mail_covers_the_edge_cases(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    messages = list(_messages(env.maildir).values())
    # a line holding a single dot (and others starting with one)
    assert any(b"\r\n.\r\n" in m and b"\r\n..\r\n" in m for m in messages)
    # bare LF line ends, and CRLF everywhere else
    bare = [m for m in messages if b"\r" not in m]
    assert len(bare) == 1 and b"\n\n" in bare[0]
    assert all(b"\n" not in m.replace(b"\r\n", b"") for m in messages if m not in bare)
    # a MIME attachment
    parsed = [email.message_from_bytes(m, policy=email.policy.default) for m in messages]
    attachments = [part for p in parsed for part in p.iter_attachments()]
    assert [a.get_filename() for a in attachments] == ["messages.csv"]
    assert attachments[0].get_content().startswith("number,subject")
    # an RFC 2047 subject
    assert any(p["Subject"].startswith("Grüße") for p in parsed)


# -- reruns --------------------------------------------------------------------------


def test_rerun_reuses_everything(tmp_path: Path) -> None:
    first = prepare_demo(tmp_path)
    cert, key = first.cert_path.read_bytes(), first.key_path.read_bytes()
    messages = _messages(first.maildir)
    second = prepare_demo(tmp_path)
    assert second == first
    assert second.cert_path.read_bytes() == cert
    assert second.key_path.read_bytes() == key
    assert _messages(second.maildir) == messages
    assert _verify(second.passwd_file, "demo", second.password)


def test_deleted_mail_stays_deleted(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    for path in (env.maildir / "new").iterdir():
        path.unlink()
    prepare_demo(tmp_path)
    assert _messages(env.maildir) == {}


def test_edited_password_is_used(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    (tmp_path / "demo-password").write_text("correct horse battery staple\n")
    again = prepare_demo(tmp_path)
    assert again.password == "correct horse battery staple"
    assert _verify(env.passwd_file, "demo", "correct horse battery staple")


def test_lost_password_gets_a_new_one(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    (tmp_path / "demo-password").unlink()
    again = prepare_demo(tmp_path)
    assert again.password != env.password
    assert _verify(env.passwd_file, "demo", again.password)


@pytest.mark.parametrize("damage", ["remove-cert", "remove-key", "other-key", "garbage"])
def test_broken_certificate_is_replaced(
    tmp_path: Path, damage: str
) -> None:
    env = prepare_demo(tmp_path)
    if damage == "remove-cert":
        env.cert_path.unlink()
    elif damage == "remove-key":
        env.key_path.unlink()
    elif damage == "other-key":
        make_self_signed(tmp_path / "x.pem", env.key_path)
    else:
        env.cert_path.write_text("garbage")
    prepare_demo(tmp_path)
    load_tls_options(str(env.cert_path), str(env.key_path))


def test_expiring_certificate_is_replaced(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path)
    make_self_signed(env.cert_path, env.key_path, days=0)
    prepare_demo(tmp_path)
    certificate = x509.load_pem_x509_certificate(env.cert_path.read_bytes())
    assert certificate.not_valid_after_utc > datetime.datetime.now(
        datetime.UTC
    ) + datetime.timedelta(days=800)


def test_relative_directory_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """twistd may chdir (to / when daemonizing) after the options are read."""
    monkeypatch.chdir(tmp_path)
    env = prepare_demo(Path("here"))
    assert env.directory == tmp_path / "here"
    assert env.maildir_template.startswith(f"{tmp_path}/here/")


# -- errors -------------------------------------------------------------------------


def test_directory_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError) as caught:
        prepare_demo(tmp_path / "file" / "demo")
    assert caught.value.key == "--demo"
    assert "cannot set up the demo" in caught.value.problem
    assert "Not a directory" in caught.value.problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigurationError) as caught:
            prepare_demo(locked)
        assert caught.value.key == "--demo"
        assert "Permission denied" in caught.value.problem
    finally:
        locked.chmod(0o700)


def test_percent_in_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        prepare_demo(tmp_path / "100%")
    assert caught.value.key == "--demo"
    assert not (tmp_path / "100%").exists()


# -- the start-up text ---------------------------------------------------------------


def test_instructions(tmp_path: Path) -> None:
    env = prepare_demo(tmp_path / "the demo")  # a space, to test the quoting
    text = demo_instructions(env, plain_port=2110, tls_port=2995)
    assert env.password in text and "demo" in text
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("  ")]
    by_program: dict[str, list[list[str]]] = {}
    for argv in commands:
        by_program.setdefault(argv[0], []).append(argv)
    stls, pop3s = by_program["curl"]
    assert stls == ["curl", "--ssl-reqd", "--cacert", str(env.cert_path),
                    "pop3://127.0.0.1:2110/", "-u", f"demo:{env.password}"]
    assert pop3s == ["curl", "--cacert", str(env.cert_path),
                     "pop3s://127.0.0.1:2995/1", "-u", f"demo:{env.password}"]
    (openssl,) = by_program["openssl"]
    assert openssl[:5] == ["openssl", "s_client", "-starttls", "pop3", "-connect"]
    assert openssl[5] == "127.0.0.1:2110"
    (python,) = by_program["python3"]
    assert python[1] == "-c"
    code = python[2]
    compile(code, "<demo>", "exec")
    assert f'"{env.cert_path}"' in code and "2995" in code and env.password in code


def test_instructions_default_ports(tmp_path: Path) -> None:
    text = demo_instructions(prepare_demo(tmp_path))
    assert "pop3://127.0.0.1:1110/" in text
    assert "pop3s://127.0.0.1:1995/1" in text
