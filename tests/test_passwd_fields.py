"""Dovecot passwd-file extra fields that matter to POP3: nologin (with
reason), allow_nets, userdb_home/userdb_mail as the maildrop,
userdb_uid/userdb_gid, nopassword, noauthenticate; and the refusal to
start on a field popframe cannot honour."""

from __future__ import annotations

import os
import poplib
from pathlib import Path

import pytest
from conftest import MailHome, server_args, start_server
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

from popframe.auth.passwdfile import (
    PasswdFileChecker,
    PasswdFileCheckerFactory,
    UnsupportedField,
    parse_passwd,
)
from popframe.auth.restrictions import (
    LoginDisabled,
    NetworkNotAllowed,
    check_restrictions,
    parse_networks,
)
from popframe.auth.schemes import make_hash
from popframe.config import ConfigurationError
from popframe.interfaces import UserSettings
from popframe.stores import run_synchronously
from popframe.stores.location import WrongMaildrop
from popframe.stores.maildir import MaildirStore
from popframe.testing import result_of

pytestmark = pytest.mark.core


class Peer:
    def __init__(self, host: str) -> None:
        self.host = host


def settings(line: str) -> UserSettings | None:
    checker = PasswdFileChecker(_file(line), run_blocking=run_synchronously)
    return result_of(checker.user_settings(line.split(":")[0]))


_files: list[Path] = []


def _file(text: str) -> str:
    import tempfile
    fd, path = tempfile.mkstemp()
    os.write(fd, text.encode() + b"\n")
    os.close(fd)
    _files.append(Path(path))
    return path


@pytest.fixture(autouse=True)
def _cleanup() -> None:
    yield
    while _files:
        _files.pop().unlink(missing_ok=True)


# -- parsing and settings ------------------------------------------------------------


def test_dovecot_lines_become_settings() -> None:
    line = ("alice:{PLAIN}pw:1000:1000::/home/alice::userdb_mail=maildir:~/Maildir "
            "nologin reason=Account\\x20moved allow_nets=192.0.2.0/24,::1 login_delay=60 "
            "expire=30")
    got = settings(line)
    assert got == UserSettings(login_delay=60, expire=30, maildrop="/home/alice/Maildir",
                               maildrop_kind="maildir", uid=1000, gid=1000,
                               home="/home/alice",
                               login_refused="Account\\x20moved",
                               allowed_networks=("192.0.2.0/24", "::1/128"))


def test_userdb_home_and_mbox_location() -> None:
    got = settings("bob:{PLAIN}pw::::::userdb_home=/srv/bob userdb_mail=mbox:~/inbox "
                   "userdb_uid=5000 userdb_gid=5001")
    assert got is not None
    assert (got.maildrop, got.maildrop_kind, got.uid, got.gid) == ("/srv/bob/inbox", "mbox",
                                                                   5000, 5001)
    absolute = settings("carol:{PLAIN}pw::::::mail=maildir:/var/vmail/carol:INDEX=/tmp/x")
    assert absolute is not None and absolute.maildrop == "/var/vmail/carol"
    assert settings("dan:{PLAIN}pw:::::/bin/sh:") == UserSettings()


@pytest.mark.parametrize(("extra", "field"), [
    ("userdb_quota_rule=*:storage=1G", "userdb_quota_rule"),
    ("proxy", "proxy"),
    ("allow_nets=10.0.0.0/33", "allow_nets"),
    ("login_delay=soon", "login_delay"),
    ("userdb_mail=sdbox:~/dbox", "userdb_mail"),
    ("userdb_mail=maildir:~/Maildir", "userdb_mail"),  # ~ without a home
    ("userdb_mail=maildir:Maildir", "userdb_mail"),
])
def test_a_field_popframe_cannot_honour_stops_the_start(extra: str, field: str) -> None:
    text = "# users\nok:{PLAIN}pw\n" + f"dave:{{PLAIN}}pw::::::{extra}"
    with pytest.raises(UnsupportedField) as raised:
        parse_passwd(text.encode(), "/etc/users")
    assert str(raised.value).startswith(f"/etc/users:3: field {field!r}: ")
    path = _file(text)
    with pytest.raises(ConfigurationError) as refused:
        PasswdFileCheckerFactory().generateChecker(path)
    assert f"{path}:3: field {field!r}" in str(refused.value)


def test_nopassword_and_noauthenticate() -> None:
    path = _file("open:::::::nopassword\nshadow:{PLAIN}pw::::::noauthenticate")
    checker = PasswdFileChecker(path, run_blocking=run_synchronously)
    assert result_of(checker.requestAvatarId(UsernamePassword(b"open", b"anything"))) == b"open"
    with pytest.raises(UnauthorizedLogin):
        result_of(checker.requestAvatarId(UsernamePassword(b"shadow", b"pw")))
    assert result_of(checker.user_settings("shadow")) == UserSettings()  # still a userdb


def test_restrictions() -> None:
    check_restrictions(UserSettings(), Peer("192.0.2.1"))
    with pytest.raises(LoginDisabled) as disabled:
        check_restrictions(UserSettings(login_refused="moved to imap.example.org"), Peer("::1"))
    assert disabled.value.message == "moved to imap.example.org"
    with pytest.raises(LoginDisabled) as plain:
        check_restrictions(UserSettings(login_refused=""), Peer("::1"))
    assert plain.value.message == LoginDisabled.default_message
    nets = parse_networks("192.0.2.0/24, 2001:db8::/32")
    check_restrictions(UserSettings(allowed_networks=nets), Peer("192.0.2.77"))
    check_restrictions(UserSettings(allowed_networks=nets), Peer("::ffff:192.0.2.7"))
    check_restrictions(UserSettings(allowed_networks=nets), Peer("2001:db8::1"))
    with pytest.raises(NetworkNotAllowed):
        check_restrictions(UserSettings(allowed_networks=nets), Peer("198.51.100.1"))
    with pytest.raises(NetworkNotAllowed):
        check_restrictions(UserSettings(allowed_networks=nets), object())  # a UNIX socket
    check_restrictions(UserSettings(allowed_networks=("local",)), object())


