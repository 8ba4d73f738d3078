"""``benchmarks/loadgen.py --engine c`` (``benchmarks/ceiling/pop3_load.c``)
against a real server: the same sessions and counts as the Python load
generator, and the same checks, which catch a message that is not the
corpus's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus  # noqa: E402

from popframe.testing import start_server  # noqa: E402

pytestmark = pytest.mark.process


def load(port: int, manifest: Path, scenario: str, engine: str) -> dict:
    """Four sessions, one per user of the corpus."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--port", str(port),
         "--manifest", str(manifest), "--scenario", scenario, "-c", "3", "--duration", "60",
         "--max-sessions", "4", "--engine", engine],
        capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout)


@pytest.fixture
def served(tmp_path: Path):
    mail = tmp_path / "corpus"
    corpus.generate(mail, users=4, messages=5, scheme="SSHA512", quiet=True)
    server = start_server(
        ["--listen", "tcp:0:interface=127.0.0.1",
         "--store", f"maildir:{mail}/maildirs/%u/Maildir", "--auth", f"passwd-file:{mail}/passwd",
         "--workers", "1", "--max-connections-per-ip", "0"], tmp_path)
    try:
        yield server.ports[0], mail
    finally:
        server.stop()


@pytest.mark.parametrize("scenario", ["check", "drain"])
def test_the_c_engine_runs_what_the_python_one_runs(served: tuple[int, Path], scenario: str) -> None:
    port, mail = served
    results = {engine: load(port, mail / corpus.MANIFEST, scenario, engine) for engine in ("python", "c")}
    for result in results.values():
        assert result["errors"] == {}, result["error_samples"]
        assert (result["sessions_ok"], result["sessions_failed"]) == (4, 0)
    assert results["c"]["messages"] == results["python"]["messages"] == (20 if scenario == "drain" else 0)
    assert results["c"]["octets"] == results["python"]["octets"]
    assert results["c"]["loop"] == "c"
    assert results["c"]["open_p50_ms"] > 0 and results["c"]["session_p99_ms"] > 0


def test_the_c_engine_catches_a_message_that_is_not_the_corpus_s(served: tuple[int, Path]) -> None:
    port, mail = served
    # One letter of one message's body changed: its size stays, its CRC not.
    message = next(p for p in sorted((mail / "maildirs").glob("u*/Maildir/*/*"))
                   if p.is_file() and b"\r\n\r\n" in p.read_bytes())
    data = bytearray(message.read_bytes())
    letter = next(i for i in range(data.index(b"\r\n\r\n") + 4, len(data)) if chr(data[i]).isalpha())
    data[letter] = ord("x") if data[letter] != ord("x") else ord("y")
    message.write_bytes(bytes(data))
    result = load(port, mail / corpus.MANIFEST, "drain", "c")
    assert result["errors"] == {"retr-crc": 1}, result["error_samples"]
