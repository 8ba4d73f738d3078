"""Driving the sans-IO core (:class:`popframe.protocol.Session`) from a
test with bytes alone, playing the adapter's part: no transport, no
reactor.  For a SASL mechanism, a limit, a reply's exact octets::

    session = Session(SessionConfig(mechanisms=("PLAIN",)))
    [event] = replies(session, b"AUTH PLAIN " + b64(b"\\0alice\\0secret") + b"\\r\\n")
    assert event == Authenticate(sasl.Password("alice", b"secret"), "PLAIN")
"""

from __future__ import annotations

import base64

from popframe.errors import AuthenticationFailed
from popframe.protocol import NEED_DATA, LoginRefused, Reply, Session

__all__ = ["answered", "b64", "encoded", "replies"]


def replies(session: Session, data: bytes) -> list[object]:
    """Feed ``data``; collect events until the session needs data or a
    request is outstanding (replies as their encoded bytes; a login the
    core refused as the -ERR the adapter answers it with)."""
    session.receive_data(data)
    out: list[object] = []
    while True:
        event = answered(session, session.next_event())
        if event is NEED_DATA:
            return out
        out.append(event.encode() if isinstance(event, Reply) else event)
        if not isinstance(event, Reply) or event.close:
            return out


def answered(session: Session, event: object) -> object:
    """``event``, or for a :class:`LoginRefused` the reply the adapter
    answers it with (after its throttling): ``-ERR [AUTH]``."""
    if isinstance(event, LoginRefused):
        return session.request_failed(AuthenticationFailed())
    return event


def encoded(session: Session, event: object) -> object:
    """:func:`answered`, a :class:`Reply` as its bytes: for what the
    session returns when a test answers a request (``secret_found``,
    ``logged_in``)."""
    event = answered(session, event)
    return event.encode() if isinstance(event, Reply) else event


def b64(data: bytes) -> bytes:
    """``data`` in base64, as a SASL client sends it."""
    return base64.b64encode(data)