def test_maildir_store_honours_location_and_owner(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    for sub in ("cur", "new", "tmp"):
        (elsewhere / sub).mkdir(parents=True)
    (elsewhere / "new" / "1.M1.host").write_bytes(b"Subject: x\n\nbody\n")
    store = MaildirStore(str(tmp_path / "mail" / "%u"), run_blocking=run_synchronously)
    mine = UserSettings(maildrop=str(elsewhere), maildrop_kind="maildir", uid=os.getuid())
    maildrop = result_of(store.open("alice", mine))
    assert len(maildrop.listing()) == 1
    result_of(maildrop.abandon())
    with pytest.raises(WrongMaildrop):
        result_of(store.open("alice", UserSettings(maildrop=str(elsewhere),
                                                   uid=os.getuid() + 1)))
    with pytest.raises(WrongMaildrop):
        result_of(store.open("alice", UserSettings(maildrop=str(elsewhere),
                                                   maildrop_kind="mbox")))
    assert not (tmp_path / "mail").exists()


# -- a real server -------------------------------------------------------------------


def _add(home: MailHome, line: str) -> None:
    with open(home.passwd_file, "a") as f:
        f.write(line + "\n")


def _login(port: int, user: str, password: str = "pw", before: bytes = b"") -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    if before:
        client._putcmd(before.decode())  # type: ignore[attr-defined]
        assert client._getresp().startswith(b"+OK")  # type: ignore[attr-defined]
    client.user(user)
    client.pass_(password)
    return client


@pytest.mark.process
def test_real_server_honours_the_fields(mail_home: MailHome) -> None:
    home = mail_home.root / "homes" / "erin"
    for sub in ("cur", "new", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    (home / "Maildir" / "new" / "1.M1.host").write_bytes(b"Subject: home\n\nfrom home\n")
    hashed = make_hash("SHA512-CRYPT", b"pw")
    _add(mail_home, f"erin:{hashed}:{os.getuid()}:{os.getgid()}::{home}::"
                    "userdb_mail=maildir:~/Maildir")
    _add(mail_home, f"gone2:{hashed}::::::nologin reason=use-imap.example.org")
    _add(mail_home, f"office:{hashed}::::::allow_nets=192.0.2.0/24")
    _add(mail_home, f"local:{hashed}::::::allow_nets=127.0.0.0/8,::1")
    for user in ("gone2", "office", "local"):
        for sub in ("cur", "new", "tmp"):
            (mail_home.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
    server = start_server(server_args(mail_home), mail_home.root, listeners=2)
    try:
        client = _login(server.port, "erin")
        assert client.stat() == (1, len(b"Subject: home\r\n\r\nfrom home\r\n"))
        assert b"from home" in b"\n".join(client.retr(1)[1])
        client.quit()
        with pytest.raises(poplib.error_proto) as refused:
            _login(server.port, "gone2")
        assert refused.value.args[0] == b"-ERR [AUTH] use-imap.example.org"
        with pytest.raises(poplib.error_proto) as wrong:
            _login(server.port, "gone2", "not the password")
        assert wrong.value.args[0] == b"-ERR [AUTH] authentication failed"  # no oracle
        with pytest.raises(poplib.error_proto) as outside:
            _login(server.port, "office")
        assert outside.value.args[0].startswith(b"-ERR [AUTH] login not allowed")
        _login(server.port, "local").quit()
        # Behind a trusted proxy, the forwarded address is the one that counts.
        _login(server.port, "office", before=b"XCLIENT ADDR=192.0.2.9 PORT=4000").quit()
        with pytest.raises(poplib.error_proto):
            _login(server.port, "local", before=b"XCLIENT ADDR=198.51.100.1 PORT=4000")
    finally:
        server.stop()


def test_a_home_template_opens_the_maildrop_under_the_users_home(
        mail_home: MailHome, tmp_path: Path) -> None:
    """Dovecot's mail_location = maildir:~/Maildir with the home column of
    an unchanged passwd-file: --store maildir:~/Maildir."""
    home = tmp_path / "homes" / "frank"
    for sub in ("cur", "new", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    (home / "Maildir" / "new" / "1.M1.host").write_bytes(b"Subject: hi\n\nhome\n")
    hashed = make_hash("SHA512-CRYPT", b"pw")
    _add(mail_home, f"frank:{hashed}:::Frank:{home}:/bin/sh:")
    _add(mail_home, f"homeless:{hashed}::::::")
    args = server_args(mail_home)
    args[args.index("--store") + 1] = "maildir:~/Maildir"
    server = start_server(args, mail_home.root, listeners=2)
    try:
        client = _login(server.port, "frank")
        assert client.stat()[0] == 1
        client.quit()
        with pytest.raises(poplib.error_proto) as refused:
            _login(server.port, "homeless")
        assert refused.value.args[0].startswith(b"-ERR [SYS/PERM]")
    finally:
        server.stop()
    with pytest.raises(ConfigurationError, match="after ~/ only a fixed path"):
        MaildirStore("~/%u/Maildir")
