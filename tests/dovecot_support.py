"""The real Dovecot as the server popframe takes over: Debian's dovecot
(``dovecot-core`` + ``dovecot-pop3d``) run in a temporary directory with
the benchmark's settings (``benchmarks/servers.py`` ``dovecot_config``),
mail delivered with ``dovecot-lda``, its UIDL and LIST read over POP3 with
poplib, so Dovecot has recorded whatever it records, then stopped, which
leaves its maildir for popframe to serve.

Dovecot refuses to run mail processes as root, so as root the maildir
belongs to ``nobody``; the directory lives under /tmp (world-searchable
parents), since Dovecot's auth and mail processes must reach it.
Skipped without Dovecot, failed when CI=true.
"""

from __future__ import annotations

import grp
import importlib.util
import os
import poplib
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from popframe.testing import start_server

REPO = Path(__file__).resolve().parent.parent
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
LDA = "/usr/lib/dovecot/dovecot-lda"
USER = "alice"
PASSWORD = "secret"

__all__ = ["MESSAGES", "DovecotServer", "dovecot_server", "pop3_listing", "popframe_serving",
           "require_dovecot", "searchable_directory"]

#: Mail as MTAs hand it to an LDA: LF line ends, a line starting with a
#: dot, a bare CR, no final newline, an X-UIDL header of an older server.
MESSAGES = [
    b"From: a@example.org\nSubject: one\n\nhello\n",
    b"From: b@example.org\nSubject: two\n\n.a dot line\n..two\n",
    b"From: c@example.org\nX-UIDL: old-server-3\nSubject: three\n\nbody\rwith CR\n",
    b"From: d@example.org\nSubject: four\n\nno final newline",
    b"From: e@example.org\nSubject: five\n\n" + b"long line " * 2000 + b"\n",
]


def _servers() -> ModuleType:
    """benchmarks/servers.py (not a package): one Dovecot configuration."""
    spec = importlib.util.spec_from_file_location("_bench_servers", REPO / "benchmarks" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mail_user() -> tuple[str, str]:
    """Dovecot's mail processes' user and group: ours, unless we are root."""
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    nobody = pwd.getpwnam("nobody")
    return "nobody", grp.getgrgid(nobody.pw_gid).gr_name


def pop3_listing(port: int, user: str = USER, password: str = PASSWORD,
                 retrieve: bool = False) -> list[tuple[int, str, int]]:
    """(number, UIDL, size) of every message, as a real client sees them;
    ``retrieve``: RETR each too (leaving it on the server)."""
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        client.user(user)
        client.pass_(password)
        uidls = [line.decode().split(" ", 1) for line in client.uidl()[1]]
        sizes = dict(line.decode().split(" ", 1) for line in client.list()[1])
        if retrieve:
            for number, _ in uidls:
                client.retr(int(number))
        client.quit()
    finally:
        client.close()
    return [(int(n), uid, int(sizes[n])) for n, uid in uidls]


@contextmanager
def popframe_serving(store: str, passwd: Path, cwd: Path) -> Iterator[int]:
    """A ``twistd pop3`` serving ``store`` to the users of ``passwd`` (a
    Dovecot passwd-file: popframe reads it unchanged); yields its port."""
    server = start_server(["--listen", "tcp:0:interface=127.0.0.1", "--store", store,
                           "--auth", f"passwd-file:{passwd}", "--workers", "1"], cwd)
    try:
        yield server.port
    finally:
        server.stop()


class DovecotServer:
    """One Dovecot instance with one user, ``alice``."""

    def __init__(self, root: Path, uidl_format: str, extra: str = "") -> None:
        self.root = root
        self.servers = _servers()
        self.user, self.group = _mail_user()
        self.maildirs = root / "maildirs"
        self.maildir = self.maildirs / USER / "Maildir"
        self.conf = root / "dovecot.conf"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.uidl_format = uidl_format
        self.extra = extra

    def prepare(self) -> None:
        for sub in ("run", "state", "maildirs"):
            (self.root / sub).mkdir(exist_ok=True)
        passwd = self.passwd = self.root / "passwd"
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        passwd.chmod(0o644)
        self.port = self.servers.free_port()
        self.conf.write_text(self.servers.dovecot_config(
            self.root, self.port, self.maildirs, passwd, self.root / "dovecot.log",
            user=self.user, group=self.group, uidl_format=self.uidl_format,
            extra=self.extra + "\nmaildir_very_dirty_syncs = no\n"))
        if os.getuid() == 0:
            shutil.chown(self.maildirs, self.user, self.group)

    def deliver(self, message: bytes) -> None:
        subprocess.run([LDA, "-c", str(self.conf), "-d", USER], input=message, check=True,
                       capture_output=True, timeout=60)

    def write_new(self, messages: list[bytes]) -> None:
        """Put mail in ``new/`` as an MTA writing the maildir itself does
        (Postfix's ``home_mailbox = Maildir/``); Dovecot gives it uids when
        it next looks.  After one :meth:`deliver`, which made the maildir."""
        new = self.maildir / "new"
        for i, message in enumerate(messages):
            path = new / f"{1700000000 + i}.V801I{i:x}M{i}.mx"
            path.write_bytes(message)
            if os.getuid() == 0:
                os.chown(path, pwd.getpwnam(self.user).pw_uid, grp.getgrnam(self.group).gr_gid)

    def start(self) -> None:
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], cwd=self.root,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.servers.wait_for_greeting(self.port, timeout=30, proc=self.proc)
        except Exception as error:
            log = (self.root / "dovecot.log")
            text = log.read_text() if log.exists() else "(no log)"
            self.stop()
            raise RuntimeError(f"Dovecot did not start: {text[-2000:]}") from error

    def listing(self, retrieve: bool = False) -> list[tuple[int, str, int]]:
        return pop3_listing(self.port, retrieve=retrieve)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run([DOVECOT, "-c", str(self.conf), "stop"], capture_output=True, timeout=30)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def require_dovecot() -> None:
    """Skip without Dovecot; fail when CI=true."""
    if not all(os.path.exists(p) for p in (DOVECOT, LDA, "/usr/lib/dovecot/pop3")):
        if os.environ.get("CI") == "true":
            pytest.fail("Dovecot (dovecot-core, dovecot-pop3d) is not installed")
        pytest.skip("Dovecot is not installed")


def searchable_directory() -> Path:
    """A new directory under /tmp that Dovecot's processes can reach."""
    root = Path(tempfile.mkdtemp(prefix="popframe-dovecot-"))
    root.chmod(0o755)
    return root


@pytest.fixture
def dovecot_server() -> Iterator[type[DovecotServer]]:
    """A factory of :class:`DovecotServer` in a fresh directory under /tmp
    (removed afterwards, every instance stopped)."""
    require_dovecot()
    root = searchable_directory()
    made: list[DovecotServer] = []

    class Made(DovecotServer):
        def __init__(self, uidl_format: str, extra: str = "") -> None:
            super().__init__(root / f"d{len(made)}", uidl_format, extra)
            self.root.mkdir()
            self.root.chmod(0o755)
            made.append(self)
            self.prepare()

    try:
        yield Made  # type: ignore[misc]
    finally:
        for server in made:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
