"""What a new user meets first, as issue 14 found it: the README's
commands on a stock Debian python3, configuration mistakes as one line
naming the option, the value and the fix (no usage text, no traceback),
``--version``, and help texts without stray spaces."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import TWISTD, MailHome
from test_packaging import project_copy

from popframe import __version__
from popframe.options import Options
from popframe.testing import POP3, run_twistd
from popframe.tls import make_self_signed

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent


def twistd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_twistd(*POP3, *args, cwd=cwd)


def base(home: MailHome) -> list[str]:
    return ["--store", f"maildir:{home.template}", "--auth", f"passwd-file:{home.passwd_file}"]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error, checked to be alone: no usage text, no traceback."""
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Usage:" not in output and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "popframe: " in line or "pop3: " in line]
    assert len(errors) == 1, output
    return errors[0]


def test_an_ssl_listener_whose_key_does_not_match(mail_home: MailHome, tmp_path: Path) -> None:
    make_self_signed(tmp_path / "other-cert.pem", tmp_path / "other-key.pem")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={tmp_path}/other-key.pem:certKey={mail_home.cert}"
    line = one_line_error(twistd("--listen", listen, *base(mail_home), "--workers", "1"))
    assert f"--listen: {listen!r}: private key does not match certificate" in line


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use(mail_home: MailHome, workers: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = one_line_error(twistd("--listen", f"tcp:{port}:interface=127.0.0.1",
                                     *base(mail_home), "--workers", workers))
    assert f"cannot listen: 127.0.0.1:{port}: Address already in use (another server" in line
    assert "--listen: 'tcp:" in line


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("tcp:notaport", "the port must be a number from 0 to 65535, not 'notaport', e.g. tcp:110"),
        ("ssl:9995", "an ssl: listener needs privateKey=KEY.pem and certKey=CERT.pem, e.g. ssl:995"),
        ("tcp21111", "unknown endpoint type 'tcp21111'"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_endpoint_mistakes(mail_home: MailHome, listen: str, expected: str, workers: str) -> None:
    line = one_line_error(twistd("--listen", listen, *base(mail_home), "--workers", workers))
    assert f"--listen: {listen!r}: {expected}" in line
    assert "use --workers 1" not in line


def test_auth_without_a_type(mail_home: MailHome) -> None:
    line = one_line_error(twistd("--listen", "tcp:0", "--store", f"maildir:{mail_home.template}",
                                 "--auth", "/etc/popframe/users"))
    assert ("--auth: '/etc/popframe/users' names no checker: write TYPE:ARGUMENTS, e.g. "
            "passwd-file:/etc/popframe/users") in line


def test_a_usage_error_says_where_help_is(mail_home: MailHome) -> None:
    result = twistd("--listen", "tcp:0", *base(mail_home), "--idle-timeout", "soon")
    line = one_line_error(result)
    assert "--idle-timeout: 'soon': expected a number" in line
    assert "twistd pop3 --help lists the options" in result.stderr


def test_version() -> None:
    result = twistd("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"popframe {__version__} (Twisted ")
    popframe = subprocess.run([TWISTD[0], "-m", "popframe", "--version"], capture_output=True,
                              text=True, timeout=60)
    assert popframe.stdout.strip() == f"popframe {__version__}"


def test_help_texts_have_no_stray_spaces() -> None:
    options = Options()
    for name, doc in options.docs.items():
        assert doc is None or "  " not in doc, (name, doc)
    text = twistd("--help").stdout
    for line in text.splitlines():
        words = line.strip()
        # Alignment is only between an option and its text.
        if words.startswith("-"):
            words = re.sub(r"^\S+(?: \S+)?\s{2,}", "", words)
        assert "  " not in words, line


def test_the_readme_commands_work_with_a_stock_python3(tmp_path: Path) -> None:
    """The first command, as written (the server asked only for its
    version), on the system's python3, which refuses pip installs outside
    a virtualenv; the second is what .ci/run runs."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd -n pop3 --demo",
        "bash tests/run.sh",
    ]
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == f"exec {commands[1]}"
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3")
    source = project_copy(tmp_path / "src")
    command = commands[0].replace("twistd -n pop3 --demo", "twistd pop3 --version")
    env = dict(os.environ, PATH="/usr/bin:/bin")
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(["bash", "-c", command], cwd=source, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"popframe {__version__} (Twisted")


@pytest.mark.core
def test_a_passwd_file_line_without_a_scheme_is_warned_about(tmp_path: Path, logged) -> None:
    from popframe.auth.passwdfile import PasswdFile

    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}secret\ncarol:pw\nbob:$6$salt$hash\nlocked:!\ndes:abJnggxhB/yWI\n")
    PasswdFile(users).load()
    warnings = [line for line in logged if "no {SCHEME} prefix" in line]
    assert warnings == [f"{users}:2: the password of 'carol' has no {{SCHEME}} prefix, so it is "
                        "read as a crypt(3) hash and no password matches it; write "
                        "{PLAIN}password, or a hash from popframe pw or doveadm pw"]
    assert "pw" not in warnings[0].split("'carol'")[0]  # the password itself is never logged
