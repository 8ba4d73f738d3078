"""MessageList, the listing by columns, and the numbered LIST/UIDL body
made from its columns in one format call."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popframe.interfaces import MessageInfo, MessageList
from popframe.protocol import Reply, Session
from popframe.protocol.replies import numbered_body

pytestmark = pytest.mark.core

INFOS = [MessageInfo("a", 10, True), MessageInfo("b", 20), MessageInfo("c", 30, True)]


def test_a_message_list_is_a_sequence_of_message_infos() -> None:
    listing = MessageList(["a", "b", "c"], array("Q", [10, 20, 30]), b"\1\0\1")
    assert len(listing) == 3 and listing.total == 60
    assert listing[1] == MessageInfo("b", 20, False) and listing[-1] == INFOS[2]
    assert list(listing) == INFOS and listing == INFOS and listing == tuple(INFOS)
    assert listing[1:] == MessageList(["b", "c"], [20, 30], b"\0\1") == INFOS[1:]
    assert listing != INFOS[:2] and listing != "abc"
    with pytest.raises(IndexError):
        listing[3]
    with pytest.raises(TypeError):
        hash(listing)


def test_of_takes_any_iterable_of_message_infos_and_keeps_a_message_list() -> None:
    made = MessageList.of(iter(INFOS))
    assert made.uids == ["a", "b", "c"] and list(made.sizes) == [10, 20, 30]
    assert made.ready == b"\1\0\1"
    assert MessageList.of(made) is made
    assert MessageList.of([]) == [] and MessageList.of([]).total == 0


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        MessageList(["a"], [1, 2], b"\0")


@given(
    st.lists(st.text("abcXYZ019.-", min_size=1, max_size=5), max_size=30),
    st.data(),
)
def test_numbered_body_is_the_lines_a_format_per_line_gives(values: list[str], data: st.DataObject) -> None:
    skip = data.draw(st.sets(st.integers(0, max(len(values) - 1, 0)))) if values else set()
    expected = b"".join(
        b"%d %s\r\n" % (i + 1, v.encode()) for i, v in enumerate(values) if i not in skip
    )
    assert numbered_body(values, skip) == expected
    sizes = list(range(len(values)))
    assert numbered_body(sizes, skip) == b"".join(
        b"%d %d\r\n" % (i + 1, i) for i in sizes if i not in skip
    )


def test_a_body_reply_ends_with_the_terminator() -> None:
    assert Reply(True, "x", body=b"1 a\r\n").encode() == b"+OK x\r\n1 a\r\n.\r\n"
    assert Reply(True, "x", body=b"").encode() == b"+OK x\r\n.\r\n"


def test_the_session_lists_from_columns_and_skips_deleted_messages() -> None:
    session = Session()
    session.receive_data(b"USER alice\r\nPASS secret\r\n")
    session.next_event(), session.next_event()
    reply = session.logged_in(MessageList.of(INFOS))
    assert reply.encode() == b"+OK maildrop has 3 messages (60 octets)\r\n"
    session.receive_data(b"DELE 2\r\nUIDL\r\nLIST\r\nSTAT\r\nLIST 3\r\nUIDL 1\r\n")
    encoded = [session.next_event().encode() for _ in range(6)]  # type: ignore[union-attr]
    assert encoded[1:] == [
        b"+OK unique-id listing follows\r\n1 a\r\n3 c\r\n.\r\n",
        b"+OK 2 messages (40 octets)\r\n1 10\r\n3 30\r\n.\r\n",
        b"+OK 2 40\r\n",
        b"+OK 3 30\r\n",
        b"+OK 1 a\r\n",
    ]
