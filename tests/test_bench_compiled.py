"""``benchmarks/ceiling/popframe_compiled.py``, issue 18's prototype of a
compiled transaction loop: a client sees the same octets as from
popframe's own path (the same launcher with ``--python``), whether it
waits for each reply or pipelines, and the C load generator's checks
(every message's size and CRC) pass against it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus  # noqa: E402
from servers import Server, make_server  # noqa: E402

pytestmark = pytest.mark.process

USER = "u0002"


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("corpus")
    corpus.generate(where, users=3, messages=6, scheme="SSHA512", quiet=True)
    return where


@pytest.fixture
def servers(mail: Path, tmp_path: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for kind in ("compiled-w1", "compiled-w1+python"):
            server = make_server(kind, tmp_path / kind.replace("+", "-"), mail)
            server.copy_users(["u0001", "u0002", "u0003"])
            server.start()
            started[kind] = server
        yield started
    finally:
        for server in started.values():
            server.stop()


def password(mail: Path) -> bytes:
    manifest = json.loads((mail / corpus.MANIFEST).read_text())
    return manifest["users"][USER]["password"].encode()


def transcript(port: int, login: list[bytes], lines: list[bytes], pipelined: bool) -> bytes:
    """Everything the server sent, to the end of the connection (the last
    line is QUIT); the login waits for each reply, the rest as asked."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        received = [reader.readline()]
        for line in login:
            sock.sendall(line + b"\r\n")
            received.append(reader.readline())
        if pipelined:
            sock.sendall(b"".join(line + b"\r\n" for line in lines))
        else:
            for line in lines[:-1]:
                sock.sendall(line + b"\r\n")
                reply = reader.readline()
                received.append(reply)
                words = line.upper().split()
                listing = words[0] in (b"LIST", b"UIDL") and len(words) == 1
                if reply.startswith(b"+OK") and (listing or words[0] in (b"RETR", b"TOP")):
                    while received[-1] != b".\r\n":
                        received.append(reader.readline())
            sock.sendall(lines[-1] + b"\r\n")
        received.append(reader.read())
        return b"".join(received)


SCRIPT = [b"RETR 1", b"retr 6", b"STAT", b"LIST", b"UIDL", b"LIST 2", b"UIDL 3", b"RETR 7",
          b"RETR x", b"DELE 2", b"RETR 2", b"LIST 2", b"STAT", b"LIST", b"TOP 3 2", b"RETR 3",
          b"NOOP", b"RSET", b"RETR 2", b"DELE 4", b"UIDL", b"QUIT"]


@pytest.mark.parametrize("pipelined", [False, True], ids=["waiting", "pipelined"])
def test_the_compiled_loop_sends_what_popframe_sends(servers: dict[str, Server], mail: Path,
                                                     pipelined: bool) -> None:
    login = [b"USER " + USER.encode(), b"PASS " + password(mail)]
    got = {kind: transcript(server.port, login, SCRIPT, pipelined) for kind, server in servers.items()}
    assert got["compiled-w1"] == got["compiled-w1+python"]
    assert got["compiled-w1"].count(b"\r\n.\r\n") >= 8  # the messages and listings were sent
    assert b"signing off" in got["compiled-w1"]


def test_the_compiled_loop_passes_the_load_generator_s_checks(servers: dict[str, Server],
                                                              mail: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--port", str(servers["compiled-w1"].port),
         "--manifest", str(mail / corpus.MANIFEST), "--scenario", "drain", "-c", "3",
         "--duration", "60", "--max-sessions", "6", "--engine", "c"],
        capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(done.stdout)
    assert result["errors"] == {}, result["error_samples"]
    assert (result["sessions_ok"], result["messages"]) == (6, 36)
