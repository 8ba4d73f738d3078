"""More real clients from the Debian archive against a real server, each
with plain (on loopback), STLS and implicit TLS, verifying the
certificate: s-nail, Perl's Net::POP3 and Jakarta Mail's POP3 provider.

The corpus is tests/test_integration_clients.py's (a bare-LF message with
a dot-leading line, a CRLF one, one without a final newline) and an 8-bit
message (UTF-8 and Latin-1 octets, 0xFF).  Every client must get each
message octet for octet as RETR sends it (CRLF line ends, dot-unstuffed),
except for what a client documents that it changes (s-nail: see
test_s_nail), see the UIDLs poplib sees, and leave the maildrop as it was.
"""

from __future__ import annotations

import os
import poplib
import re
import subprocess
from pathlib import Path

import pytest
from test_integration_clients import MESSAGES, require
from test_integration_curl import crlf
from test_integration_poplib import client_context
from test_watching import wait_for

pytestmark = pytest.mark.process

HERE = Path(__file__).resolve().parent
CLIENTS = HERE / "clients"
#: Jakarta Mail and its activation dependency, as Debian installs them.
JARS = [Path("/usr/share/java/jakarta-mail.jar"), Path("/usr/share/java/jakarta-activation.jar")]
HOST = "localhost"  # s-nail checks host names, not IP addresses, against the certificate
PASSWORD = "alice password"

EIGHT_BIT = (
    "From: d@example.org\nTo: alice@example.org\nSubject: 8bit\n"
    "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    "Grüße — naïve café\n"
).encode() + b"Latin-1 \xe9t\xe9, and \xff\n"
CORPUS = [*MESSAGES, EIGHT_BIT]
MODES = ["plain", "starttls", "ssl"]


