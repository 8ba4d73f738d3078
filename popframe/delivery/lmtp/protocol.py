"""An LMTP server connection (RFC 2033): SMTP's commands, LHLO for EHLO,
and after DATA one reply per accepted recipient, in order, so one
recipient's full mailbox does not refuse the message to the others.

Commands are lines; while a recipient is being checked or the message
delivered, reading stops (``pauseProducing``), so a pipelining client's
commands wait in the buffer and replies keep their order.  DATA switches
to raw mode: the octets go through a :class:`DataDecoder` into a
:class:`~popframe.delivery.spool.Spool` as they arrive, so the message is
never held in memory; past the size limit they are read and dropped, and
every recipient gets 552.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin

from popframe.delivery.agent import DeliveryAgent, Recipient
from popframe.delivery.errors import (
    DeliveryFailure,
    MessageTooBig,
    NotAMessage,
    as_delivery_failure,
)
from popframe.delivery.lmtp.config import LMTPConfig
from popframe.delivery.lmtp.data import DataDecoder
from popframe.delivery.spool import Spool, SpooledMessage

__all__ = ["LMTPServerProtocol"]

log = Logger(namespace="popframe.delivery.lmtp")

_PATH = re.compile(r"(?i)^(MAIL\s+FROM|RCPT\s+TO)\s*:\s*(<[^>]*>|\S*)\s*(.*)$")
_SIZE = re.compile(r"(?i)(?:^|\s)SIZE=(\d{1,20})(?:\s|$)")


class LMTPServerProtocol(LineReceiver, TimeoutMixin):
    delimiter = b"\n"
    MAX_LENGTH = 4096  # RFC 5321 allows 512 for a command; extensions add more

    def __init__(self, agent: DeliveryAgent, config: LMTPConfig, clock: Any = None) -> None:
        self.agent = agent
        self.config = config
        if clock is not None:
            self.callLater = clock.callLater  # type: ignore[method-assign]
        self._greeted = False
        self._sender: str | None = None
        self._recipients: list[Recipient] = []
        self._decoder: DataDecoder | None = None
        self._spool: Spool | None = None
        self._busy = False  # a Deferred is outstanding: input paused

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:
        self.setTimeout(self.config.idle_timeout)
        self._reply(220, f"{self.config.hostname} LMTP popframe ready")

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self._discard_spool()

    def timeoutConnection(self) -> None:
        self._reply(421, "4.4.2 idle for too long, closing")
        self._close()

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._reply(500, "5.5.2 line too long")
        self._close()

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _reply(self, code: int, text: str) -> None:
        self._send(f"{code} {text}\r\n".encode())

    def _wait(self, d: defer.Deferred[Any]) -> None:
        """Stop reading until ``d`` has fired (and replied)."""
        self._busy = True
        self.pauseProducing()

        def resume(result: object) -> None:
            self._busy = False
            if getattr(self.transport, "connected", False):
                self.resumeProducing()

        d.addErrback(lambda failure: log.failure("LMTP command failed", failure))
        d.addBoth(resume)

    # -- commands ---------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        verb = text.split(" ", 1)[0].upper()
        handler = getattr(self, "_cmd_" + verb, None) if verb.isalpha() else None
        if handler is None:
            self._reply(500, "5.5.2 unknown command")
            return
        handler(text[len(verb):].strip())

    def _cmd_LHLO(self, argument: str) -> None:
        if not argument:
            self._reply(501, "5.5.4 LHLO needs a host name")
            return
        self._reset()
        self._greeted = True
        lines = [self.config.hostname, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME",
                 "SMTPUTF8", f"SIZE {self.config.max_size}" if self.config.max_size else "SIZE"]
        self._send(
            b"".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n".encode()
                     for i, x in enumerate(lines)))

    def _cmd_HELO(self, argument: str) -> None:
        self._reply(500, "5.5.1 this is LMTP: use LHLO")

    _cmd_EHLO = _cmd_HELO

    def _cmd_MAIL(self, argument: str) -> None:
        match = _PATH.match("MAIL " + argument)
        if not self._greeted:
            self._reply(503, "5.5.1 send LHLO first")
        elif self._sender is not None:
            self._reply(503, "5.5.1 nested MAIL command")
        elif match is None or not match.group(1).upper().startswith("MAIL"):
            self._reply(501, "5.5.4 syntax: MAIL FROM:<address>")
        else:
            size = _SIZE.search(match.group(3))
            if size and self.config.max_size and int(size.group(1)) > self.config.max_size:
                self._reply(552, "5.3.4 message too big")
                return
            self._sender = match.group(2).strip("<>")
            self._reply(250, "2.1.0 sender OK")

    def _cmd_RCPT(self, argument: str) -> None:
        match = _PATH.match("RCPT " + argument)
        if self._sender is None:
            self._reply(503, "5.5.1 send MAIL first")
        elif match is None or not match.group(1).upper().startswith("RCPT"):
            self._reply(501, "5.5.4 syntax: RCPT TO:<address>")
        elif len(self._recipients) >= self.config.max_recipients:
            self._reply(452, "4.5.3 too many recipients")
        else:
            address = match.group(2).strip("<>")
            self._wait(self.agent.recipient(address).addCallbacks(
                self._accepted, self._refused, errbackArgs=(address,)))

    def _accepted(self, recipient: Recipient) -> None:
        self._recipients.append(recipient)
        self._reply(250, f"2.1.5 <{recipient.address}> recipient OK")

    def _refused(self, failure: Any, address: str) -> None:
        error = as_delivery_failure(failure)
        log.info("LMTP: refused recipient <{address}>: {error}", address=address, error=error)
        self._send(error.reply(address).encode("utf-8") + b"\r\n")

    def _cmd_DATA(self, argument: str) -> None:
        if self._sender is None:
            self._reply(503, "5.5.1 send MAIL first")
        elif not self._recipients:
            self._reply(503, "5.5.1 no valid recipients")
        else:
            self._decoder = DataDecoder()
            self._spool = Spool(self.config.spool_directory, self.config.max_size or None)
            self._reply(354, "go ahead, end with <CRLF>.<CRLF>")
            self.setRawMode()

    def _cmd_BDAT(self, argument: str) -> None:
        self._reply(502, "5.5.1 BDAT is not offered")

    def _cmd_RSET(self, argument: str) -> None:
        self._reset()
        self._reply(250, "2.0.0 OK")

    def _cmd_NOOP(self, argument: str) -> None:
        self._reply(250, "2.0.0 OK")

    def _cmd_VRFY(self, argument: str) -> None:
        self._reply(252, "2.5.0 send some mail, I'll try my best")

    def _cmd_QUIT(self, argument: str) -> None:
        self._reply(221, "2.0.0 bye")
        self._close()

    def _reset(self) -> None:
        self._sender = None
        self._recipients = []

    # -- the message ----------------------------------------------------------------

    def rawDataReceived(self, data: bytes) -> None:
        assert self._decoder is not None and self._spool is not None
        message, rest = self._decoder.feed(data)
        self._spool.write(message)
        if rest is None:
            return
        spool, self._spool, self._decoder = self._spool, None, None
        recipients, self._recipients, self._sender = self._recipients, [], None
        self._wait(self._deliver(spool, recipients))
        self.setLineMode(rest)

    def _deliver(self, spool: Spool, recipients: list[Recipient]) -> defer.Deferred[None]:
        if spool.too_big:
            spool.discard()
            return self._answer([MessageTooBig()] * len(recipients), recipients, 0)
        message = spool.finish()
        if message.blank:
            message.close()
            return self._answer([NotAMessage()] * len(recipients), recipients, 0)
        outcomes = [self.agent.deliver(r, message).addCallbacks(lambda _: None, lambda f: f.value)
                    for r in recipients]
        d = defer.gatherResults(outcomes)
        d.addCallback(self._answer, recipients, message.size)
        return d.addBoth(_closing(message))

    def _answer(self, outcomes: list[DeliveryFailure | None], recipients: list[Recipient],
                size: int) -> defer.Deferred[None]:
        lines = []
        for recipient, outcome in zip(recipients, outcomes, strict=True):
            if outcome is None:
                lines.append(f"250 2.0.0 <{recipient.address}> delivered")
                log.info("LMTP: delivered {size} octets to {user}", size=size, user=recipient.user)
            else:
                lines.append(outcome.reply(recipient.address))
                log.info("LMTP: not delivered to {user}: {error}", user=recipient.user,
                         error=outcome)
        self._send("".join(line + "\r\n" for line in lines).encode("utf-8"))
        return defer.succeed(None)

    def _discard_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.discard()


def _closing(message: SpooledMessage) -> Any:
    def close(result: object) -> object:
        message.close()
        return result

    return close
