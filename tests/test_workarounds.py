"""Client workarounds (``--workaround NAME``), each off by default and
each shown with the byte sequence that troubles its client."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from popframe.options import Options
from popframe.protocol import MessageInfo
from popframe.protocol.encoding import (
    WORKAROUNDS,
    MessageEncoder,
    QuirksEncoder,
    VerbatimEncoder,
    encoder_for,
    wire_form,
)
from popframe.protocol.session import Retrieve
from popframe.server import POP3Factory, ServerConfig
from popframe.testing import BufferedTransport, MemoryChecker, MemoryStore, make_portal

pytestmark = pytest.mark.core


def send(stored: bytes, body_lines: int | None = None, *workarounds: str,
         chunk: int = 3) -> bytes:
    """RETR (or TOP) of ``stored`` fed ``chunk`` octets at a time, as the
    session would encode it."""
    message = MessageInfo("u", wire_form(stored).size, wire_form(stored).ready)
    encoder = Retrieve(1, message, body_lines, frozenset(workarounds)).encoder()
    out = b"".join(encoder.feed(stored[i:i + chunk]) for i in range(0, len(stored), chunk)
                   if not encoder.done)
    return out + encoder.finish()


def test_no_workaround_is_the_usual_encoder() -> None:
    assert type(encoder_for(None, False)) is MessageEncoder
    assert type(encoder_for(None, True)) is VerbatimEncoder
    assert isinstance(encoder_for(None, True, frozenset({"outlook-nul"})), QuirksEncoder)
    assert set(WORKAROUNDS) == {"outlook-nul", "top-missing-blank-line", "list-progress",
                                "mbox-from-quirks", "bare-cr"}


def test_outlook_nul() -> None:
    stored = b"Subject: x\r\n\r\na\x00b\r\n"  # wire-ready: sent verbatim
    assert send(stored) == stored + b".\r\n"  # Outlook stalls on the NUL
    assert send(stored, None, "outlook-nul") == b"Subject: x\r\n\r\na\x80b\r\n.\r\n"
    assert send(b"a\x00\n\x00", None, "outlook-nul") == b"a\x80\r\n\x80\r\n.\r\n"
    assert len(send(stored, None, "outlook-nul")) == len(send(stored))  # LIST stays true


def test_top_missing_blank_line() -> None:
    stored = b"Subject: headers only\nX-A: b\n"
    assert send(stored, 0) == b"Subject: headers only\r\nX-A: b\r\n.\r\n"  # OE breaks
    assert send(stored, 0, "top-missing-blank-line") == (
        b"Subject: headers only\r\nX-A: b\r\n\r\n.\r\n")
    complete = b"Subject: s\n\nbody\n"
    assert send(complete, 0, "top-missing-blank-line") == send(complete, 0)
    assert send(stored, None, "top-missing-blank-line") == send(stored)  # RETR: unchanged


def test_mbox_from_quirks() -> None:
    stored = b"From MAILER-DAEMON Thu Jan  1 00:00:00 1998\nSubject: old\n\nbody\n"
    assert send(stored).startswith(b"From MAILER-DAEMON")  # an envelope, not a header
    assert send(stored, None, "mbox-from-quirks") == b"Subject: old\r\n\r\nbody\r\n.\r\n"
    assert send(stored, None, "mbox-from-quirks", chunk=1000) == (
        b"Subject: old\r\n\r\nbody\r\n.\r\n")
    plain = b"Subject: From the start\n\nx\n"
    assert send(plain, None, "mbox-from-quirks") == send(plain)
    assert send(b"From x", None, "mbox-from-quirks") == b"From x\r\n.\r\n"


def test_bare_cr() -> None:
    stored = b"Subject: mac\r\rline one\rline two\r.dot\r"
    usual = send(stored)
    assert b"\rline one\rline two" in usual  # a bare CR: one line to the client
    fixed = send(stored, None, "bare-cr")
    assert fixed == b"Subject: mac\r\n\r\nline one\r\nline two\r\n..dot\r\n.\r\n"
    assert send(b"a\r\nb\r\n", None, "bare-cr", chunk=2) == b"a\r\nb\r\n.\r\n"  # split CRLF


def _connect(transport: BufferedTransport, store: MemoryStore, **config: Any) -> Any:
    factory = POP3Factory(make_portal(store, MemoryChecker({"alice": "pw"})),
                          ServerConfig(**config), Clock())
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(transport)
    return protocol


@pytest.mark.adapter
@pytest.mark.parametrize("progress", [False, True])
def test_list_progress(progress: bool) -> None:
    store = MemoryStore()
    for n in range(3000):
        store.deliver("alice", b"Subject: %d\n\nx\n" % n)
    transport = BufferedTransport(limit=4096)
    workarounds = frozenset({"list-progress"}) if progress else frozenset()
    protocol = _connect(transport, store, chunk_size=1024, workarounds=workarounds)
    protocol.dataReceived(b"USER alice\r\nPASS pw\r\n")
    transport.drain()
    protocol.dataReceived(b"UIDL\r\n")
    first = transport.value()
    if progress:  # a chunk at a time, while the client reads
        assert len(first) <= 4096 + 1024
    else:  # the whole listing handed to the transport at once
        assert first.endswith(b"\r\n.\r\n") and first.count(b"\r\n") == 3002
    received = b""
    for _ in range(1000):
        received += transport.drain()
        if received.endswith(b".\r\n") and received.count(b"\r\n") == 3002:
            break
    assert received.startswith(b"+OK") and received.count(b"\r\n") == 3002
    protocol.dataReceived(b"QUIT\r\n")
    assert transport.drain().startswith(b"+OK")


def test_the_option() -> None:
    options = Options()
    options.opt_workaround("outlook-nul,bare-cr")
    options.opt_workaround("list-progress")
    assert options["workarounds"] == {"outlook-nul", "bare-cr", "list-progress"}
    with pytest.raises(usage.UsageError, match="unknown 'netscape'"):
        options.opt_workaround("netscape")
