"""The local delivery agent behind ``popframe deliver``: a message on
standard input, one user, an exit status the MTA understands.

The octets stored are the octets read, with two exceptions, both
deliberate:

- a first line starting with ``From `` is the mbox envelope line an MTA
  puts before the message (Postfix's ``mailbox_command``, a ``pipe``
  transport with the ``F`` flag), not part of it: no header field name
  holds a space, so it cannot be a header.  It is dropped, as
  ``dovecot-lda`` drops it;
- ``--return-path ADDR`` prepends ``Return-Path: <ADDR>``, with the
  message's own line end.

Exit 0 only once the store says the message is durable.  A process killed
on the way leaves the message wholly stored or not at all (the stores'
promise: :class:`~popframe.interfaces.IDeliverableStore`).
"""

from __future__ import annotations

from typing import BinaryIO

from twisted.logger import Logger

from popframe.delivery.agent import DeliveryAgent
from popframe.delivery.errors import EX_OK, EX_TEMPFAIL, DeliveryFailure, NotAMessage
from popframe.delivery.spool import CHUNK, Spool, SpooledMessage

__all__ = ["deliver_input", "return_path_header", "spool_input"]

log = Logger(namespace="popframe.delivery")

#: How far the first line is looked for (an envelope line is short).
_FIRST_LINE_MAX = 1 << 20


def return_path_header(address: str, line_end: bytes) -> bytes:
    """``Return-Path: <address>`` and the line end; ``ValueError`` for an
    address that would break the header."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if any(c in address for c in "<>\r\n\0") or not address.isprintable():
        raise ValueError(f"not a usable return path: {address!r}")
    return b"Return-Path: <" + address.encode("utf-8") + b">" + line_end


def spool_input(stream: BinaryIO, return_path: str | None = None,
                directory: str | None = None) -> SpooledMessage:
    """Read ``stream`` to its end into a spool: the envelope line dropped
    and the Return-Path prepended (see the module's docstring)."""
    spool = Spool(directory)
    try:
        head = b""
        while b"\n" not in head and len(head) < _FIRST_LINE_MAX:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"From "):
            newline = head.find(b"\n")
            head = head[newline + 1 :] if newline >= 0 else b""
        if return_path is not None:
            first_end = head.find(b"\n")
            crlf = first_end > 0 and head[first_end - 1 : first_end] == b"\r"
            spool.write(return_path_header(return_path, b"\r\n" if crlf else b"\n"))
        spool.write(head)
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            spool.write(chunk)
        return spool.finish()
    except BaseException:
        spool.discard()
        raise


async def deliver_input(stream: BinaryIO, agent: DeliveryAgent, address: str,
                        return_path: str | None = None) -> tuple[int, str]:
    """Deliver what ``stream`` holds to ``address``'s maildrop: the exit
    status and a line saying what happened."""
    try:
        recipient = await agent.recipient(address)
    except DeliveryFailure as e:
        return e.exit_code, f"{address}: {e}"
    try:
        message = spool_input(stream, return_path)
    except OSError as e:
        return EX_TEMPFAIL, f"cannot read the message: {e.strerror or e}"
    with message:
        if message.blank:
            refusal = NotAMessage()
            return refusal.exit_code, str(refusal)
        try:
            await agent.deliver(recipient, message)
        except DeliveryFailure as e:
            return e.exit_code, f"{address}: {e}"
    return EX_OK, f"delivered to {recipient.user} ({message.size} octets)"
