"""CRAM-MD5 (RFC 2195) and APOP (RFC 1939 section 7): Dovecot's stored
CRAM-MD5 contexts, bytes against the core, in memory through the adapter
with a passwd-file, and over a real socket with curl and poplib."""

from __future__ import annotations

import hashlib
import hmac
import os
import poplib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MailHome, ServerProcess, start_server
from test_sasl_scram import (
    FAILED,
    challenge,
    mpop,
    needs_mpop,
    unthrottled_server_args,
)

from popframe.auth import crammd5
from popframe.auth.crammd5 import CramMD5Context
from popframe.auth.passwdfile import PasswdFileChecker
from popframe.interfaces import PlaintextCramMD5, PlaintextSecret
from popframe.protocol import Authenticate, LoginRefused, LookupSecret, Session, SessionConfig, sasl
from popframe.protocol.sasl.apop import Apop
from popframe.protocol.sasl.crammd5 import CramMD5
from popframe.server import ServerConfig
from popframe.stores import run_synchronously
from popframe.testing import MemoryStore, connect_in_memory
from popframe.testing.session import b64, encoded, replies
from popframe.tls import make_self_signed

pytestmark = pytest.mark.core

PASSWORD = b"correct horse"
# doveadm pw -s CRAM-MD5 -p 'correct horse'
DOVECOT_CONTEXT = "38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29"
# doveadm pw -s CRAM-MD5 -p "$(printf 'a%.0s' {1..70})": a key longer than a block
LONG_PASSWORD = b"a" * 70
DOVECOT_LONG_CONTEXT = "fdeeaf10e3e4185caed349495958df36351bef50c329275229e06e028803e01c"
TIMESTAMP = "<1896.697170952@dbc.mtview.ca.us>"


def _session_passes_apop_timestamp() -> bool:
    s = Session(SessionConfig(mechanisms=("APOP",), apop_timestamp=TIMESTAMP))
    s.receive_data(b"APOP alice " + b"0" * 32 + b"\r\n")
    return isinstance(s.next_event(), LookupSecret)


needs_apop_timestamp = pytest.mark.skipif(
    not _session_passes_apop_timestamp(),
    reason="session.py does not pass apop_timestamp=config.apop_timestamp to SASLContext yet",
)


# -- stored contexts ----------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000])
def test_md5_from_the_initial_state_is_md5(length: int) -> None:
    data = os.urandom(length)
    assert crammd5.md5_continue(crammd5._INITIAL, 0, data) == hashlib.md5(data).digest()


@pytest.mark.parametrize(
    ("password", "context"), [(PASSWORD, DOVECOT_CONTEXT), (LONG_PASSWORD, DOVECOT_LONG_CONTEXT)]
)
def test_dovecot_contexts(password: bytes, context: str) -> None:
    assert CramMD5Context.from_password(password).context().hex() == context
    stored = CramMD5Context.from_context(bytes.fromhex(context))
    for message in (b"", b"<1.2@host>", b"x" * 200):
        assert stored.hmac(message) == hmac.new(password, message, hashlib.md5).digest()
        assert CramMD5Context.from_password(password).hmac(message) == stored.hmac(message)


def test_secrets_are_not_shown() -> None:
    assert "correct" not in repr(CramMD5Context.from_password(PASSWORD))
    assert DOVECOT_CONTEXT[:8] not in repr(CramMD5Context.from_context(bytes.fromhex(DOVECOT_CONTEXT)))
    with pytest.raises(ValueError):
        CramMD5Context.from_context(b"short")


# -- CRAM-MD5 against the core --------------------------------------------------------


def session(**config: object) -> Session:
    config.setdefault("mechanisms", ("CRAM-MD5", "APOP", "PLAIN"))
    return Session(SessionConfig(**config))  # type: ignore[arg-type]


def cram_response(user: bytes, password: bytes, server_challenge: str) -> bytes:
    return user + b" " + hmac.new(password, server_challenge.encode(), hashlib.md5).hexdigest().encode()


def cram_login(s: Session, response: bytes | None, secret: object | None, password: bytes = PASSWORD,
               user: bytes = b"alice") -> list[object]:
    [reply] = replies(s, b"AUTH CRAM-MD5\r\n")
    text = challenge(reply)
    [event] = replies(s, b64(response or cram_response(user, password, text)) + b"\r\n")
    if event == FAILED:
        return [event]
    assert event == LookupSecret(user.decode(), "cram-md5")
    return [encoded(s, s.secret_found(secret))]