def as_received(stored: bytes) -> bytes:
    """What RETR carries, unstuffed: CRLF line ends, a final CRLF."""
    wire = crlf(stored)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def unix_lines(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


@pytest.fixture
def alice(mail_home, pop3_server):
    for message in CORPUS:
        mail_home.deliver("alice", message)
    return pop3_server


def port_for(server, mode: str) -> int:
    return server.tls_port if mode == "ssl" else server.port


def uidls(server) -> list[str]:
    """What poplib sees: "N UID" per message."""
    client = poplib.POP3_SSL("127.0.0.1", server.tls_port, context=client_context(), timeout=10)
    try:
        client.user("alice")
        client.pass_(PASSWORD)
        return [line.decode() for line in client.uidl()[1]]
    finally:
        client.quit()


def assert_sessions(server, mode: str) -> None:
    """The client's session (the only one so far) was logged, with TLS or
    without as ``mode`` says, and deleted nothing."""
    sessions = wait_for(lambda: re.findall(
        r"session ended user='alice' .* tls=(\S+) .* deleted=(\d+)",
        server.log.read_text(errors="replace")), "the session line")
    assert len(sessions) == 1, sessions
    tls, deleted = sessions[0]
    assert (tls != "-") == (mode != "plain"), sessions
    assert deleted == "0"


def assert_kept(mail_home) -> None:
    assert mail_home.messages("alice") == CORPUS


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, capture_output=True, timeout=120, cwd=cwd,
                            env={**os.environ, "HOME": str(cwd), "LC_ALL": "C.UTF-8"},
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode()


def assert_fetched(out: Path, listing: str, server, line_ends: bytes = b"\r\n") -> None:
    """Each OUT/N.eml is message N as sent (with ``line_ends``), and the
    "N UID ..." lines match UIDL."""
    assert [" ".join(line.split()[:2]) for line in listing.splitlines()] == uidls(server)
    for number, stored in enumerate(CORPUS, 1):
        expected = as_received(stored).replace(b"\r\n", line_ends)
        assert (out / f"{number}.eml").read_bytes() == expected, number


# -- s-nail ------------------------------------------------------------------------

#: The ``From_`` line s-nail writes before each message of an mbox.
FROM_LINE = re.compile(rb"^From (\S+) [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\n",
                       re.MULTILINE)


@pytest.mark.parametrize("mode", MODES)
def test_s_nail(tmp_path, mail_home, alice, mode: str) -> None:
    """s-nail reads the maildrop as a folder and copies every message
    into an mbox (``copy * FILE``), then leaves without changing it
    (``xit``).  Documented changes (s-nail(1), mbox-rfc4155, copy): each
    message is stored in the local mbox form, so it gains a ``From_`` line
    before it and an empty line after it, and its CRLF line ends become
    LF; every other octet (8-bit ones, the unstuffed dot line) is kept."""
    require("s-nail")
    scheme = "pop3s" if mode == "ssl" else "pop3"
    host = f"{HOST}:{port_for(alice, mode)}"
    mbox = tmp_path / "out.mbox"
    run(["s-nail", "-:/", "-N", "-#", "-Sv15-compat", "-Sttycharset=utf-8",
         "-Spop3-bulk-load", "-Spop3-no-apop", f"-Stls-ca-file={mail_home.cert}",
         f"-Spassword-alice@{host}={PASSWORD}",
         *(["-Spop3-use-starttls"] if mode == "starttls" else []),
         "-Y", f"copy * {mbox}", "-Y", "xit", "-f", f"{scheme}://alice@{host}"], tmp_path)
    data = mbox.read_bytes()
    senders = FROM_LINE.findall(data)
    assert senders == [b"a@example.org", b"b@example.org", b"c@example.org", b"d@example.org"]
    assert FROM_LINE.split(data)[::2] == [b""] + [unix_lines(as_received(m)) + b"\n"
                                                  for m in CORPUS]
    assert_sessions(alice, mode)
    assert_kept(mail_home)


# -- Perl: Net::POP3 ---------------------------------------------------------------


def require_perl_tls(mode: str) -> None:
    require("perl")
    if mode != "plain" and subprocess.run(["perl", "-MIO::Socket::SSL", "-e", "1"],
                                          capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("IO::Socket::SSL is missing: tests/run.sh installs libio-socket-ssl-perl")
        pytest.skip("IO::Socket::SSL is not installed (libio-socket-ssl-perl)")


@pytest.mark.parametrize("mode", MODES)
def test_perl_net_pop3(tmp_path, mail_home, alice, mode: str) -> None:
    """Net::POP3: login, UIDL, LIST, get each message: every octet as
    sent, dot-unstuffed.  The line ends are the client's: on a plain
    socket Net::Cmd's own line reader splits on CRLF and ends each line
    with "\n"; over TLS (the IO::Socket::SSL class) its readline keeps
    the CRLF as sent."""
    require_perl_tls(mode)
    listing = run(["perl", str(CLIENTS / "netpop3_fetch.pl"), mode, HOST,
                   str(port_for(alice, mode)), "alice", PASSWORD, str(mail_home.cert),
                   str(tmp_path)], tmp_path)
    assert_sessions(alice, mode)
    assert_fetched(tmp_path, listing, alice, b"\n" if mode == "plain" else b"\r\n")
    sizes = [int(line.split()[2]) for line in listing.splitlines()]
    assert sizes == [len(as_received(m)) for m in CORPUS]  # LIST: the octets RETR sends
    assert_kept(mail_home)


# -- Java: Jakarta Mail --------------------------------------------------------------


@pytest.fixture(scope="module")
def jakarta(tmp_path_factory) -> list[str]:
    """The command that runs tests/clients/JakartaFetch.java, compiled once."""
    require("javac")
    require("java")
    missing = [str(jar) for jar in JARS if not jar.exists()]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: tests/run.sh installs libjakarta-mail-java")
        pytest.skip("libjakarta-mail-java is not installed")
    classes = tmp_path_factory.mktemp("jakarta")
    classpath = os.pathsep.join(map(str, JARS))
    result = subprocess.run(["javac", "-d", str(classes), "-cp", classpath,
                             str(CLIENTS / "JakartaFetch.java")], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return ["java", "-cp", os.pathsep.join([str(classes), classpath]), "JakartaFetch"]


@pytest.mark.parametrize("mode", MODES)
def test_jakarta_mail(tmp_path, mail_home, alice, jakarta, mode: str) -> None:
    """Jakarta Mail's pop3 / pop3s stores (STLS required with
    mail.pop3.starttls.required): POP3Folder.getUID, and
    MimeMessage.writeTo of each untouched message, octet for octet."""
    listing = run([*jakarta, mode, HOST, str(port_for(alice, mode)), "alice", PASSWORD,
                   str(mail_home.cert), str(tmp_path)], tmp_path)
    assert_sessions(alice, mode)
    assert_fetched(tmp_path, listing, alice)
    assert_kept(mail_home)


