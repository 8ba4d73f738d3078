"""``twistd pop3``: plugin discovery, options, configuration errors, demo."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import start_server

from popframe.tap import Options
from popframe.testing import run_twistd

pytestmark = pytest.mark.process


def test_twistd_lists_the_pop3_plugin() -> None:
    result = run_twistd("--help")
    assert result.returncode == 0
    assert "pop3" in result.stdout


def test_help_documents_every_option() -> None:
    result = run_twistd("pop3", "--help")
    for option in ["--listen", "--store", "--auth", "--tls-cert", "--tls-key", "--demo",
                   "--allow-plaintext-auth", "--idle-timeout", "--help-auth", "--help-stores"]:
        assert option in result.stdout


def test_help_auth_lists_passwd_file_beside_twisteds_checkers() -> None:
    result = run_twistd("pop3", "--help-auth")
    assert "passwd-file" in result.stdout and "memory" in result.stdout


def test_help_stores_lists_maildir() -> None:
    result = run_twistd("pop3", "--help-stores")
    assert "maildir" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--listen: give at least one endpoint"),
        (["--listen", "tcp:0"], "--store: required"),
        (["--listen", "tcp:0", "--store", "maildir:/tmp/%u"], "--auth: required"),
        (["--listen", "tcp:0", "--store", "maildir:/tmp/%u", "--auth", "passwd-file:/nonexistent"],
         "--auth: passwd-file: "),
        (["--listen", "nonsense:0", "--store", "maildir:/tmp/%u", "--auth", "memory:a:b"],
         "--listen: "),
        (["--listen", "tcp:0", "--store", "nosuch:/x", "--auth", "memory:a:b"],
         "--store: "),
        (["--listen", "tcp:0", "--store", "maildir:/tmp/%u", "--auth", "memory:a:b",
          "--tls-cert", "/nonexistent/cert.pem"], "--tls-cert: "),
    ],
)
def test_configuration_errors_name_the_key(args: list[str], message: str) -> None:
    result = run_twistd("pop3", *args)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_twisteds_memory_checker_logs_users_in(tmp_path: Path) -> None:
    """``--auth memory:USER:PASSWORD`` (Twisted's own test checker) keeps
    text where cred credentials carry bytes; popframe bridges the two."""
    (tmp_path / "alice" / "Maildir").mkdir(parents=True)
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--store", f"maildir:{tmp_path}/%u/Maildir",
            "--auth", "memory:alice:s3cret:bob:other", "--workers", "1"]
    server = start_server(args, tmp_path, 1)
    try:
        import poplib

        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        assert client.pass_("s3cret").startswith(b"+OK")
        client.quit()
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_("other")
        client.quit()
    finally:
        server.stop()


@pytest.mark.core
def test_demo_listens_on_the_documented_ports(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = Options()
    options.parseOptions(["--demo"])
    assert options["listen"][0].startswith("tcp:1110:interface=127.0.0.1")
    assert options["listen"][1].startswith("ssl:1995:interface=127.0.0.1:")
    assert (tmp_path / "popframe-demo" / "users").exists()


def test_demo_serves_mail(tmp_path: Path) -> None:
    server = start_server(["--demo", "--listen", "tcp:0:interface=127.0.0.1"], tmp_path, 1)
    try:
        import poplib

        password = (tmp_path / "popframe-demo" / "demo-password").read_text().strip()
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("demo")
        client.pass_(password)
        count, _ = client.stat()
        assert count >= 3
        client.retr(1)
        client.quit()
    finally:
        server.stop()
    assert password in server.log.read_text()  # the instructions were printed


@pytest.mark.core
def test_checked_options_become_frozen_settings(tmp_path: Path) -> None:
    import dataclasses

    from popframe.auth.credentials import DEFAULT_MECHANISMS
    from popframe.settings import Settings

    (tmp_path / "users").touch()
    argv = ["--listen", "tcp:0", "--store", f"maildir:{tmp_path}/%u",
            "--auth", f"passwd-file:{tmp_path / 'users'}", "--preauth-timeout", "0",
            "--master-user", "support", "--workers", "3", "--auth-cache-ttl", "60"]
    options = Options()
    options.parseOptions(argv)
    settings = Settings.from_options(options)
    assert settings.listen == ("tcp:0:backlog=1024",)
    assert settings.store is options.store
    assert settings.checkers == tuple(options["credCheckers"])
    assert settings.preauth_timeout is None  # 0: off
    assert settings.idle_timeout == 600.0 and settings.max_connections_per_ip == 20
    assert settings.mechanisms == DEFAULT_MECHANISMS  # the default, parsed like a given value
    assert settings.master_users == frozenset({"support"})
    assert (settings.workers, settings.auth_cache_ttl) == (3, 60.0)
    assert settings.throttle is options.throttle and settings.throttle is not None
    assert settings.login_delay is options.login_delay_policy
    assert settings.tls is None and settings.demo is None
    assert settings.argv == tuple(argv)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 1  # type: ignore[misc]


@pytest.mark.core
def test_settings_need_checked_options() -> None:
    from popframe.settings import Settings

    with pytest.raises(ValueError, match="parseOptions"):
        Settings.from_options(Options())
