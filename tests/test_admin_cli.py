"""The admin CLI driven as a user would: ``popframe pw``, ``popframe user``
on a passwd-file (and a server that logs the users in), ``popframe
stat`` (with a session holding the lock), and ``popframe import`` of
10,000 messages from an mbox, interrupted and resumed, with a progress
bar on a terminal; a Maildir import; errors as one line."""

from __future__ import annotations

import os
import poplib
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MailHome, server_args, start_server

from popframe.auth.passwdfile import parse_passwd
from popframe.auth.schemes import verify_password
from popframe.cli import subcommand_names
from popframe.cli.import_ import Progress, read_source
from popframe.stores.maildir.names import base_name, delivery_order

pytestmark = pytest.mark.process

POPFRAME = [sys.executable, "-m", "popframe"]


def popframe(*args: str, stdin: str | None = None, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POPFRAME, *args], input=stdin, capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_every_command_has_help() -> None:
    assert {"pw", "user", "stat", "import", "deliver"} <= set(subcommand_names())
    for command in ("pw", "user", "stat", "import"):
        shown = popframe(command, "--help")
        assert shown.returncode == 0 and f"popframe {command}" in shown.stdout
    listed = popframe("--help").stdout
    assert "import" in listed and "import_" not in listed


# -- pw ----------------------------------------------------------------------------------


def test_pw_hashes_from_a_pipe() -> None:
    done = popframe("pw", "-s", "SSHA512", stdin="secret\n")
    assert done.returncode == 0 and done.stdout.startswith("{SSHA512}")
    assert verify_password(done.stdout.strip(), b"secret")
    assert popframe("pw", stdin="secret\n").stdout.startswith("{SHA512-CRYPT}$6$")


def test_pw_errors_name_the_problem() -> None:
    unknown = popframe("pw", "-s", "MD4", stdin="x\n")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("popframe pw: unknown password scheme 'MD4'; choose one of ")
    assert "SHA512-CRYPT" in unknown.stderr and "Traceback" not in unknown.stderr
    assert popframe("pw", stdin="").stderr == "popframe pw: empty password\n"
    assert "rounds out of the range" in popframe("pw", "-r", "3", stdin="x\n").stderr


# -- user --------------------------------------------------------------------------------