def test_capa_lists_cram_md5_but_not_apop() -> None:
    [capa] = replies(session(), b"CAPA\r\n")
    assert b"\r\nSASL CRAM-MD5 PLAIN\r\n" in capa
    assert replies(session(), b"AUTH\r\n") == [b"+OK SASL mechanisms follow\r\nCRAM-MD5\r\nPLAIN\r\n.\r\n"]


def test_challenge_is_a_msg_id() -> None:
    [reply] = replies(session(hostname="pop.example.org"), b"AUTH CRAM-MD5\r\n")
    assert re.fullmatch(r"<\d+\.\d+@pop\.example\.org>", challenge(reply))
    [again] = replies(session(hostname="pop.example.org"), b"AUTH CRAM-MD5\r\n")
    assert again != reply
    fixed = session(random=lambda n: bytes(range(n)))
    assert challenge(replies(fixed, b"AUTH CRAM-MD5\r\n")[0]) == "<283686952306183.579005069656919567@localhost>"


@pytest.mark.parametrize(
    "secret",
    [
        CramMD5Context.from_password(PASSWORD),
        CramMD5Context.from_context(bytes.fromhex(DOVECOT_CONTEXT)),
        PlaintextCramMD5(PASSWORD),
    ],
    ids=["password", "dovecot-context", "bytes"],
)
def test_cram_md5_login(secret: object) -> None:
    assert cram_login(session(), None, secret) == [Authenticate(sasl.Verified("alice"), "CRAM-MD5")]


def test_upper_case_digest_and_user_names_with_spaces() -> None:
    s = session()
    text = challenge(replies(s, b"AUTH CRAM-MD5\r\n")[0])
    response = cram_response(b"john doe", PASSWORD, text).upper().replace(b"JOHN DOE", b"john doe")
    [event] = replies(s, b64(response) + b"\r\n")
    assert event == LookupSecret("john doe", "cram-md5")
    assert s.secret_found(PlaintextCramMD5(PASSWORD)) == Authenticate(sasl.Verified("john doe"), "CRAM-MD5")


@pytest.mark.parametrize("secret", [None, CramMD5Context.from_password(b"other"), b"", object(), "str"])
def test_wrong_or_unknown_fails_alike(secret: object) -> None:
    assert cram_login(session(), None, secret) == [FAILED]


@pytest.mark.parametrize(
    "response",
    [b"alice", b"alice " + b"0" * 31, b"alice " + b"0" * 33, b"alice " + b"g" * 32, b" " + b"0" * 32,
     b"\xff " + b"0" * 32, b""],
)
def test_malformed_responses_fail(response: bytes) -> None:
    s = session()
    replies(s, b"AUTH CRAM-MD5\r\n")
    assert replies(s, (b64(response) or b"") + b"\r\n") == [FAILED]


def test_no_initial_response_and_cancel() -> None:
    assert replies(session(), b"AUTH CRAM-MD5 " + b64(b"alice " + b"0" * 32) + b"\r\n") == [FAILED]
    s = session()
    replies(s, b"AUTH CRAM-MD5\r\n")
    assert replies(s, b"*\r\n") == [b"-ERR authentication cancelled\r\n"]


def test_wrong_password_and_unknown_user_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("popframe.protocol.sasl.crammd5.hmac.compare_digest", spy)
    cram_login(session(), None, None)
    cram_login(session(), None, PlaintextCramMD5(b"other"))
    assert len(compared) == 2 and all(len(a) == len(b) == 16 for a, b in compared)


# -- APOP against the core --------------------------------------------------------------


def apop_digest(password: bytes, timestamp: str = TIMESTAMP) -> str:
    return hashlib.md5(timestamp.encode() + password).hexdigest()


def test_rfc1939_example() -> None:
    assert apop_digest(b"tanstaaf") == "c4c9334bac560ecc979e58001b3e22fb"


