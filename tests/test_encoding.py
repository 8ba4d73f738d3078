"""The RETR/TOP encoder: line ends, dot-stuffing, TOP limits, chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popframe.protocol.encoding import MessageEncoder, VerbatimEncoder, wire_form, wire_size

pytestmark = pytest.mark.core


def encode(stored: bytes, chunk: int = 1 << 16, body_lines: int | None = None) -> bytes:
    encoder = MessageEncoder(body_lines)
    out = [encoder.feed(stored[i : i + chunk]) for i in range(0, len(stored), chunk)]
    return b"".join(out) + encoder.finish()


def unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")
    assert lines[-1] == b""
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_bare_lf_becomes_crlf() -> None:
    assert encode(b"Subject: x\n\nbody\n") == b"Subject: x\r\n\r\nbody\r\n.\r\n"


def test_crlf_is_kept() -> None:
    assert encode(b"Subject: x\r\n\r\nbody\r\n") == b"Subject: x\r\n\r\nbody\r\n.\r\n"


def test_dot_lines_are_stuffed_including_the_first() -> None:
    assert encode(b".first\n..\n.\nend\n") == b"..first\r\n...\r\n..\r\nend\r\n.\r\n"


def test_missing_final_newline_is_added() -> None:
    assert encode(b"Subject: x\n\nno end") == b"Subject: x\r\n\r\nno end\r\n.\r\n"


def test_empty_message() -> None:
    assert encode(b"") == b".\r\n"


def test_crlf_split_across_chunks_is_not_doubled() -> None:
    assert encode(b"a\r\nb\r\n", chunk=2) == b"a\r\nb\r\n.\r\n"


def test_dot_at_chunk_boundary_is_stuffed() -> None:
    assert encode(b"ab\n.c\n", chunk=3) == b"ab\r\n..c\r\n.\r\n"


def test_top_zero_sends_headers_and_blank_line() -> None:
    message = b"From: a\nSubject: b\n\nline1\nline2\n"
    assert encode(message, body_lines=0) == b"From: a\r\nSubject: b\r\n\r\n.\r\n"


def test_top_counts_body_lines() -> None:
    message = b"From: a\n\nline1\n.line2\nline3\n"
    assert encode(message, body_lines=2) == b"From: a\r\n\r\nline1\r\n..line2\r\n.\r\n"


def test_top_more_lines_than_body() -> None:
    message = b"From: a\n\nline1\n"
    assert encode(message, body_lines=10) == b"From: a\r\n\r\nline1\r\n.\r\n"


def test_top_on_message_without_body() -> None:
    assert encode(b"From: a\n", body_lines=0) == b"From: a\r\n.\r\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_top_is_chunk_independent(chunk: int) -> None:
    message = b"From: a\r\nX: y\r\n\r\n1\r\n2\r\n3\r\n"
    assert encode(message, chunk=chunk, body_lines=2) == encode(message, body_lines=2)


stored_messages = st.lists(
    st.sampled_from([b"a", b".", b"\n", b"\r", b"\r\n", b"..", b"x y", b"\n.\n"]),
    max_size=40,
).map(b"".join)


@given(stored_messages, st.integers(min_value=1, max_value=9))
def test_size_and_content_agree_for_any_chunking(stored: bytes, chunk: int) -> None:
    wire = encode(stored, chunk=chunk)
    assert wire == encode(stored)
    body = unstuff(wire)
    assert len(body) == wire_size(stored)
    assert body.replace(b"\r\n", b"\n") == (
        stored.replace(b"\r\n", b"\n") + (b"\n" if stored and not stored.endswith(b"\n") else b"")
    )


@given(stored_messages, st.integers(min_value=1, max_value=9), st.integers(0, 5))
def test_top_is_a_prefix_of_retr(stored: bytes, chunk: int, lines: int) -> None:
    top = unstuff(encode(stored, chunk=chunk, body_lines=lines))
    retr = unstuff(encode(stored))
    assert retr.startswith(top)


@given(stored_messages, st.integers(min_value=1, max_value=9))
def test_wire_ready_exactly_when_the_encoder_changes_nothing(stored: bytes, chunk: int) -> None:
    chunks = [stored[i : i + chunk] for i in range(0, len(stored), chunk)]
    form = wire_form(chunks)
    assert form == wire_form(stored)
    assert form.size == wire_size(stored)
    assert form.ready == (encode(stored) == stored + b".\r\n")


@pytest.mark.parametrize(
    "stored, ready",
    [
        (b"", True),
        (b"Subject: x\r\n\r\nbody\r\n", True),
        (b"Subject: x\r\n\r\nbody", False),  # no final CRLF
        (b"Subject: x\n\nbody\n", False),  # bare LF
        (b"Subject: x\r\n\r\n.body\r\n", False),  # a dot line
        (b".first\r\n", False),
        (b"a\rb\r\n", True),  # a lone CR is sent as stored
    ],
)
def test_wire_ready_examples(stored: bytes, ready: bool) -> None:
    assert wire_form(stored).ready is ready


def test_verbatim_encoder_sends_chunks_as_read() -> None:
    encoder = VerbatimEncoder()
    chunk = b"Subject: x\r\n\r\nbody\r\n"
    assert encoder.feed(chunk) is chunk
    assert encoder.finish() == b".\r\n"
