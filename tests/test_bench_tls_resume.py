"""``benchmarks/loadgen.py --tls-resume`` against a real server: each of
the load generator's clients offers the TLS session of its previous
connection, and popframe (one worker, so one ticket key) resumes every
connection after a client's first."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus  # noqa: E402
import loadgen  # noqa: E402

from popframe.testing import start_server  # noqa: E402
from popframe.tls import make_self_signed  # noqa: E402

pytestmark = pytest.mark.process


def run(port: int, manifest: Path, **tls: bool) -> dict:
    users = loadgen.load_users(str(manifest), None)
    return asyncio.run(loadgen.run_load("127.0.0.1", port, users, "check", concurrency=2,
                                        duration=60, max_sessions=10, session_timeout=30,
                                        crc=True, **tls))


def test_each_client_resumes_its_previous_session(tmp_path: Path) -> None:
    mail = tmp_path / "corpus"
    corpus.generate(mail, users=4, messages=2, scheme="PLAIN", quiet=True)
    make_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = start_server(
        ["--listen", "implicit-tls:tcp:0:interface=127.0.0.1",
         "--store", f"maildir:{mail}/maildirs/%u/Maildir", "--auth", f"passwd-file:{mail}/passwd",
         "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
         "--workers", "1", "--max-connections-per-ip", "0"], tmp_path)
    try:
        resumed = run(server.ports[0], mail / corpus.MANIFEST, tls_resume=True)
        full = run(server.ports[0], mail / corpus.MANIFEST, tls=True)
    finally:
        server.stop()
    assert resumed["errors"] == {} and resumed["sessions_ok"] == 10
    # Two clients: the first connection of each is a full handshake.
    assert (resumed["tls_full_handshakes"], resumed["tls_resumed"]) == (2, 8)
    assert resumed["tls_resumed_share"] == 0.8
    assert full["errors"] == {} and full["sessions_ok"] == 10
    assert full["tls_resumed_share"] is None  # asyncio's own TLS: nothing to count
