"""examples/popframe.service and popframe.socket: systemd accepts them, and
popframe serves the two sockets the socket unit passes (110 with STLS, 995
with implicit TLS) with the listeners the service unit names."""

from __future__ import annotations

import os
import poplib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MailHome
from test_lifecycle import Running, login, replace_certificate, served_certificate

from popframe.testing import TWISTD

pytestmark = pytest.mark.process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UNITS = ("popframe.socket", "popframe.service")


def exec_start() -> list[str]:
    """The service unit's ExecStart, as words (continuation lines joined)."""
    text = (EXAMPLES / "popframe.service").read_text().replace("\\\n", " ")
    line = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE)
    assert line is not None
    return line.group(1).split()


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (apt install systemd)")
        pytest.skip("no systemd-analyze here")
    twistd = Path(sys.executable).parent / "twistd"
    for name in UNITS:
        text = (EXAMPLES / name).read_text()
        # The unit names an installed twistd: this environment's.
        (tmp_path / name).write_text(text.replace("/opt/popframe/.venv/bin/twistd", str(twistd)))
    result = subprocess.run([tool, "verify", *(str(tmp_path / name) for name in UNITS)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # unknown keys are only warnings


@pytest.mark.core
def test_the_service_unit_is_hardened() -> None:
    text = (EXAMPLES / "popframe.service").read_text()
    for setting in ("Type=notify", "KillMode=mixed", "ExecReload=/bin/kill -HUP $MAINPID",
                    "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
        assert setting in text, setting


LAUNCHER = """
import os, sys
first, second = int(sys.argv[1]), int(sys.argv[2])
os.dup2(first, 3)
os.dup2(second, 4)
# systemd names each descriptor after its socket unit unless told otherwise.
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2",
                  LISTEN_FDNAMES="popframe.socket:popframe.socket")
os.execv(sys.executable, [sys.executable, "-c", sys.argv[3], *sys.argv[4:]])
"""


@pytest.mark.parametrize("workers", [1, 2], ids=["workers-1", "workers-2"])
def test_the_socket_units_sockets_are_served(mail_home: MailHome, workers: int,
                                             tmp_path: Path) -> None:
    """Two IPv6 sockets that take IPv4 too, as BindIPv6Only=both makes them."""
    words = exec_start()
    listen = [words[i + 1] for i, word in enumerate(words) if word == "--listen"]
    assert listen == ["systemd:domain=INET6:index=0",
                      "implicit-tls:systemd:domain=INET6:index=1"]
    mail_home.add_user("alice", "alice password")
    sockets = [socket.create_server(("::1", 0), family=socket.AF_INET6) for _ in range(2)]
    ports = [s.getsockname()[1] for s in sockets]
    fds = tuple(s.fileno() for s in sockets)
    command = [sys.executable, "-c", LAUNCHER, *map(str, fds), TWISTD[2]]
    args = [arg for address in listen for arg in ("--listen", address)]
    args += ["--store", f"maildir:{mail_home.template}",
             "--auth", f"passwd-file:{mail_home.passwd_file}",
             "--tls-cert", str(mail_home.cert), "--tls-key", str(mail_home.key)]
    try:
        server = Running(mail_home, args, workers, launcher=(command, fds), ports=ports)
    finally:
        for s in sockets:
            s.close()
    try:
        context = ssl.create_default_context(cafile=str(mail_home.cert))
        context.check_hostname = False
        plain = poplib.POP3("::1", ports[0], timeout=10)
        plain.stls(context=context)
        login(plain, "alice").quit()
        implicit = login(poplib.POP3_SSL("::1", ports[1], context=context, timeout=10), "alice")
        first = served_certificate(implicit)
        implicit.quit()
        # A reload switches implicit-tls: to the new --tls-cert too.
        new = replace_certificate(mail_home, "reloaded.example")
        assert new != first
        server.signal(signal.SIGHUP)
        server.wait_for(r"#info\] reloaded", count=workers)
        context = ssl.create_default_context(cafile=str(mail_home.cert))
        context.check_hostname = False
        again = poplib.POP3_SSL("::1", ports[1], context=context, timeout=10)
        assert served_certificate(again) == new
        again.quit()
    finally:
        server.stop()
