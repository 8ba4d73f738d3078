"""``run.py --servers ldap-wN``: popframe against a throwaway slapd seeded
with the benchmark corpus's own password hashes (benchmarks/ldap_servers.py),
for each scheme the corpus can have; every login must succeed, a wrong
password must not, and stopping the server stops slapd."""

from __future__ import annotations

import asyncio
import poplib
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus  # noqa: E402
import loadgen  # noqa: E402
import servers  # noqa: E402
from ldap_support import _missing  # noqa: E402

pytestmark = pytest.mark.external


@pytest.mark.parametrize("scheme", ["SSHA512", "SHA512-CRYPT", "PLAIN"])
def test_ldap_server_kind_logs_the_corpus_users_in(tmp_path: Path, scheme: str) -> None:
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        _missing("slapd is not installed (apt-get install slapd ldap-utils)")
    mail = tmp_path / "corpus"
    manifest = corpus.generate(mail, users=3, messages=2, scheme=scheme, quiet=True)
    server = servers.make_server("ldap-w1", tmp_path, mail)
    server.start()
    try:
        server.copy_users(["u0001", "u0002", "u0003"])
        slapd = server.slapd.process
        users = loadgen.load_users(str(mail / corpus.MANIFEST), None)
        result = asyncio.run(loadgen.run_load("127.0.0.1", server.port, users, "check", 2, 60, 6,
                                              30, True))
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("u0001")
        with pytest.raises(poplib.error_proto):
            client.pass_(manifest["users"]["u0001"]["password"] + "x")
        client.quit()
    finally:
        server.stop()
    assert result["errors"] == {} and result["sessions_ok"] == 6
    assert slapd.poll() is not None and not (server.dir / "slapd").exists()
