"""``twistd --uid/--gid``: popframe binds ports below 1024 and reads keys
that only root may read, then serves as an unprivileged user, with
``--workers`` too (workers start unprivileged and get the files' contents
from their parent, a restarted one as well).  Needs root and an
interpreter the unprivileged user can run: a virtualenv of the system's
python3 with popframe installed, made for this module."""

from __future__ import annotations

import grp
import os
import poplib
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MailHome
from test_lifecycle import WAIT, login
from test_packaging import project_copy

from popframe.testing import wait_for_log
from popframe.tls import make_self_signed

USER, GROUP = "nobody", "nogroup"
MESSAGE = b"Subject: privileged\r\n\r\nread as nobody\r\n"

pytestmark = [pytest.mark.process, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(scope="module")
def twistd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """twistd from a virtualenv every user can run, outside any private
    directory (the suite's own interpreter may live under /root)."""
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.fail("no system python3 to make a virtualenv the unprivileged user can run")
    base = Path(tempfile.mkdtemp(prefix="popframe-privileges-"))
    os.chmod(base, 0o755)
    try:
        source = project_copy(base / "src")
        subprocess.run([python, "-m", "venv", str(base / "venv")], check=True, timeout=300)
        subprocess.run([str(base / "venv" / "bin" / "pip"), "install", "-q",
                        "--disable-pip-version-check", str(source)],
                       check=True, timeout=900, capture_output=True)
        for path in [base, *base.rglob("*")]:  # readable by all, as an installed package is
            if not path.is_symlink():
                os.chmod(path, (path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0)))
        yield base / "venv" / "bin" / "twistd"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def free_privileged_ports(count: int) -> list[int]:
    ports = []
    for port in range(990, 600, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    pytest.fail("no free port below 1024 on 127.0.0.1")


def uids_of(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(value) for value in line.split()[1:]}
    raise AssertionError(pid)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def home() -> Iterator[MailHome]:
    """A mail home the unprivileged user can reach (pytest's tmp_path is
    under a directory only root may enter), with root-only secrets."""
    root = Path(tempfile.mkdtemp(prefix="popframe-privileged-home-"))
    os.chmod(root, 0o755)
    home = MailHome(root)
    home.passwd_file.touch()
    home.add_user("alice", "alice password")
    home.deliver("alice", MESSAGE)
    uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid
    for path in [root / "mail", *(root / "mail").rglob("*")]:
        os.chown(path, uid, gid)
    os.chmod(home.passwd_file, 0o644)  # read again at runtime, when changed
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700)
    make_self_signed(secrets / "cert.pem", secrets / "key.pem")
    shutil.copy(secrets / "cert.pem", home.cert)  # for the clients
    yield home
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("workers", [1, 2], ids=["workers-1", "workers-2"])
def test_binds_and_reads_keys_as_root_then_serves_as_nobody(
        twistd: Path, home: MailHome, workers: int) -> None:
    secrets = home.root / "secrets"
    config = secrets / "popframe.toml"  # root-only too
    config.write_text(f'store = "maildir:{home.template}"\n'
                      f'auth = ["passwd-file:{home.passwd_file}"]\n'
                      f'tls-cert = "{secrets}/cert.pem"\ntls-key = "{secrets}/key.pem"\n')
    os.chmod(config, 0o600)
    plain, implicit = free_privileged_ports(2)
    log = home.root / "twistd.log"
    command = [str(twistd), "-n", "--pidfile=", "--logfile=-", f"--uid={USER}", f"--gid={GROUP}",
               "pop3", "--config", str(config), "--workers", str(workers),
               "--listen", f"tcp:{plain}:interface=127.0.0.1",
               "--listen", f"ssl:{implicit}:interface=127.0.0.1:privateKey={secrets}/key.pem:"
                           f"certKey={secrets}/cert.pem"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=home.root, stdout=sink, stderr=subprocess.STDOUT)
    try:
        ready = "] ready (pid" if workers > 1 else "POP3Factory (TLS) starting on"
        wait_for_text(log, process, ready, workers if workers > 1 else 1)
        # Served first: twistd drops root after binding (when the line above
        # is logged) and before its reactor runs, so a reply proves the drop.
        fetch(plain, implicit, home)
        nobody = pwd.getpwnam(USER).pw_uid
        assert uids_of(process.pid) == {nobody}
        assert all(uids_of(child) == {nobody} for child in children(process.pid))
        if workers > 1:
            # A worker started after the drop reads the keys from its parent.
            victim, survivor = children(process.pid)[:2]
            os.kill(victim, signal.SIGKILL)
            wait_for_text(log, process, "] ready (pid", workers + 1)
            os.kill(survivor, signal.SIGSTOP)  # the new worker takes the next connection
            try:
                fetch(plain, implicit, home)
            finally:
                os.kill(survivor, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def fetch(plain: int, implicit: int, home: MailHome) -> None:
    context = ssl.create_default_context(cafile=str(home.cert))
    client = login(poplib.POP3_SSL("127.0.0.1", implicit, context=context, timeout=10), "alice")
    assert client.retr(1)[1][-1] == b"read as nobody"
    client.quit()
    client = poplib.POP3("127.0.0.1", plain, timeout=10)
    client.stls(context=context)
    login(client, "alice").quit()


def wait_for_text(log: Path, process: subprocess.Popen[bytes], text: str, count: int) -> None:
    wait_for_log(process, log, re.escape(text), count, WAIT)
