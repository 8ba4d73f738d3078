"""Leave-on-server: ``dele=hide`` parsed by every store, and the schema
upgrade that adds the SQL columns to a database of version 1.  (The
stores' all-or-none hiding runs in their contract suites:
tests/test_store_contracts.py, test_mbox_contract.py, test_sql_contracts.py.)"""

from __future__ import annotations

import os
import poplib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import MailHome, server_args, start_server
from sql_support import fresh_database

from popframe.auth.schemes import make_hash
from popframe.config import ConfigurationError
from popframe.db import Database, parse_url
from popframe.db.migrations import MIGRATIONS
from popframe.db.schema import current_version, upgrade
from popframe.stores import store_from_description
from popframe.stores.options import split_options

pytestmark = pytest.mark.core


def test_dele_option_in_every_store(tmp_path: Path) -> None:
    assert store_from_description(f"maildir:{tmp_path}/%u:dele=hide").dele == "hide"  # type: ignore[attr-defined]
    assert store_from_description(f"maildir:{tmp_path}/%u").dele == "unlink"  # type: ignore[attr-defined]
    assert store_from_description(f"mbox:{tmp_path}/%u:dele=hide").dele == "hide"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"dele='keep': expected unlink\|hide"):
        store_from_description(f"mbox:{tmp_path}/%u:dele=keep")
    assert split_options("dsn=postgresql://u@h:5432/db:dele=hide", ["dele"]) == (
        "dsn=postgresql://u@h:5432/db", ["dele=hide"])
    assert split_options("dsn=sqlite:////x.db", ["dele"]) == ("dsn=sqlite:////x.db", [])


@pytest.mark.external
@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_upgrade_adds_the_columns_to_a_version_1_database(engine: str, tmp_path: Path) -> None:
    with fresh_database(engine, tmp_path, schema=False) as dsn:
        database = Database(parse_url(dsn))

        def version_1(session):  # type: ignore[no-untyped-def]
            session.execute("CREATE TABLE popframe_schema (version INTEGER NOT NULL)")
            session.execute("INSERT INTO popframe_schema (version) VALUES (1)")
            for statement in MIGRATIONS[0].statements[session.engine.name]:
                session.execute(statement)
            session.execute("INSERT INTO popframe_messages (maildrop, uid, size, stored_size, "
                            "ready, parts) VALUES ('alice', 'u1', 3, 3, ?, 0)", (True,))

        database.call(version_1)
        assert database.call(current_version) == 1
        assert database.call(upgrade).after == len(MIGRATIONS)
        rows = database.call(lambda s: s.query(
            "SELECT uid, hidden, retrieved_at FROM popframe_messages"))
        assert [(r[0], bool(r[1]), r[2]) for r in rows] == [("u1", False, None)]
        store = store_from_description(f"sql:dsn={dsn}:dele=hide")
        assert store.dele == "hide"  # type: ignore[attr-defined]
        database.close()


# -- real clients ------------------------------------------------------------------------


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: tests/run.sh installs it")
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it)")


@pytest.mark.process
def test_mpop_with_dele_hide_and_a_users_expire_0(tmp_path: Path, mail_home: MailHome) -> None:
    """mpop (a real client) deleting with dele=hide: the files stay, flagged
    $POP3Deleted, and the next session lists nothing; a user whose
    passwd-file line says expire=0 loses retrieved mail at QUIT even
    though mpop keeps it (keep on)."""
    require("mpop")
    mail_home.add_user("alice", "alice password")
    with open(mail_home.passwd_file, "a") as f:
        f.write(f"zed:{make_hash('SHA512-CRYPT', b'zed password')}::::::expire=0\n")
    for user in ("alice", "zed"):
        for sub in ("cur", "new", "tmp"):
            (mail_home.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
        for n in range(3):
            mail_home.deliver(user, b"Subject: %d\n\nbody %d\n" % (n, n))
    args = server_args(mail_home)
    args[args.index("--store") + 1] += ":dele=hide"
    server = start_server(args, mail_home.root, listeners=2)
    try:
        for user, password, keep in (("alice", "alice password", "off"),
                                     ("zed", "zed password", "on")):
            out = tmp_path / f"out-{user}"
            for sub in ("cur", "new", "tmp"):
                (out / sub).mkdir(parents=True, exist_ok=True)
            rc = tmp_path / f"mpoprc-{user}"
            rc.write_text(f"account test\nhost 127.0.0.1\nport {server.tls_port}\nuser {user}\n"
                          f"password {password}\ntls on\ntls_starttls off\n"
                          f"tls_trust_file {mail_home.cert}\nkeep {keep}\n"
                          f"uidls_file {tmp_path / ('uidls-' + user)}\ndelivery maildir {out}\n")
            rc.chmod(0o600)
            done = subprocess.run(["mpop", "--file", str(rc), "--quiet", "test"],
                                  capture_output=True, timeout=60,
                                  env={**os.environ, "HOME": str(tmp_path)})
            assert done.returncode == 0, done.stderr
            assert len(list((out / "new").iterdir())) == 3
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("alice password")
        assert client.stat() == (0, 0)
        client.quit()
        zed = poplib.POP3("127.0.0.1", server.port, timeout=10)
        zed.user("zed")
        zed.pass_("zed password")
        assert zed.stat() == (0, 0)  # EXPIRE 0: gone at QUIT, though mpop kept them
        zed.quit()
    finally:
        server.stop()
    kept = os.listdir(mail_home.maildir("alice") / "cur")
    assert len(kept) == 3 and all(name.endswith(":2,a") for name in kept)
    assert (mail_home.maildir("alice") / "dovecot-keywords").read_text() == "0 $POP3Deleted\n"
    assert len(os.listdir(mail_home.maildir("zed") / "cur")) == 3  # EXPIRE 0 under dele=hide