@pytest.mark.parametrize(
    ("secret", "digest", "succeeds"),
    [
        (PlaintextSecret(b"tanstaaf"), "c4c9334bac560ecc979e58001b3e22fb", True),
        (PlaintextSecret(b"tanstaaf"), "C4C9334BAC560ECC979E58001B3E22FB", True),
        (PlaintextSecret(b"other"), "c4c9334bac560ecc979e58001b3e22fb", False),
        (None, "c4c9334bac560ecc979e58001b3e22fb", False),
        (PlaintextSecret(b""), "d41d8cd98f00b204e9800998ecf8427e", False),
        (b"tanstaaf", "c4c9334bac560ecc979e58001b3e22fb", False),  # not the declared type
        (CramMD5Context.from_password(b"tanstaaf"), "c4c9334bac560ecc979e58001b3e22fb", False),
    ],
)
def test_apop_mechanism(secret: object, digest: str, succeeds: bool) -> None:
    mechanism = Apop(sasl.SASLContext(apop_timestamp=TIMESTAMP))
    assert mechanism.start(b"mrose " + digest.encode()) == sasl.NeedSecret("mrose", "plaintext")
    if succeeds:
        assert mechanism.secret(secret) == sasl.Outcome(sasl.Verified("mrose"))
    else:
        with pytest.raises(sasl.SASLFailed):
            mechanism.secret(secret)


def test_apop_mechanism_needs_the_timestamp() -> None:
    with pytest.raises(sasl.SASLFailed):
        Apop(sasl.SASLContext()).start(b"mrose c4c9334bac560ecc979e58001b3e22fb")
    assert not Apop.sasl and Apop.name == "APOP" and CramMD5.sasl


@needs_apop_timestamp
def test_apop_through_the_session() -> None:
    s = session(apop_timestamp=TIMESTAMP)
    assert s.greeting().encode() == b"+OK popframe ready " + TIMESTAMP.encode() + b"\r\n"
    [event] = replies(s, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert event == LookupSecret("mrose", "plaintext")
    assert s.secret_found(PlaintextSecret(b"tanstaaf")) == Authenticate(sasl.Verified("mrose"), "APOP")


@needs_apop_timestamp
@pytest.mark.parametrize("secret", [None, PlaintextSecret(b"wrong"), PlaintextSecret(b"")])
def test_apop_failures_through_the_session(secret: PlaintextSecret | None) -> None:
    s = session(apop_timestamp=TIMESTAMP)
    replies(s, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    refused = s.secret_found(secret)
    assert refused == LoginRefused("APOP", "mrose")
    assert encoded(s, refused) == FAILED
    assert replies(s, b"CAPA\r\n")[0].startswith(b"+OK")


# -- in memory, through the adapter, with a passwd-file -------------------------------------


@pytest.fixture
def passwd_checker(tmp_path: Path) -> PasswdFileChecker:
    path = tmp_path / "users"
    path.write_text(
        f"carol:{{CRAM-MD5}}{DOVECOT_CONTEXT}\n"
        "paul:{PLAIN}correct horse\n"
        "sam:{SSHA512}DHTjtMfL0HROMb9XLn6aV9R4LUHJbmoJX1CdpbLGJChoK5iWuVhE21qYbe4EXAMEmPxMU96X/UYRECHpZiaCcR1Uups=\n"
    )
    return PasswdFileChecker(path, run_blocking=run_synchronously)


@pytest.mark.adapter
@pytest.mark.parametrize(
    ("user", "password", "ok"),
    [("carol", PASSWORD, True), ("paul", PASSWORD, True), ("carol", b"wrong", False),
     ("sam", PASSWORD, False), ("nobody", PASSWORD, False)],
)
def test_cram_md5_through_the_adapter(passwd_checker: PasswdFileChecker, user: str, password: bytes, ok: bool) -> None:
    store = MemoryStore({"carol": [b"Subject: hi\n\nhello\n"]})
    conn = connect_in_memory(store, passwd_checker, ServerConfig(mechanisms=("CRAM-MD5", "APOP")))
    assert b"\r\nSASL CRAM-MD5\r\n" in conn.send(b"CAPA\r\n")
    text = challenge(conn.send(b"AUTH CRAM-MD5\r\n"))
    reply = conn.send(b64(cram_response(user.encode(), password, text)) + b"\r\n")
    assert reply.startswith(b"+OK maildrop has") if ok else reply == FAILED


@pytest.mark.adapter
@needs_apop_timestamp
@pytest.mark.parametrize(
    ("user", "ok"), [("paul", True), ("carol", False), ("sam", False), ("nobody", False)]
)
def test_apop_through_the_adapter(passwd_checker: PasswdFileChecker, user: str, ok: bool) -> None:
    conn = connect_in_memory(MemoryStore({}), passwd_checker, ServerConfig(mechanisms=("CRAM-MD5", "APOP")))
    timestamp = re.search(rb"<[^>]+>", bytes(conn.client.received)).group().decode()  # type: ignore[union-attr]
    reply = conn.send(b"APOP %s %s\r\n" % (user.encode(), apop_digest(PASSWORD, timestamp).encode()))
    assert reply.startswith(b"+OK maildrop has") if ok else reply == FAILED


# -- over a real socket ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MailHome, ServerProcess]]:
    home = MailHome(tmp_path_factory.mktemp("cram"))
    home.passwd_file.touch()
    make_self_signed(home.cert, home.key)
    home.add_user("carol", "carol's pw", scheme="CRAM-MD5")
    home.add_user("paul", "paul's pw", scheme="PLAIN")
    home.add_user("sarah", "sarah's pw", scheme="SCRAM-SHA-256")
    for user in ("carol", "paul"):
        home.deliver(user, b"Subject: hi\n\nhello\n")
    args = unthrottled_server_args(home, "--mechanisms", "SCRAM-SHA-256,CRAM-MD5,APOP,PLAIN")
    server = start_server(args, home.root, listeners=2)
    yield home, server
    server.stop()


@pytest.mark.process
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by tests/run.sh")
@pytest.mark.parametrize(
    ("user", "password", "ok"),
    [("carol", "carol's pw", True), ("paul", "paul's pw", True), ("carol", "wrong", False),
     ("sarah", "sarah's pw", False), ("nobody", "x", False)],
)
def test_curl_cram_md5(auth_server: tuple[MailHome, ServerProcess], user: str, password: str, ok: bool) -> None:
    _, server = auth_server
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", "--verbose",
         "--login-options", "AUTH=CRAM-MD5", "--user", f"{user}:{password}",
         f"pop3://127.0.0.1:{server.port}/"],
        capture_output=True, timeout=30, check=False,
    )
    assert b"> AUTH CRAM-MD5" in result.stderr
    if ok:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert result.stdout == b"1 22\r\n"
    else:
        assert result.returncode == 67, result.stderr.decode(errors="replace")  # login denied
        assert b"< -ERR [AUTH] authentication failed" in result.stderr


