"""The whole server over real loopback sockets, driven by Python's poplib."""

from __future__ import annotations

import poplib
import socket
import ssl

import pytest
from support.clients import pop3_login

from popframe.protocol.encoding import wire_size
from popframe.testing import wait_until

pytestmark = pytest.mark.process

MESSAGES = [
    b"From: a@example.org\nTo: alice@example.org\nSubject: one\n\nHello\n.leading dot\n..two\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nCRLF stored\r\n",
    b"Subject: three\n\nno final newline",
    b"Subject: four\n\n" + (b"0123456789" * 50 + b"\n") * 400,
]


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def as_poplib_lines(stored: bytes) -> list[bytes]:
    """What poplib.retr returns: lines without CRLF, dots unstuffed."""
    text = stored.replace(b"\r\n", b"\n")
    if text.endswith(b"\n"):
        text = text[:-1]
    return text.split(b"\n") if text else []


@pytest.fixture
def alice(mail_home, pop3_server):
    for message in MESSAGES:
        mail_home.deliver("alice", message)
    return pop3_server


def login_when_unlocked(port: int) -> poplib.POP3:
    """Log in, retrying while [IN-USE]: the server releases a dropped
    session's lock when it notices the close, a moment later."""

    def unlocked() -> poplib.POP3 | None:
        try:
            return pop3_login(port)
        except poplib.error_proto as error:
            if b"[IN-USE]" not in error.args[0]:
                raise
            return None

    return wait_until(unlocked, "the maildrop to be unlocked")


def test_retrieve_everything_byte_for_byte(alice) -> None:
    client = pop3_login(alice.port)
    count, octets = client.stat()
    assert count == len(MESSAGES)
    assert octets == sum(wire_size(m) for m in MESSAGES)
    _, listing, _ = client.list()
    assert listing == [b"%d %d" % (i, wire_size(m)) for i, m in enumerate(MESSAGES, 1)]
    for number, message in enumerate(MESSAGES, 1):
        _, lines, size = client.retr(number)
        assert lines == as_poplib_lines(message)
        assert size == wire_size(message)
    client.quit()


def test_uidl_is_stable_across_sessions(alice) -> None:
    client = pop3_login(alice.port)
    _, first, _ = client.uidl()
    client.quit()
    client = pop3_login(alice.port)
    _, second, _ = client.uidl()
    client.quit()
    assert first == second and len(first) == len(MESSAGES)


def test_top(alice) -> None:
    client = pop3_login(alice.port)
    _, lines, _ = client.top(1, 1)
    assert lines == [b"From: a@example.org", b"To: alice@example.org", b"Subject: one", b"", b"Hello"]
    client.quit()


def test_deletions_apply_only_at_quit(alice, mail_home) -> None:
    client = pop3_login(alice.port)
    client.dele(1)
    client.dele(3)
    assert client.stat()[0] == len(MESSAGES) - 2
    assert len(mail_home.messages("alice")) == len(MESSAGES)
    client.quit()
    assert mail_home.messages("alice") == [MESSAGES[1], MESSAGES[3]]


def test_dropped_connection_deletes_nothing(alice, mail_home) -> None:
    client = pop3_login(alice.port)
    client.dele(1)
    client.dele(2)
    client.sock.shutdown(socket.SHUT_RDWR)  # poplib's file keeps the fd open
    client.sock.close()
    # The maildrop is unlocked as soon as the server sees the close.
    client = login_when_unlocked(alice.port)
    assert client.stat()[0] == len(MESSAGES)
    client.quit()
    assert len(mail_home.messages("alice")) == len(MESSAGES)


def test_second_session_is_refused_in_use(alice) -> None:
    first = pop3_login(alice.port)
    second = poplib.POP3("127.0.0.1", alice.port, timeout=10)
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("alice password")
    first.quit()  # QUIT answers after the lock is released
    second.user("alice")
    second.pass_("alice password")
    second.quit()


def test_wrong_password_and_unknown_user(alice) -> None:
    for user, password in [("alice", "nope"), ("nobody", "nope")]:
        client = poplib.POP3("127.0.0.1", alice.port, timeout=10)
        client.user(user)
        with pytest.raises(poplib.error_proto) as error:
            client.pass_(password)
        assert error.value.args[0] == b"-ERR [AUTH] authentication failed"
        client.quit()


def test_user_with_domain_and_empty_maildrop(alice) -> None:
    client = pop3_login(alice.port, "bob@example.org", "bob's p4ss")
    assert client.stat() == (0, 0)
    client.quit()


def test_capa_both_states_and_stls(alice) -> None:
    client = poplib.POP3("127.0.0.1", alice.port, timeout=10)
    capa = client.capa()
    for name in ["TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE", "STLS"]:
        assert name in capa
    client.stls(client_context())
    after = client.capa()
    assert "STLS" not in after and "USER" in after
    client.user("alice")
    client.pass_("alice password")
    assert "STLS" not in client.capa()
    assert client.stat()[0] == len(MESSAGES)
    client.quit()


def test_implicit_tls(alice) -> None:
    client = poplib.POP3_SSL("127.0.0.1", alice.tls_port, context=client_context(), timeout=10)
    assert "STLS" not in client.capa()
    client.user("alice")
    client.pass_("alice password")
    _, lines, _ = client.retr(2)
    assert lines == as_poplib_lines(MESSAGES[1])
    assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    client.quit()


def test_tls_below_1_2_is_refused(alice) -> None:
    context = client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", alice.tls_port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError)),
    ):
        context.wrap_socket(raw).do_handshake()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` in one write; read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_pipelining_in_one_write(alice) -> None:
    out = raw_exchange(
        alice.port,
        b"USER alice\r\nPASS alice password\r\nSTAT\r\nLIST 2\r\nUIDL 2\r\nRETR 2\r\nQUIT\r\n",
    )
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"+OK")
    assert lines[1] == b"+OK send your password"
    assert lines[2].startswith(b"+OK maildrop has 4 messages")
    assert lines[3] == b"+OK 4 %d" % sum(wire_size(m) for m in MESSAGES)
    assert lines[4] == b"+OK 2 %d" % wire_size(MESSAGES[1])
    assert lines[5].startswith(b"+OK 2 ")
    assert out.endswith(MESSAGES[1] + b".\r\n+OK popframe signing off (4 messages left)\r\n")


def test_overlong_and_garbage_lines(alice) -> None:
    out = raw_exchange(alice.port, b"A" * 1000 + b"\r\n\x00\xff\r\nNOOP\r\nQUIT\r\n")
    assert out.split(b"\r\n")[1:5] == [
        b"-ERR command line too long",
        b"-ERR NUL in command line",
        b"-ERR command not valid in this state",
        b"+OK popframe signing off",
    ]


def test_garbage_flood_is_disconnected(alice) -> None:
    out = raw_exchange(alice.port, b"BOGUS\r\n" * 50)
    assert out.count(b"-ERR") == 10
    assert b"too many bad commands" in out
