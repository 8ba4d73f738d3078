"""``--config FILE`` (TOML keys that mirror the options), ``popframe
check-config`` and examples/popframe.toml."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import MailHome
from twisted.python import usage

from popframe.cli import main as popframe
from popframe.config.check import check_config
from popframe.config.file import INLINE, arguments, read_toml
from popframe.config.keys import Kind, key_table
from popframe.options import Options

pytestmark = pytest.mark.core

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "popframe.toml"


def parsed(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def basics(home: MailHome) -> str:
    return (f'listen = ["tcp:0:interface=127.0.0.1"]\n'
            f'store = "maildir:{home.template}"\n'
            f'auth = ["passwd-file:{home.passwd_file}"]\n')


# -- the key table -------------------------------------------------------------------


def test_every_option_is_a_key_with_its_type() -> None:
    keys = Options.config_keys()
    assert keys["idle-timeout"].kind is Kind.VALUE and keys["idle-timeout"].coerce is float
    assert keys["workers"].coerce is int
    assert keys["allow-plaintext-auth"].kind is Kind.FLAG
    assert keys["listen"].kind is Kind.REPEATABLE and keys["auth"].kind is Kind.REPEATABLE
    assert keys["master-user"].kind is Kind.REPEATABLE
    assert keys["store"].kind is Kind.VALUE and keys["store"].coerce is None
    # Actions are not settings.
    for action in ("help", "version", "config", "help-stores", "help-auth", "help-auth-type"):
        assert action not in keys
    # Every long option that takes a value or is a flag is a key.
    options = Options()
    names = {name.rstrip("=") for name in options.longOpt}
    actions = {"help", "version", "config", "help-stores", "help-auth", "help-auth-type"}
    assert names - actions == set(keys)


def test_a_new_option_is_a_key_without_code() -> None:
    class More(Options):
        optParameters = [["frobs", None, 3, "How many frobs.", int]]
        optFlags = [["frobnicate", None, "Frobnicate."]]

        def opt_widget(self, value: str) -> None:
            """A widget, repeatable."""

    keys = key_table(More)
    assert keys["frobs"].coerce is int and keys["frobs"].default == 3
    assert keys["frobnicate"].kind is Kind.FLAG
    assert keys["widget"].kind is Kind.REPEATABLE and keys["widget"].help == "A widget, repeatable."


def test_values_become_arguments() -> None:
    args, problems = arguments(
        {"listen": ["tcp:110", "tcp:111"], "idle-timeout": 300, "allow-plaintext-auth": True,
         "demo": False, "store": {"type": "maildir", "file": "/var/mail/%u"},
         "mechanisms": "PLAIN"}, Options.config_keys(), "f.toml")
    assert problems == []
    assert args == ["--listen=tcp:110", "--listen=tcp:111", "--idle-timeout=300",
                    "--allow-plaintext-auth", "--store=maildir:/var/mail/%u",
                    "--mechanisms=PLAIN"]


def test_inline_plugin_settings_are_read_through_read_toml() -> None:
    args, problems = arguments(
        {"auth": [{"type": "ldap", "url": ["ldaps://ldap"], "base": "dc=x"}]},
        Options.config_keys(), "/etc/popframe/popframe.toml")
    assert problems == []
    assert args == ["--auth=ldap:/etc/popframe/popframe.toml#auth[1]"]
    assert read_toml("/etc/popframe/popframe.toml#auth[1]") == {
        "url": ["ldaps://ldap"], "base": "dc=x"}
    del INLINE["/etc/popframe/popframe.toml#auth[1]"]


# -- --config ------------------------------------------------------------------------


def test_the_file_configures_and_the_command_line_overrides(mail_home: MailHome) -> None:
    config = write(mail_home.root / "popframe.toml", basics(mail_home) + (
        "idle-timeout = 900\nmax-auth-failures = 5\nallow-plaintext-auth = true\n"
        'master-user = ["support"]\n'))
    options = parsed("--config", str(config), "--idle-timeout", "1200",
                     "--listen", "tcp:0:interface=127.0.0.2")
    assert options["idle-timeout"] == 1200.0  # the command line wins
    assert options["max-auth-failures"] == 5
    assert options["allow-plaintext-auth"]
    assert options["master-users"] == {"support"}
    # A repeatable option on the command line replaces the file's list.
    assert options["listen"] == ["tcp:0:interface=127.0.0.2:backlog=1024"]
    assert options.from_config_file >= {"store", "auth", "master-user"}


def test_an_error_in_the_file_names_the_file_and_key(mail_home: MailHome) -> None:
    config = write(mail_home.root / "popframe.toml", basics(mail_home) + "idle-timeout = -1\n")
    with pytest.raises(usage.UsageError, match=rf"{re.escape(str(config))}: idle-timeout: must "
                       "not be negative"):
        parsed("--config", str(config))
    config.write_text(basics(mail_home) + 'idle-timeout = "soon"\nstor = 1\n')
    with pytest.raises(usage.UsageError) as caught:
        parsed("--config", str(config))
    assert 'idle-timeout = "soon": expected a number' in str(caught.value)
    assert "stor = 1: unknown key; did you mean 'store'?" in str(caught.value)
    assert "popframe check-config" in str(caught.value)


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "listen = [\n")
    with pytest.raises(usage.UsageError, match="not valid TOML"):
        parsed("--config", str(config))


@pytest.mark.process
def test_twistd_serves_from_a_config_file(mail_home: MailHome) -> None:
    from conftest import start_server

    mail_home.add_user("alice", "alice password")
    config = write(mail_home.root / "popframe.toml", basics(mail_home) + "workers = 1\n")
    server = start_server(["--config", str(config)], mail_home.root)
    try:
        import poplib

        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("alice password")
        assert client.stat() == (0, 0)
        client.quit()
    finally:
        server.stop()


# -- check-config --------------------------------------------------------------------


BAD = """\
listen = ["tcp:notaport", "ssl:995", "tcp21111"]
store = "mdir:/var/mail/%u"
auth = ["/etc/users"]
idle-timeout = "soon"
stor = 1
workers = 2
throttle-max = 0.5
allow-plaintext-auth = "yes"
tls-key = "/nonexistent/key.pem"
"""


def test_check_config_reports_every_mistake(tmp_path: Path, capsys) -> None:
    config = write(tmp_path / "popframe.toml", BAD)
    assert popframe(["check-config", str(config)]) == 1
    out = capsys.readouterr().out.splitlines()
    expected = [
        'idle-timeout = "soon": expected a number',
        "stor = 1: unknown key; did you mean 'store'?",
        'allow-plaintext-auth = "yes": expected true or false',
        "auth = \"/etc/users\": '/etc/users' names no checker: write TYPE:ARGUMENTS, e.g. "
        "passwd-file:/etc/users",
        'tls-key = "/nonexistent/key.pem": needs --tls-cert',
        "throttle-max = 0.5: must not be less than --throttle-base",
        "store = \"mdir:/var/mail/%u\": no such store 'mdir'",
        'listen = "tcp:notaport": the port must be a number',
        'listen = "ssl:995": an ssl: listener needs privateKey=KEY.pem and certKey=CERT.pem',
        "listen = \"tcp21111\": unknown endpoint type 'tcp21111'",
    ]
    for text in expected:
        assert any(line.startswith(f"{config}: {text}") for line in out), (text, out)
    assert out[-1] == f"10 mistakes in {config}"


def test_check_config_accepts_a_good_file(mail_home: MailHome, capsys) -> None:
    config = write(mail_home.root / "popframe.toml", basics(mail_home))
    assert popframe(["check-config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: OK\n"


def test_check_config_names_a_missing_file(tmp_path: Path, capsys) -> None:
    assert popframe(["check-config", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read the configuration file: No such file" in capsys.readouterr().out


def test_check_config_is_a_documented_command(capsys) -> None:
    with pytest.raises(SystemExit):
        popframe(["--help"])
    assert "check-config" in capsys.readouterr().out


# -- examples/popframe.toml -----------------------------------------------------------


def test_the_example_has_every_key_and_comments() -> None:
    text = EXAMPLE.read_text()
    for name in Options.config_keys():
        assert re.search(rf"^(# )?{re.escape(name)} = ", text, re.MULTILINE), name
    # Each key set or shown is explained by a comment within the lines before it.
    assert text.count("\n#") > len(Options.config_keys())


def test_check_config_accepts_the_example(mail_home: MailHome) -> None:
    """With its /etc/popframe and /var/mail paths moved under a test directory."""
    etc = mail_home.root / "etc"
    etc.mkdir()
    shutil.copy(mail_home.cert, etc / "cert.pem")
    shutil.copy(mail_home.key, etc / "key.pem")
    shutil.copy(mail_home.passwd_file, etc / "users")
    text = EXAMPLE.read_text().replace("/etc/popframe/", f"{etc}/").replace(
        "/var/mail/", f"{mail_home.root}/mail/")
    config = write(mail_home.root / "popframe.toml", text)
    assert check_config(config) == []


def test_the_sql_checker_takes_its_settings_inline(mail_home: MailHome, tmp_path: Path) -> None:
    """``{ type = "sql", ... }`` in a --config file: the SQL checker reads the
    table through read_toml as it would read its own file."""
    database = tmp_path / "users.sqlite"
    assert popframe(["db", "upgrade", "--dsn", f"sqlite:///{database}"]) == 0
    config = write(mail_home.root / "popframe.toml", (
        f'listen = ["tcp:0:interface=127.0.0.1"]\nstore = "maildir:{mail_home.template}"\n'
        f'[[auth]]\ntype = "sql"\ndsn = "sqlite:///{database}"\n'))
    options = parsed("--config", str(config))
    checker = options["credCheckers"][0]
    assert type(checker).__name__ == "SQLChecker"
    config.write_text(config.read_text() + 'colour = "blue"\n')
    with pytest.raises(usage.UsageError, match=r"popframe\.toml#auth\[1\]: unknown key 'colour'"):
        parsed("--config", str(config))


# -- the RFC 1939 autologout minimum -------------------------------------------------


def test_a_short_idle_timeout_is_refused_unless_allowed(mail_home: MailHome, capsys) -> None:
    """RFC 1939 section 3: the autologout timer is at least 10 minutes;
    shorter only with --allow-short-idle-timeout (0 turns it off)."""
    base = ("--listen", "tcp:0", "--store", f"maildir:{mail_home.template}",
            "--auth", f"passwd-file:{mail_home.passwd_file}")
    with pytest.raises(usage.UsageError) as caught:
        parsed(*base, "--idle-timeout", "599")
    message = str(caught.value)
    assert message.startswith("--idle-timeout: 599 s is under RFC 1939's 600 s minimum")
    assert "--allow-short-idle-timeout" in message and "--preauth-timeout" in message
    assert parsed(*base, "--idle-timeout", "599",
                  "--allow-short-idle-timeout")["idle-timeout"] == 599.0
    assert parsed(*base, "--idle-timeout", "600")["idle-timeout"] == 600.0
    assert parsed(*base, "--idle-timeout", "0")["idle-timeout"] == 0.0
    config = write(mail_home.root / "popframe.toml", basics(mail_home) + "idle-timeout = 30\n")
    assert popframe(["check-config", str(config)]) == 1
    assert f"{config}: idle-timeout = 30: 30 s is under RFC 1939's" in capsys.readouterr().out
    config.write_text(basics(mail_home) + "idle-timeout = 30\nallow-short-idle-timeout = true\n")
    assert popframe(["check-config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: OK\n"