@pytest.mark.process
@needs_mpop
@pytest.mark.parametrize(
    ("user", "password", "auth", "ok"),
    [
        ("carol", "carol's pw", "cram-md5", True),
        ("paul", "paul's pw", "cram-md5", True),
        ("carol", "wrong", "cram-md5", False),
        pytest.param("paul", "paul's pw", "apop", True, marks=needs_apop_timestamp),
        pytest.param("paul", "wrong", "apop", False, marks=needs_apop_timestamp),
    ],
)
def test_mpop(auth_server: tuple[MailHome, ServerProcess], user: str, password: str, auth: str, ok: bool) -> None:
    home, server = auth_server
    code, dialogue = mpop(home, server.port, user, password, auth)
    assert ("--> AUTH CRAM-MD5" if auth == "cram-md5" else f"--> APOP {user} ") in dialogue
    if ok:
        assert code == 0 and "<-- +OK maildrop has 1 messages" in dialogue, dialogue
    else:
        assert code == 77 and "<-- -ERR [AUTH] authentication failed" in dialogue, dialogue


@pytest.mark.process
@needs_apop_timestamp
def test_poplib_apop(auth_server: tuple[MailHome, ServerProcess]) -> None:
    _, server = auth_server
    client = poplib.POP3("127.0.0.1", server.port, timeout=10)
    try:
        assert client.apop("paul", "paul's pw").startswith(b"+OK maildrop has 1 messages")
        assert client.stat() == (1, 22)
    finally:
        client.quit()
    for user, password in (("paul", "wrong"), ("carol", "carol's pw"), ("nobody", "x")):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        try:
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\] authentication failed"):
                client.apop(user, password)
        finally:
            client.quit()


@pytest.mark.process
def test_greeting_has_a_timestamp_only_with_apop(auth_server: tuple[MailHome, ServerProcess]) -> None:
    _, server = auth_server
    client = poplib.POP3("127.0.0.1", server.port, timeout=10)
    try:
        # "[XCLIENT]": loopback is a trusted network by default.
        assert re.fullmatch(rb"\+OK \[XCLIENT\] popframe ready <\d+\.[0-9a-f]+@[^>]+>",
                            client.getwelcome())
        assert client.capa()["SASL"] == ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN"]
    finally:
        client.quit()
