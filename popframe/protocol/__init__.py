"""The sans-IO POP3 core: bytes in, events out, replies as bytes.

Nothing here imports Twisted or touches a socket, a disk or a clock; the
adapter in :mod:`popframe.server` does the I/O.  See
:class:`popframe.protocol.session.Session`.
"""

from popframe.protocol.commands import Command
from popframe.protocol.encoding import MessageEncoder
from popframe.protocol.listing import MessageInfo, MessageList
from popframe.protocol.replies import Reply, error_reply
from popframe.protocol.session import (
    NEED_DATA,
    Authenticate,
    Commit,
    Forward,
    Limits,
    LoginRefused,
    LookupSecret,
    Retrieve,
    Session,
    SessionConfig,
    SessionMisuse,
    SessionState,
    StartTLS,
)

__all__ = [
    "NEED_DATA",
    "Authenticate",
    "Command",
    "Commit",
    "Forward",
    "Limits",
    "LoginRefused",
    "LookupSecret",
    "MessageEncoder",
    "MessageInfo",
    "MessageList",
    "Reply",
    "Retrieve",
    "Session",
    "SessionConfig",
    "SessionMisuse",
    "SessionState",
    "StartTLS",
    "error_reply",
]