def test_user_add_passwd_del_list(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# popframe users\nzed:{PLAIN}z::::::\n")
    users.chmod(0o640)
    file = ("--passwd-file", str(users))
    assert popframe("user", "add", *file, "alice", stdin="alice pw\n").returncode == 0
    assert popframe("user", "add", *file, "-s", "SCRAM-SHA-256", "--login-delay", "60", "bob",
                    stdin="bob pw\n").returncode == 0
    listed = popframe("user", "list", *file)
    assert listed.stdout.splitlines() == [
        "zed scheme=PLAIN", "alice scheme=SHA512-CRYPT", "bob scheme=SCRAM-SHA-256 login_delay=60"]
    exists = popframe("user", "add", *file, "alice", stdin="again\n")
    assert exists.returncode == 1 and exists.stderr == (
        "popframe user: user 'alice' exists (popframe user passwd changes the password)\n")
    assert popframe("user", "passwd", *file, "alice", stdin="new pw\n").returncode == 0
    records = parse_passwd(users.read_bytes()).records
    assert verify_password(records["alice"].password, b"new pw")
    assert not verify_password(records["alice"].password, b"alice pw")
    assert records["bob"].extra == {"login_delay": "60"}
    assert popframe("user", "del", *file, "zed").returncode == 0
    assert popframe("user", "list", *file, "zed").returncode == 1
    assert popframe("user", "list", *file, "bob").stdout.startswith("bob ")
    missing = popframe("user", "del", *file, "zed")
    assert (missing.returncode, missing.stderr) == (1, "popframe user: no user 'zed'\n")
    assert users.read_text().startswith("# popframe users\nalice:{SHA512-CRYPT}")
    assert oct(users.stat().st_mode & 0o777) == oct(0o640)  # kept


def test_user_errors(tmp_path: Path) -> None:
    file = ("--passwd-file", str(tmp_path / "users"))
    assert popframe("user", "list", *file).stderr == f"popframe user: {tmp_path}/users: no such file\n"
    bad = popframe("user", "add", *file, "a:b", stdin="pw\n")
    assert bad.returncode == 1 and "not a user name" in bad.stderr
    assert "one of the arguments --passwd-file" in popframe("user", "list").stderr
    assert popframe("user", "add", *file, "carol", stdin="").stderr == "popframe user: empty password\n"
    assert not (tmp_path / "users").exists() or "carol" not in (tmp_path / "users").read_text()


def test_users_added_by_the_cli_log_in(mail_home: MailHome) -> None:
    """A running server sees the edits without a restart."""
    server = start_server(server_args(mail_home), mail_home.root, listeners=2)
    try:
        file = ("--passwd-file", str(mail_home.passwd_file))
        assert popframe("user", "add", *file, "carol", stdin="carol pw\n").returncode == 0
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("carol")
        assert client.pass_("carol pw").startswith(b"+OK")
        client.quit()
        assert popframe("user", "passwd", *file, "carol", stdin="changed\n").returncode == 0
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("carol")
        with pytest.raises(poplib.error_proto):
            client.pass_("carol pw")
        client.quit()
        assert popframe("user", "del", *file, "carol").returncode == 0
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("carol")
        with pytest.raises(poplib.error_proto):
            client.pass_("changed")
        client.quit()
    finally:
        server.stop()


# -- stat --------------------------------------------------------------------------------


def test_stat_shows_messages_octets_and_the_lock_holder(mail_home: MailHome) -> None:
    mail_home.add_user("alice", "alice pw")
    mail_home.deliver("alice", b"Subject: one\n\nhello\n")
    mail_home.deliver("alice", b"Subject: two\r\n\r\nworld\r\n")
    store = ("--store", f"maildir:{mail_home.template}")
    shown = popframe("stat", *store, "alice")
    assert shown.stdout == "user alice\nmessages 2\noctets 46\nlock free\n"
    server = start_server(server_args(mail_home), mail_home.root, listeners=2)
    try:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("alice pw")
        locked = popframe("stat", *store, "alice")
        assert locked.stdout.splitlines() == [
            "user alice", "messages unknown (locked)",
            f"lock held by pid {server.pid} ({Path(f'/proc/{server.pid}/comm').read_text().strip()})"]
        client.quit()
    finally:
        server.stop()
    assert popframe("stat", *store, "alice").stdout.endswith("lock free\n")
    unknown = popframe("stat", "--store", "nosuch:/x", "alice")
    assert unknown.returncode == 1 and unknown.stderr.startswith("popframe stat: --store: ")


# -- import ------------------------------------------------------------------------------


def make_mbox(path: Path, count: int, seed: int = 1) -> list[bytes]:
    """An mboxrd file of ``count`` messages; what each should read as."""
    rng = random.Random(seed)
    expected = []
    with open(path, "wb") as f:
        for n in range(count):
            body = b"".join(b"line %d of message %d\n" % (j, n) for j in range(rng.randint(1, 30)))
            if n % 97 == 0:
                body += b"From here on a line that needs quoting\n>From one already quoted\n"
            if n % 1000 == 1:
                body += b"\n"  # a message ending in an empty line
            message = b"From: s%d@example.org\nSubject: message %d\n\n" % (n, n) + body
            if n == 5:
                expected.append(message)  # every message twice: the same octets
            expected.append(message)
            quoted = re.sub(rb"(?m)^(>*From )", rb">\1", message)
            f.write(b"From s@example.org Thu Nov 14 22:13:20 2023\n" + quoted + b"\n")
            if n == 5:
                f.write(b"From s@example.org Thu Nov 14 22:13:20 2023\n" + quoted + b"\n")
    return expected


def delivered(maildir: Path) -> list[bytes]:
    """The maildrop's messages, oldest first (as the store lists them)."""
    files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    files.sort(key=lambda p: delivery_order(base_name(p.name)))
    return [p.read_bytes() for p in files]


def scratch(tmp_path: Path) -> Path:
    """A directory on tmpfs when there is one: the import fsyncs each
    message, which a disk shared by a busy machine makes slow; the
    journal and the order are what this test checks."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        target = shm / f"popframe-import-{os.getpid()}-{tmp_path.name}"
        target.mkdir()
        return target
    return tmp_path


def test_import_10000_messages_interrupted_and_resumed(tmp_path: Path) -> None:
    mbox = tmp_path / "alice.mbox"
    expected = make_mbox(mbox, 10_000)
    target = scratch(tmp_path)
    try:
        store = f"maildir:{target}/%u/Maildir"
        journal = target / "journal"
        command = [*POPFRAME, "import", "--store", store, "--journal", str(journal), "alice",
                   str(mbox)]
        # On a terminal: a progress bar.  Stopped (SIGINT) part of the way.
        controller, terminal = pty.openpty()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=terminal)
        os.close(terminal)
        shown = b""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                try:
                    shown += os.read(controller, 65536)
                except OSError:
                    break
            if journal.exists() and journal.read_text().count("\n") > 3000:
                break
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        while select.select([controller], [], [], 0.5)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        os.close(controller)
        text = shown.decode()
        assert process.returncode == 1, (out, text)
        assert re.search(r"\r\[#*\.*\]\s+\d+\.\d% \d+ messages, \d+/s, (\d+:)?\d\d:\d\d left", text)
        assert "interrupted after" in text and "run the same command again" in text
        first = delivered(target / "alice" / "Maildir")
        assert 3000 <= len(first) < len(expected)
        assert first == expected[:len(first)]
        # Again, not on a terminal: quiet but for the summary; the rest only.
        again = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        assert again.stderr == ""
        summary = re.fullmatch(
            r"imported (\d+) messages \((\d+) octets\) for alice in [\d.]+ s \(\d+ messages/s\); "
            rf"(\d+) already imported; journal {re.escape(str(journal))}\n", again.stdout)
        assert summary, again.stdout
        assert int(summary.group(1)) + int(summary.group(3)) == len(expected)
        assert int(summary.group(3)) == len(first)
        assert delivered(target / "alice" / "Maildir") == expected
        # Once more: nothing left to do.
        done = popframe("import", "--store", store, "--journal", str(journal), "alice", str(mbox))
        assert done.stdout.startswith("imported 0 messages (0 octets)")
        assert len(delivered(target / "alice" / "Maildir")) == len(expected)
    finally:
        if target != tmp_path:
            subprocess.run(["rm", "-rf", str(target)], check=False)


def test_import_a_maildir_with_new_mail_later(tmp_path: Path) -> None:
    source = tmp_path / "old" / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (source / sub).mkdir(parents=True)
    (source / "cur" / "1600000002.M2P1.old:2,S").write_bytes(b"Subject: two\n\nread\n")
    (source / "new" / "1600000001.M1P1.old").write_bytes(b"Subject: one\n\nnew\n")
    (source / "tmp" / "1600000009.M9P1.old").write_bytes(b"half written")
    store = ("--store", f"maildir:{tmp_path}/mail/%u/Maildir")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    first = popframe("import", *store, "bob", str(source), env=env)
    assert first.returncode == 0 and first.stdout.startswith("imported 2 messages (37 octets)")
    assert str(tmp_path / "state" / "popframe" / "import") in first.stdout
    (source / "new" / "1600000003.M3P1.old").write_bytes(b"Subject: three\n\nlater\n")
    second = popframe("import", *store, "bob", str(source), env=env)
    assert "imported 1 messages" in second.stdout and "2 already imported" in second.stdout
    assert delivered(tmp_path / "mail" / "bob" / "Maildir") == [
        b"Subject: one\n\nnew\n", b"Subject: two\n\nread\n", b"Subject: three\n\nlater\n"]


def test_import_errors_are_one_line(tmp_path: Path) -> None:
    store = ("--store", f"maildir:{tmp_path}/%u")
    (tmp_path / "not-mail").write_text("hello\n")
    (tmp_path / "dir").mkdir()
    for source, message in ((tmp_path / "nothing", "No such file or directory"),
                            (tmp_path / "not-mail", "not an mbox"),
                            (tmp_path / "dir", "a directory, but not a Maildir")):
        done = popframe("import", *store, "alice", str(source))
        assert done.returncode == 1 and message in done.stderr
        assert done.stderr.startswith("popframe import: ") and done.stderr.count("\n") == 1
    make_mbox(tmp_path / "m.mbox", 2)
    journal = tmp_path / "j"
    popframe("import", *store, "--journal", str(journal), "alice", str(tmp_path / "m.mbox"))
    other = popframe("import", *store, "--journal", str(journal), "bob", str(tmp_path / "m.mbox"))
    assert other.returncode == 1 and "it belongs to another import" in other.stderr


@pytest.mark.core
def test_mbox_reading_keeps_octets(tmp_path: Path) -> None:
    mbox = tmp_path / "m"
    mbox.write_bytes(
        b"From a Thu Nov 14 22:13:20 2023\nSubject: x\n\n>From quoted\n>>From twice\n\n"
        b"From b Thu Nov 14 22:13:20 2023 popframe:no-final-newline\nSubject: y\n\nno newline\n\n")
    messages = list(read_source(mbox, "mbox"))
    assert [m.octets for m in messages] == [
        b"Subject: x\n\nFrom quoted\n>From twice\n", b"Subject: y\n\nno newline"]
    assert len({m.key for m in messages}) == 2


@pytest.mark.core
def test_progress_line() -> None:
    now = [100.0]
    progress = Progress(None, 1000, clock=lambda: now[0])
    from popframe.cli.import_ import Message

    now[0] = 102.0
    for _ in range(4):
        progress.advance(Message("k", b"x" * 100, 100), imported=True)
    assert progress.line(now[0]) == f"[{'#' * 12}{'.' * 18}]  40.0% 4 messages, 2/s, 00:03 left"
