"""A running ``twistd pop3`` changed and stopped: SIGHUP reloads (a new
certificate at the next handshake, open sessions untouched, a bad reload
refused), SIGTERM lets sessions finish for ``--shutdown-grace``, and
systemd hears READY/RELOADING/STOPPING through a socket the test listens
on.  Each with ``--workers 1`` and ``--workers 2``."""

from __future__ import annotations

import os
import poplib
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TWISTD, MailHome, server_args
from cryptography import x509

from popframe.ops import sdnotify
from popframe.testing import POP3, wait_for_log
from popframe.tls import make_self_signed

pytestmark = pytest.mark.process

WAIT = 60.0
MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"


class Running:
    """A twistd pop3 process, its log in a file, waited on by pattern."""

    def __init__(self, home: MailHome, args: list[str], workers: int,
                 env: dict[str, str] | None = None,
                 launcher: tuple[list[str], tuple[int, ...]] | None = None,
                 ports: list[int] | None = None) -> None:
        """``launcher``: the command that runs twistd and the descriptors
        it inherits; ``ports``: the ports, when the log cannot tell them."""
        self.log = home.root / "twistd.log"
        self.workers = workers
        command, fds = launcher or (TWISTD, ())
        with open(self.log, "wb") as sink:
            self.process = subprocess.Popen(
                [*command, *POP3, *args,
                 "--workers", str(workers)],
                cwd=home.root, stdout=sink, stderr=subprocess.STDOUT, env=env, pass_fds=fds)
        if workers == 1:
            found = self.wait_for(r"POP3Factory(?: \(TLS\))? starting on (\d+)", count=2)
        else:
            found = self.wait_for(r"listening on \S+:(\d+) for", count=2)
            self.wait_for(r"\] ready \(pid", count=workers)
        self.port, self.tls_port = ports or [int(m.group(1)) for m in found]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = WAIT) -> list[re.Match[str]]:
        return wait_for_log(self.process, self.log, pattern, count, timeout)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float = WAIT) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=[1, 2], ids=["workers-1", "workers-2"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def home(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    mail_home.add_user("bob", "bob password")
    mail_home.deliver("alice", MESSAGE)
    mail_home.deliver("bob", MESSAGE)
    return mail_home


@pytest.fixture
def server(home: MailHome, workers: int) -> Iterator[Running]:
    running = Running(home, [a for a in server_args(home, "--shutdown-grace", "3")
                             if a not in ("--workers", "1")], workers)
    yield running
    running.stop()


def tls_client(port: int, cafile: Path) -> poplib.POP3_SSL:
    context = ssl.create_default_context(cafile=str(cafile))
    return poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=10)


def login(client: poplib.POP3, user: str) -> poplib.POP3:
    client.user(user)
    client.pass_(f"{user} password")
    return client


def served_certificate(client: poplib.POP3) -> x509.Certificate:
    der = client.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def replace_certificate(home: MailHome, name: str) -> x509.Certificate:
    make_self_signed(home.cert, home.key, hostnames=("localhost", name))
    return x509.load_pem_x509_certificate(home.cert.read_bytes())


# -- SIGHUP ----------------------------------------------------------------------------


def test_sighup_serves_a_new_certificate_and_open_sessions_go_on(
        home: MailHome, server: Running, tmp_path: Path) -> None:
    old_cafile = tmp_path / "old.pem"
    old_cafile.write_bytes(home.cert.read_bytes())
    open_session = login(tls_client(server.tls_port, old_cafile), "alice")
    old = served_certificate(open_session)
    new = replace_certificate(home, "reloaded.example")
    assert new != old

    server.signal(signal.SIGHUP)
    server.wait_for(r"#info\] reloaded", count=server.workers)

    fresh = tls_client(server.tls_port, home.cert)  # ssl:
    assert served_certificate(fresh) == new
    fresh.quit()
    plain = poplib.POP3("127.0.0.1", server.port, timeout=10)
    plain.stls(context=ssl.create_default_context(cafile=str(home.cert)))  # STLS
    assert served_certificate(plain) == new
    plain.quit()
    # The session that started before goes on, with its old certificate.
    assert open_session.retr(1)[1][-1] == b"body"
    assert served_certificate(open_session) == old
    open_session.quit()


def test_a_reload_that_fails_changes_nothing(home: MailHome, server: Running) -> None:
    old = home.cert.read_bytes()
    other = home.root / "other"
    other.mkdir()
    make_self_signed(other / "cert.pem", other / "key.pem")
    home.key.write_bytes((other / "key.pem").read_bytes())  # a key of another certificate

    server.signal(signal.SIGHUP)
    failed = server.wait_for(r"reload failed, the running settings stay: (.*)",
                             count=server.workers)
    assert "private key does not match certificate" in failed[0].group(1)
    client = login(tls_client(server.tls_port, home.cert), "alice")
    assert served_certificate(client) == x509.load_pem_x509_certificate(old)
    client.quit()


def test_sighup_reads_the_config_file_again(home: MailHome, workers: int) -> None:
    other = home.root / "other-users"
    other.write_text(home.passwd_file.read_text().replace("alice:", "carol:"))
    config = home.root / "popframe.toml"
    setting = (f'listen = ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1:'
               f'privateKey={home.key}:certKey={home.cert}"]\n'
               f'store = "maildir:{home.template}"\n')
    config.write_text(setting + f'auth = ["passwd-file:{home.passwd_file}"]\n')
    server = Running(home, ["--config", str(config)], workers)
    try:
        config.write_text(setting + f'auth = ["passwd-file:{other}"]\n')
        server.signal(signal.SIGHUP)
        server.wait_for(r"#info\] reloaded", count=workers)
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("carol")
        client.pass_("alice password")  # carol's line is alice's old one
        client.quit()
    finally:
        server.stop()


# -- SIGTERM ---------------------------------------------------------------------------


def refused(port: int) -> bool:
    """Whether a connection to ``port`` is refused or closed unanswered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            return connection.recv(1) == b""
    except OSError:
        return True


def test_sigterm_lets_sessions_finish_within_the_grace(home: MailHome, server: Running) -> None:
    finishing = login(poplib.POP3("127.0.0.1", server.port, timeout=10), "alice")
    lingering = login(poplib.POP3("127.0.0.1", server.port, timeout=10), "bob")
    finishing.dele(1)
    lingering.dele(1)
    server.signal(signal.SIGTERM)
    server.wait_for(r"stopping: \d+ sessions in progress get 3(?:\.0)?s to finish", count=server.workers
                    if server.workers == 1 else 1)
    assert refused(server.port)  # no new connections once stopping
    finishing.quit()  # within the grace: its deletion is applied
    assert home.messages("alice") == []
    assert server.wait() == 0  # bob's session was closed after the grace
    assert "closing 1 sessions still in progress" in server.text()
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        lingering.quit()
    assert home.messages("bob") == [MESSAGE]  # not applied


# -- systemd ---------------------------------------------------------------------------


def test_sd_notify_reaches_a_datagram_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        assert sdnotify.ready("serving", environ={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert listener.recv(4096) == b"READY=1\nSTATUS=serving"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(f"\0popframe-test-{os.getpid()}")  # an abstract socket
        assert sdnotify.stopping(environ={"NOTIFY_SOCKET": f"@popframe-test-{os.getpid()}"})
        assert listener.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    assert not sdnotify.ready(environ={})


def test_systemd_hears_ready_reloading_and_stopping(home: MailHome, workers: int,
                                                   tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        listener.settimeout(WAIT)
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
        args = [a for a in server_args(home) if a not in ("--workers", "1")]
        server = Running(home, args, workers, env=env)
        try:
            messages = [listener.recv(4096).decode().splitlines()]
            assert messages[0][0] == "READY=1"
            # Only the parent speaks to systemd: one READY=1 for the pool.
            server.signal(signal.SIGHUP)
            reloading = listener.recv(4096).decode().splitlines()
            assert reloading[0] == "RELOADING=1"
            assert re.fullmatch(r"MONOTONIC_USEC=\d+", reloading[1])
            assert listener.recv(4096).decode().splitlines()[0] == "READY=1"
            server.wait_for(r"#info\] reloaded", count=workers)
            server.signal(signal.SIGTERM)
            assert listener.recv(4096).decode().splitlines()[0] == "STOPPING=1"
            assert server.wait() == 0
        finally:
            server.stop()


@pytest.mark.core
def test_a_reload_keeps_the_failure_counts_and_takes_new_limits(mail_home: MailHome) -> None:
    """The throttle store (and its counts) stays while --throttle-store and
    --throttle-prefix do; the limits are the new ones."""
    from popframe.assembly import reload_settings
    from popframe.options import Options
    from popframe.settings import Settings

    config = mail_home.root / "popframe.toml"
    setting = (f'listen = ["tcp:0"]\nstore = "maildir:{mail_home.template}"\n'
               f'auth = ["passwd-file:{mail_home.passwd_file}"]\nworkers = 1\n')
    config.write_text(setting + "max-auth-failures = 3\n")
    options = Options()
    options.parseOptions(["--config", str(config)])
    running = Settings.from_options(options)
    config.write_text(setting + "max-auth-failures = 5\n")
    new = reload_settings(running)
    assert new.throttle is not None and running.throttle is not None
    assert new.throttle.store is running.throttle.store
    assert new.throttle.max_auth_failures == 5
    assert new.store is not running.store and new.checkers != running.checkers
    config.write_text(setting + 'throttle-prefix = "other:"\n')
    assert reload_settings(running).throttle.store is not running.throttle.store


#: What a factory keeps across reloads (live state and its clock).
LIVE_STATE = {"POP3Factory": {"clock", "connections_from", "connection_count", "user_sessions",
                              "observer", "stopping"},
              "LMTPFactory": {"clock"}}


@pytest.mark.core
def test_every_factory_attribute_is_configuration_or_live_state(mail_home: MailHome) -> None:
    """A reload replaces CONFIGURED_ATTRIBUTES on the running factories and
    keeps the rest: a new attribute must be one or the other (add it to
    popframe.assembly.CONFIGURED_ATTRIBUTES, or to LIVE_STATE here)."""
    from popframe.assembly import CONFIGURED_ATTRIBUTES, make_factory, make_lmtp_factory
    from popframe.options import Options
    from popframe.settings import Settings

    options = Options()
    options.parseOptions(["--listen", "tcp:0", "--lmtp", "tcp:0", "--store",
                          f"maildir:{mail_home.template}", "--auth",
                          f"passwd-file:{mail_home.passwd_file}", "--workers", "1"])
    settings = Settings.from_options(options)
    for factory in (make_factory(settings), make_lmtp_factory(settings)):
        kind = type(factory).__name__
        configured = set(CONFIGURED_ATTRIBUTES[kind])
        assert set(vars(factory)) == configured | LIVE_STATE[kind], kind
