"""``--workers N``: real ``twistd pop3`` processes on loopback, one parent
and N workers sharing its sockets.

Which worker served a session is read from the log (``[worker-2
popframe.server#info] login ok user=alice peer=127.0.0.1:PORT``).  Where a
test needs a connection to land on one worker, it stops the others with
SIGSTOP: a stopped process runs no code, so it cannot accept.
"""

from __future__ import annotations

import json
import os
import poplib
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import TWISTD, MailHome, server_args, start_server
from support.clients import pop3_login

from popframe import workers
from popframe.config import ConfigurationError
from popframe.tap import Options
from popframe.testing import POP3, run_twistd, wait_for_log, wait_until
from popframe.workers.pool import _Slot

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="reads /proc; relies on PR_SET_PDEATHSIG"),
]

#: The name other test modules import.
login = pop3_login

WAIT_SECONDS = 60  # generous: workers start in parallel on a busy machine
_LISTENING = re.compile(r"listening on (\S+) for (\d+) workers")
_STARTED = re.compile(r"worker-(\d+) started \(pid (\d+)\)")


@dataclass
class Pool:
    """A ``twistd pop3 --workers N`` process and its log."""

    process: subprocess.Popen[bytes]
    log: Path
    count: int
    addresses: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, find, what: str, timeout: float = WAIT_SECONDS):
        """Poll the log until ``find(text)`` returns something true."""

        def found():  # type: ignore[no-untyped-def]
            exited = self.process.poll() is not None
            text = self.text()
            if (result := find(text)) or not exited:
                return result
            raise AssertionError(f"server exited; no {what} in:\n{text}")

        try:
            return wait_until(found, what, timeout)
        except AssertionError as error:
            if self.process.poll() is not None:
                raise
            raise AssertionError(f"{error}, in:\n{self.text()}") from None

    def wait_for(self, pattern: str, timeout: float = WAIT_SECONDS) -> re.Match[str]:
        """The first match of ``pattern`` in the log, waiting for it."""
        return wait_for_log(self.process, self.log, pattern, 1, timeout)[0]

    def pids(self) -> dict[int, int]:
        """The current pid of each worker, by worker id."""
        return {int(w): int(p) for w, p in _STARTED.findall(self.text())}

    def wait_ready(self, worker: int, replacing: int | None = None) -> int:
        """Wait until ``worker``'s current process (not ``replacing``)
        serves; return its pid."""

        def ready(text: str) -> int | None:
            pid = {int(w): int(p) for w, p in _STARTED.findall(text)}.get(worker)
            line = f"[worker-{worker} popframe.workers#info] ready (pid {pid})"
            if pid and pid != replacing and line in text:
                return pid
            return None

        return self.wait(ready, f"worker-{worker} ready")

    def port(self, index: int = 0) -> int:
        return int(self.addresses[index].rsplit(":", 1)[1])

    def served_by(self, client: poplib.POP3, user: str = "alice") -> int:
        """The worker that logged ``client`` in (from the log)."""
        local = client.sock.getsockname()[1]
        match = self.wait_for(
            rf"\[worker-(\d+) popframe\.server#info\] login ok .*\buser='?{re.escape(user)}\b"
            rf".* peer=127\.0\.0\.1:{local}\b")
        return int(match.group(1))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(workers.STOP_TIMEOUT + 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_pool(args: list[str], cwd: Path, count: int, *, command: list[str] | None = None,
               env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> Pool:
    log = cwd / "twistd.log"
    command = command or [*TWISTD, *POP3]
    with open(log, "wb") as sink:
        process = subprocess.Popen([*command, *args, "--workers", str(count)], cwd=cwd,
                                   stdout=sink, stderr=subprocess.STDOUT, env=env,
                                   pass_fds=pass_fds)
    pool = Pool(process, log, count)
    try:
        for worker in range(1, count + 1):
            pool.wait_ready(worker)
    except BaseException:
        pool.stop()
        raise
    pool.addresses = [address for address, _ in _LISTENING.findall(pool.text())]
    return pool


@pytest.fixture
def users(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    mail_home.add_user("bob", "bob password")
    mail_home.deliver("alice", b"Subject: one\r\n\r\nhello\r\n")
    mail_home.deliver("bob", b"Subject: two\r\n\r\nhello bob\r\n")
    return mail_home


@pytest.fixture
def pool(users: MailHome) -> Iterator[Pool]:
    sock = users.root / "pop3.sock"
    server = start_pool(server_args(users, "--listen", f"unix:{sock}", "--shutdown-grace", "1"),
                        users.root, 2)
    yield server
    server.stop()


def session(pool: Pool, user: str = "alice") -> int:
    """A whole session (login, STAT, QUIT); the worker that served it."""
    client = pop3_login(pool.port(), user)
    assert client.stat()[0] == 1
    worker = pool.served_by(client, user)
    client.quit()
    return worker


def in_use(port: int, user: str = "alice") -> tuple[int, bytes]:
    """Try to log in while the maildrop is locked: (client port, -ERR line)."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        local = client.sock.getsockname()[1]
        client.user(user)
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_(f"{user} password")
        return local, refused.value.args[0]
    finally:
        client.close()


def process_state(pid: int) -> str | None:
    """The state letter from /proc (R, S, T, Z...), None once reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def gone(pid: int) -> bool:
    """Exited (reaped, or a zombie waiting for a reaper that is not ours)."""
    return process_state(pid) in (None, "Z", "X")


@contextmanager
def only(pool: Pool, worker: int) -> Iterator[None]:
    """Stop every other worker (SIGSTOP), so new connections reach ``worker``."""
    others = [pid for w, pid in pool.pids().items() if w != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        for pid in others:
            wait_until(lambda pid=pid: process_state(pid) in ("T", "t"), f"pid {pid} to stop", WAIT_SECONDS)
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


# -- options ----------------------------------------------------------------------------


@pytest.mark.core
def test_default_is_one_worker_per_core(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--store", f"maildir:{tmp_path}/%u",
                          "--auth", "memory:a:b"])
    assert options["workers"] == (os.cpu_count() or 1)
    assert options.argv[:2] == ["--listen", "tcp:0"]


def test_help_says_which_endpoints_are_shared() -> None:
    result = run_twistd("pop3", "--help")
    text = " ".join(result.stdout.split())
    assert "--workers=" in text
    assert "tcp:, tcp6:, ssl:, tls:, unix: and systemd:" in text
    assert "other endpoint types need --workers 1" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers: must be at least 1"),
        (["--workers", "2", "--listen", "stdio:"], "--listen: 'stdio': endpoints cannot be "
         "shared by worker processes"),
        (["--workers", "2", "--listen", "haproxy:stdio:"], "use --workers 1"),
    ],
)
def test_configuration_errors(tmp_path: Path, args: list[str], message: str) -> None:
    base = ["--store", f"maildir:{tmp_path}/%u", "--auth", "memory:a:b"]
    if "--listen" not in args:
        base += ["--listen", "tcp:0:interface=127.0.0.1"]
    result = run_twistd(*POP3, *base, *args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.core
def test_shareable_endpoint_types() -> None:
    for description in ["tcp:110", "tcp6:110", "ssl:995", "tls:/etc/certs", "unix:/run/p",
                        "systemd:domain=INET:index=0", "haproxy:tcp:110", "HAPROXY:SSL:995"]:
        workers.check_shareable(description)
    for description in ["stdio:", "onion:110", "haproxy:stdio:", "nonsense"]:
        with pytest.raises(ConfigurationError) as caught:
            workers.check_shareable(description)
        assert caught.value.key == "--listen"


# -- one worker: today's single process --------------------------------------------------


def test_one_worker_is_one_process(users: MailHome) -> None:
    server = start_server(server_args(users, "--workers", "1"), users.root, listeners=2)
    try:
        client = pop3_login(server.port)
        assert client.stat()[0] == 1
        client.quit()
        assert server.children() == []
        assert "worker-" not in server.log.read_text()
    finally:
        server.stop()


# -- N workers ----------------------------------------------------------------------------


def test_every_worker_serves_sessions(pool: Pool) -> None:
    assert len(pool.addresses) == 3  # tcp, ssl, unix: one socket each, opened by the parent
    served = set()
    for worker in (1, 2):
        with only(pool, worker):
            for _ in range(3):
                served.add(session(pool))
    assert served == {1, 2}
    # Left alone, the kernel picks a worker for each connection.
    assert {session(pool, "bob") for _ in range(10)} <= {1, 2}


def test_implicit_tls_and_unix_listeners_are_shared(pool: Pool, users: MailHome) -> None:
    context = ssl.create_default_context(cafile=str(users.cert))
    for worker in (1, 2):
        with only(pool, worker):
            client = poplib.POP3_SSL("127.0.0.1", pool.port(1), context=context, timeout=10)
            client.user("alice")
            client.pass_("alice password")
            assert client.stat()[0] == 1
            assert pool.served_by(client) == worker
            client.quit()
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(10)
                unix.connect(str(users.root / "pop3.sock"))
                assert unix.recv(1024).startswith(b"+OK")


def test_the_lock_holds_across_workers(pool: Pool) -> None:
    with only(pool, 1):
        holder = pop3_login(pool.port())
    assert pool.served_by(holder) == 1
    # With worker 1 stopped, every attempt reaches worker 2: the lock holds
    # across processes.
    with only(pool, 2):
        local, reply = in_use(pool.port())
        assert b"[IN-USE]" in reply
        pool.wait_for(rf"\[worker-2 popframe\.server#info\] login failed .*"
                      rf"peer=127\.0\.0\.1:{local}\b.*reason=MaildropInUse")
    # Wherever they land, attempts fail while the session is open.
    for _ in range(10):
        assert b"[IN-USE]" in in_use(pool.port())[1]
    holder.quit()
    with only(pool, 2):
        assert session(pool) == 2


def test_a_killed_worker_is_replaced_and_its_lock_released(pool: Pool) -> None:
    with only(pool, 1):
        holder = pop3_login(pool.port())
    assert pool.served_by(holder) == 1
    victim = pool.pids()[1]
    os.kill(victim, signal.SIGKILL)
    pool.wait_for(rf"worker-1 \(pid {victim}\) was killed by SIGKILL after [\d.]+s; "
                  rf"restarting it in [\d.]+s")
    # The parent reaped it, so the kernel has dropped its flock: alice's
    # maildrop opens again at once, and the other worker kept serving.
    assert session(pool) in (1, 2)
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        holder.stat()  # its connection died with its worker
    assert session(pool, "bob") in (1, 2)
    pool.wait_ready(1, replacing=victim)
    assert gone(victim)
    with only(pool, 1):
        assert session(pool) == 1


def test_a_worker_told_to_stop_leaves_the_shared_sockets_alone(pool: Pool, users: MailHome) -> None:
    """A worker that stops cleanly closes only its copy: no shutdown() of the
    socket for everyone, no unlink of the unix: path."""
    victim = pool.pids()[1]
    os.kill(victim, signal.SIGTERM)
    pool.wait_for(rf"worker-1 \(pid {victim}\) exited with status 0 after [\d.]+s; "
                  rf"restarting it in")
    assert (users.root / "pop3.sock").exists()
    # Had it shut the socket down, no process could accept on it any more,
    # its replacement included.
    assert session(pool) in (1, 2)
    with socket.socket(socket.AF_UNIX) as unix:
        unix.settimeout(10)
        unix.connect(str(users.root / "pop3.sock"))
        assert unix.recv(1024).startswith(b"+OK")
    pool.wait_ready(1, replacing=victim)


def test_sighup_reaches_every_worker(pool: Pool) -> None:
    pool.process.send_signal(signal.SIGHUP)
    pool.wait_for(r"SIGHUP received: forwarding it to 2 workers")
    for worker in (1, 2):
        pool.wait_for(rf"\[worker-{worker} popframe\.ops#info\] reloaded")
    assert pool.process.poll() is None
    assert session(pool) in (1, 2)


def test_sigterm_stops_every_worker(pool: Pool, users: MailHome) -> None:
    pids = list(pool.pids().values())
    holder = pop3_login(pool.port())
    pool.process.send_signal(signal.SIGTERM)
    returncode = pool.process.wait(workers.STOP_TIMEOUT + 20)
    assert returncode == 0
    assert all(process_state(pid) is None for pid in pids)  # stopped and reaped
    text = pool.text()
    assert "stopping the workers (2 running)" in text
    assert "survived" not in text and "SIGKILL" not in text
    assert not (users.root / "pop3.sock").exists()
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        holder.stat()


def test_workers_that_ignore_sigterm_are_killed(pool: Pool) -> None:
    stuck = pool.pids()[1]
    os.kill(stuck, signal.SIGSTOP)  # it cannot act on SIGTERM
    started = time.monotonic()
    pool.process.send_signal(signal.SIGTERM)
    pool.process.wait(workers.STOP_TIMEOUT + 20)
    assert time.monotonic() - started >= workers.STOP_TIMEOUT + 1 - 1  # + the grace
    assert f"worker-1 (pid {stuck}) did not stop within" in pool.text()
    assert process_state(stuck) is None


def test_workers_do_not_outlive_a_killed_parent(pool: Pool, users: MailHome) -> None:
    pids = list(pool.pids().values())
    pool.process.kill()
    pool.process.wait()
    for pid in pids:
        wait_until(lambda pid=pid: gone(pid), f"worker {pid} to exit", WAIT_SECONDS)
    # And the port is free for the next server.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pool.port()), timeout=10).recv(1)


def test_restarts_back_off() -> None:
    slot = _Slot(1)

    class Clock:
        def callLater(self, delay, function, *args):
            return delay

    pool = workers.WorkerPool.__new__(workers.WorkerPool)
    pool.reactor = Clock()
    delays = [pool._schedule_restart(slot, uptime=0.1) for _ in range(10)]
    assert delays[:3] == [workers.RESTART_DELAY, 2 * workers.RESTART_DELAY,
                          4 * workers.RESTART_DELAY]
    assert max(delays) == workers.MAX_RESTART_DELAY
    assert pool._schedule_restart(slot, uptime=workers.HEALTHY_UPTIME) == workers.RESTART_DELAY


# -- other endpoints: haproxy:, systemd: ------------------------------------------------------


def test_tls_endpoints_are_shared(users: MailHome) -> None:
    """tls:DIR (SNI, a directory of PEM files): Twisted wraps TLS around a
    tcp6 endpoint; the wrapping happens in each worker."""
    pems = users.root / "pems"
    pems.mkdir()
    (pems / "localhost.pem").write_bytes(users.cert.read_bytes() + users.key.read_bytes())
    args = ["--listen", f"tls:{pems}:port=0:interface=127.0.0.1",
            "--store", f"maildir:{users.template}", "--auth", f"passwd-file:{users.passwd_file}"]
    pool = start_pool(args, users.root, 2)
    try:
        context = ssl.create_default_context(cafile=str(users.cert))
        for worker in (1, 2):
            with only(pool, worker):
                client = poplib.POP3_SSL("localhost", pool.port(), context=context, timeout=10)
                client.user("alice")
                client.pass_("alice password")
                assert pool.served_by(client) == worker
                client.quit()
    finally:
        pool.stop()


_proxy_ports = iter(range(40000, 50000))


def proxied_session(pool: Pool, port: int) -> int:
    """Log in through a PROXY header claiming 192.0.2.7 as the client; the
    worker that served it, found by that address in the log."""
    source_port = next(_proxy_ports)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"PROXY TCP4 192.0.2.7 127.0.0.1 {source_port} 110\r\n".encode())
        reader = conn.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        conn.sendall(b"USER alice\r\nPASS alice password\r\nQUIT\r\n")
        assert reader.readline().startswith(b"+OK")
        assert reader.readline().startswith(b"+OK")
        assert reader.readline().startswith(b"+OK")
    match = pool.wait_for(rf"\[worker-(\d+) popframe\.server#info\] login ok .*"
                          rf"peer=192\.0\.2\.7:{source_port}\b")
    return int(match.group(1))


def test_haproxy_wrapping_is_applied_in_the_workers(users: MailHome) -> None:
    args = ["--listen", "haproxy:tcp:0:interface=127.0.0.1", "--store",
            f"maildir:{users.template}", "--auth", f"passwd-file:{users.passwd_file}",
            "--allow-plaintext-auth"]
    pool = start_pool(args, users.root, 2)
    try:
        for worker in (1, 2):
            with only(pool, worker):
                assert proxied_session(pool, pool.port()) == worker
    finally:
        pool.stop()


SYSTEMD_LAUNCHER = """
import os, sys
plain, proxied = int(sys.argv[1]), int(sys.argv[2])
os.dup2(plain, 3)
os.dup2(proxied, 4)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2", LISTEN_FDNAMES="plain:proxied")
os.execv(sys.executable, [sys.executable, "-c",
         "from twisted.scripts.twistd import run; run()", *sys.argv[3:]])
"""


def test_systemd_sockets_are_shared(users: MailHome) -> None:
    """Socket activation: systemd gives the parent the sockets (LISTEN_FDS),
    by index and by name, alone and behind haproxy:."""
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    try:
        fds = tuple(s.fileno() for s in sockets)
        command = [sys.executable, "-c", SYSTEMD_LAUNCHER, *map(str, fds),
                   "-n", "--pidfile=", "--logfile=-", "pop3"]
        args = ["--listen", "systemd:domain=INET:index=0",
                "--listen", "haproxy:systemd:domain=INET:name=proxied",
                "--store", f"maildir:{users.template}",
                "--auth", f"passwd-file:{users.passwd_file}", "--allow-plaintext-auth"]
        pool = start_pool(args, users.root, 2, command=command, pass_fds=fds)
    finally:
        ports = [s.getsockname()[1] for s in sockets]
        for s in sockets:
            s.close()  # the server has its own copies
    try:
        assert [pool.port(0), pool.port(1)] == ports
        for worker in (1, 2):
            with only(pool, worker):
                assert session(pool) == worker
                assert proxied_session(pool, ports[1]) == worker
    finally:
        pool.stop()


WORKER_LAUNCHER = """
import os, sys
log, listener = int(sys.argv[1]), int(sys.argv[2])
os.dup2(log, 3)
os.dup2(listener, 4)
os.execv(sys.executable, [sys.executable, "-c", sys.argv[3], *sys.argv[4:]])
"""


def test_a_worker_stops_when_the_pipe_from_its_parent_closes(users: MailHome) -> None:
    """The portable guard against outliving the parent (beside Linux's
    PR_SET_PDEATHSIG): end of file on stdin.  Here this test is the parent."""
    listener = socket.create_server(("127.0.0.1", 0))
    log_read, log_write = os.pipe()
    spec = {
        "worker": 7,
        "parent": os.getpid(),
        "argv": ["--listen", "tcp:0:interface=127.0.0.1", "--store", f"maildir:{users.template}",
                 "--auth", f"passwd-file:{users.passwd_file}"],
        "listeners": [{"description": "tcp:0:interface=127.0.0.1",
                       "fd": workers.FIRST_LISTENER_FD}],
        "systemd": {"count": 0, "names": []},
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_LAUNCHER, str(log_write), str(listener.fileno()),
         workers.BOOTSTRAP, str(workers.IMPORT_ROOT), json.dumps(spec)],
        stdin=subprocess.PIPE, pass_fds=(log_write, listener.fileno()))
    os.close(log_write)
    port = listener.getsockname()[1]
    listener.close()
    try:
        with os.fdopen(log_read, "rb") as log:
            for line in log:
                if b"ready (pid" in line:
                    break
            client = pop3_login(port)
            assert client.stat()[0] == 1
            client.quit()
            assert worker.stdin is not None
            worker.stdin.close()
            assert worker.wait(WAIT_SECONDS) == 0
            assert b"the parent process is gone" in log.read()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_workers_run_the_reactor_their_parent_runs(users: MailHome) -> None:
    """``twistd -r uvloop``: every worker serves on the asyncio reactor on
    uvloop too (the parent passes its reactor's name in the spec)."""
    pytest.importorskip("uvloop")
    command = [*TWISTD, "-r", "uvloop", "-n", "--pidfile=", "--logfile=-", "pop3"]
    server = start_pool(server_args(users), users.root, 2, command=command)
    try:
        served = set()
        for worker in (1, 2):
            with only(server, worker):
                served.add(session(server))
        assert served == {1, 2}
        for worker in (1, 2):
            assert f"[worker-{worker} popframe.workers#info] reactor: uvloop" in server.text()
    finally:
        server.stop()
