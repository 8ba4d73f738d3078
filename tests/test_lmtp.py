"""The LMTP listener: the DATA decoder on bytes, then a real ``twistd pop3
--lmtp`` driven by Python's ``smtplib.LMTP``: mixed recipients, limits, a
50 MB message that must not grow the server, pipelining, ``--workers``."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
from delivery_support import LMTPClient, Users, fetch_all, start_popframe, wire

from popframe.delivery.lmtp import DataDecoder

pytestmark = pytest.mark.process


def _reference(stream: bytes) -> tuple[bytes, bytes | None]:
    """The DATA phase line by line, as RFC 5321 describes it."""
    out, before, i = [], b"\r\n", 0
    while i < len(stream):
        newline = stream.find(b"\n", i)
        raw = stream[i:] if newline < 0 else stream[i : newline + 1]
        if before == b"\r\n" and raw == b".\r\n":
            return b"".join(out), stream[newline + 1 :]
        out.append(raw[1:] if before.endswith(b"\n") and raw.startswith(b".") else raw)
        before = (before + raw)[-2:]
        i += len(raw)
    return b"".join(out), None


@pytest.mark.core
def test_data_decoder_matches_the_line_by_line_reading() -> None:
    rng = random.Random(2033)
    pieces = [b".", b"\r\n", b"\n", b"\r", b"a", b"..", b"\r\n.\r\n", b".\r\n", b"\n.\r\n"]
    for _ in range(20_000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        decoder, out, rest, i = DataDecoder(), [], None, 0
        while i < len(stream) and rest is None:
            n = rng.randint(1, 6)
            data, rest = decoder.feed(stream[i : i + n])
            out.append(data)
            i += n
        expected = _reference(stream)
        if expected[1] is None:
            assert rest is None
            assert expected[0].startswith(b"".join(out)) and len(expected[0]) - len(b"".join(out)) <= 2
        else:
            assert (b"".join(out), rest + stream[i:]) == expected


@pytest.mark.core
def test_a_dot_after_a_bare_lf_does_not_end_the_message() -> None:
    data, rest = DataDecoder().feed(b"a\n.\r\nb\r\n.\r\nQUIT\r\n")
    assert (data, rest) == (b"a\n\r\nb\r\n", b"QUIT\r\n")


# -- a real server ------------------------------------------------------------------------


@pytest.fixture
def users(tmp_path: Path) -> Users:
    users = Users(tmp_path / "users")
    for user in ("alice", "bob@example.org", "carol@example.org"):
        users.add(user)
    (tmp_path / "mail").mkdir()
    return users


def _client(server) -> LMTPClient:  # type: ignore[no-untyped-def]
    client = LMTPClient(str(server.lmtp_socket))
    code, _ = client.ehlo("mx.example.test")
    assert code == 250
    return client


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_several_recipients_with_mixed_results(tmp_path: Path, users: Users, kind: str) -> None:
    template = f"{tmp_path}/mail/%u" + ("/Maildir" if kind == "maildir" else "")
    server = start_popframe(tmp_path, f"{kind}:{template}", users, "--lmtp-recipient-delimiter", "+")
    message = b"Subject: mixed\r\nFrom: a@example.net\r\n\r\n.starts with a dot\r\nbody\r\n"
    try:
        client = _client(server)
        rcpt, data = client.send_message_to("a@example.net", [
            "<alice>", "<nobody@example.org>", "<bob+lists@EXAMPLE.org>", "<../etc@example.org>",
            "<carol@example.org>",
        ], message)
        client.quit()
        assert rcpt["<alice>"][0] == 250
        assert rcpt["<nobody@example.org>"][:1] == (550,)
        assert rcpt["<nobody@example.org>"][1].startswith(b"5.1.1")
        assert rcpt["<bob+lists@EXAMPLE.org>"][0] == 250  # extension cut, domain lower-cased
        assert rcpt["<../etc@example.org>"][0] == 550
        assert [code for code, _ in data] == [250, 250, 250]
        assert b"<carol@example.org>" in data[2][1]
        for user in ("alice", "bob@example.org", "carol@example.org"):
            assert fetch_all(server.port, user, users.passwords[user]) == [wire(message)]
    finally:
        server.stop()


def test_one_recipient_failing_does_not_fail_the_others(tmp_path: Path, users: Users) -> None:
    mail = tmp_path / "mail"
    (mail / "alice").write_text("a file where the maildir should be")
    server = start_popframe(tmp_path, f"maildir:{mail}/%u/Maildir", users)
    try:
        client = _client(server)
        _, data = client.send_message_to("", ["alice", "carol@example.org"], b"Subject: x\r\n\r\ny\r\n")
        client.quit()
        assert data[0][0] == 451 and data[0][1].startswith(b"4.2.0")
        assert data[1][0] == 250
    finally:
        server.stop()


def test_size_limit_and_empty_message(tmp_path: Path, users: Users) -> None:
    server = start_popframe(tmp_path, f"mbox:{tmp_path}/mail/%u", users, "--lmtp-max-size", "1000")
    try:
        client = _client(server)
        assert b"SIZE 1000" in client.ehlo_resp
        code, reply = client.docmd("MAIL FROM:<a@example.net> SIZE=2000")
        assert (code, reply[:5]) == (552, b"5.3.4")
        client.rset()
        _, data = client.send_message_to("a@example.net", ["alice", "carol@example.org"],
                                         b"Subject: big\r\n\r\n" + b"y" * 2000 + b"\r\n")
        assert [(c, r[:5]) for c, r in data] == [(552, b"5.3.4")] * 2
        _, data = client.send_message_to("a@example.net", ["alice"], b"")
        assert [(c, r[:5]) for c, r in data] == [(554, b"5.6.0")]
        _, data = client.send_message_to("a@example.net", ["alice"], b"Subject: ok\r\n\r\nsmall\r\n")
        assert data[0][0] == 250
        client.quit()
        assert fetch_all(server.port, "alice", users.passwords["alice"]) == [
            b"Subject: ok\r\n\r\nsmall\r\n"]
    finally:
        server.stop()


def test_pipelined_commands_get_their_replies_in_order(tmp_path: Path, users: Users) -> None:
    server = start_popframe(tmp_path, f"maildir:{tmp_path}/mail/%u/Maildir", users)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(server.lmtp_socket))
            s.settimeout(30)
            s.sendall(b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<nobody>\r\nRCPT TO:<alice>\r\n"
                      b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: p\r\n\r\nq\r\n.\r\nQUIT\r\n")
            received = b""
            while not received.endswith(b"221 2.0.0 bye\r\n"):
                chunk = s.recv(65536)
                assert chunk, received
                received += chunk
        codes = [line[:3] for line in received.split(b"\r\n") if line[3:4] == b" "]
        assert codes == [b"220", b"250", b"250", b"550", b"250", b"250", b"354", b"250", b"250",
                         b"221"]
    finally:
        server.stop()


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_a_50_mb_message_streams_to_disk(tmp_path: Path, users: Users, kind: str) -> None:
    """The server's peak resident memory grows by far less than the
    message: it is spooled as it arrives and delivered chunk by chunk."""
    template = f"{tmp_path}/mail/%u" + ("/Maildir" if kind == "maildir" else "")
    server = start_popframe(tmp_path, f"{kind}:{template}", users, "--lmtp-spool", str(tmp_path),
                            "--lmtp-max-size", str(60 * 1024 * 1024))
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ From .x\r\n"
    body = line * (50 * 1024 * 1024 // len(line))
    message = b"Subject: fifty megabytes\r\n\r\n" + body
    try:
        client = _client(server)
        client.noop()
        before = _rss_kib(server.process.pid, "VmRSS")
        _, data = client.send_message_to("a@example.net", ["alice", "carol@example.org"], message)
        client.quit()
        assert [c for c, _ in data] == [250, 250]
        peak = _rss_kib(server.process.pid, "VmHWM")
        assert peak - before < 16 * 1024, (before, peak)
        fetched = fetch_all(server.port, "alice", users.passwords["alice"])
        assert len(fetched) == 1 and fetched[0] == message
    finally:
        server.stop()


def test_lmtp_with_workers(tmp_path: Path, users: Users) -> None:
    server = start_popframe(tmp_path, f"mbox:{tmp_path}/mail/%u", users, workers=2)
    try:
        for n in range(12):
            client = _client(server)
            _, data = client.send_message_to("a@example.net", ["alice", "nobody"],
                                             b"Subject: %d\r\n\r\nbody\r\n" % n)
            client.quit()
            assert data[0][0] == 250
        fetched = fetch_all(server.port, "alice", users.passwords["alice"])
        assert sorted(fetched) == sorted(b"Subject: %d\r\n\r\nbody\r\n" % n for n in range(12))
        server.wait_for("worker-", timeout=10)
        assert "LMTP: delivered" in server.text()
        assert "listening on" in server.text() and "(--lmtp unix:" in server.text()
    finally:
        server.stop()
