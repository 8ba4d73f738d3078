"""A message body served asynchronously: popframe's ``IMessageBody``.

A store whose reads wait (a database cursor, an object-storage download, a
network file system) must not hand the server a file object: the server
would read it on the reactor thread and every other connection would wait
too.  It hands over an ``IMessageBody`` instead, whose ``read`` answers
with a Deferred.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import deferLater
from zope.interface import implementer

from popframe.interfaces import IMessageBody

__all__ = ["ChunkedBody"]


@implementer(IMessageBody)
class ChunkedBody:
    """Serves ``octets`` at most ``chunk`` at a time, each read answered
    on a later turn of the reactor, as a cursor's fetch would be.

    What the server relies on:

    - ``read(size)`` returns a Deferred at once and never blocks.  It fires
      with 1 to ``size`` octets (fewer is fine: here at most ``chunk``), or
      ``b""`` at the end: only ``b""`` means the end.
    - The server has at most one read outstanding, and asks for the next
      chunk only once the client took the last one (back-pressure): a
      client that stops reading stops the reads, so a slow client never
      makes the store buffer a whole message.
    - ``close()`` is called exactly once, at the end or as soon as the
      client leaves: release the cursor or connection there.
    - A read that cannot be done now fails with
      ``popframe.errors.TemporaryFailure``; the server then drops the
      connection and nothing is deleted.

    ``reactor`` is for tests (a ``Clock``); None is the global reactor,
    imported only when needed: twistd chooses the reactor after it has
    loaded the plugins, so a plugin must not import it at import.
    """

    def __init__(self, octets: bytes, reactor: Any = None, chunk: int = 4096) -> None:
        self._octets = octets
        self._offset = 0
        self._reactor = reactor
        self._chunk = chunk
        self.closed = False

    def read(self, size: int) -> defer.Deferred[bytes]:
        if self.closed:
            return defer.fail(ValueError("read after close"))
        return deferLater(self._reactor or _global_reactor(), 0, self._next, size)

    def _next(self, size: int) -> bytes:
        piece = self._octets[self._offset:self._offset + min(size, self._chunk)]
        self._offset += len(piece)
        return piece

    def close(self) -> None:
        self.closed = True
        self._octets = b""  # a read still under way now finds the end


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor
