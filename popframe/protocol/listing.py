"""What a maildrop's listing is: the messages a session numbers, by uid
and size as sent.

These types belong to the sans-IO core (the session reads them) and are
shared with every store, which builds them; :mod:`popframe.interfaces`
re-exports them for backend authors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

__all__ = ["MessageInfo", "MessageList", "valid_uid"]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of a maildrop's listing.

    ``uid`` is the UIDL value: 1 to 70 characters in 0x21..0x7E, stable
    across sessions (RFC 1939 section 7).  ``size`` is the exact number of
    octets RETR sends before the terminating ``.``: line ends as CRLF, no
    dot-stuffing, and a final CRLF added if the stored message lacks one.
    ``wire_ready``: the stored octets already are exactly those octets
    (:class:`popframe.protocol.encoding.WireForm`), so RETR sends them
    unchanged; False (unknown) always works.
    """

    uid: str
    size: int
    wire_ready: bool = False


class MessageList(Sequence[MessageInfo]):
    """A listing kept by columns: the uids, the sizes, and one octet per
    message that is 1 where the message is wire-ready, 0 elsewhere.

    Indexing makes the :class:`MessageInfo` of one message; a session asks
    for few (RETR, LIST n) and reads the columns for the rest (STAT, UIDL,
    LIST).  Loading 100,000 messages as columns takes a few split calls;
    as objects it took four times as long, and a pass of the garbage
    collector.  Stores may return any sequence of ``MessageInfo``; the
    session takes it as :meth:`of` gives it.
    """

    __slots__ = ("uids", "sizes", "ready", "total")

    uids: Sequence[str]
    sizes: Sequence[int]
    ready: bytes
    total: int  # octets in all

    def __init__(self, uids: Sequence[str], sizes: Sequence[int], ready: bytes) -> None:
        if not len(uids) == len(sizes) == len(ready):
            raise ValueError("columns of different lengths")
        self.uids = uids
        self.sizes = sizes
        self.ready = ready
        self.total = sum(sizes)

    @classmethod
    def of(cls, messages: Iterable[MessageInfo]) -> MessageList:
        """``messages`` as a MessageList (itself if it is one)."""
        if isinstance(messages, MessageList):
            return messages
        messages = list(messages)
        return cls(
            [m.uid for m in messages],
            [m.size for m in messages],
            bytes(m.wire_ready for m in messages),
        )

    def __len__(self) -> int:
        return len(self.uids)

    @overload
    def __getitem__(self, index: int) -> MessageInfo: ...
    @overload
    def __getitem__(self, index: slice) -> MessageList: ...
    def __getitem__(self, index: int | slice) -> MessageInfo | MessageList:
        if isinstance(index, slice):
            return MessageList(self.uids[index], self.sizes[index], self.ready[index])
        return MessageInfo(self.uids[index], self.sizes[index], self.ready[index] == 1)

    def __iter__(self) -> Iterator[MessageInfo]:
        return map(MessageInfo, self.uids, self.sizes, map((1).__eq__, self.ready))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageList):
            return (
                list(self.uids) == list(other.uids)
                and list(self.sizes) == list(other.sizes)
                and self.ready == other.ready
            )
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MessageList({list(self)!r})"


def valid_uid(uid: str) -> bool:
    """RFC 1939 section 7: a unique-id is 1 to 70 characters in the range
    0x21 to 0x7E."""
    return 0 < len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)
