"""The LMTP listener's factory: one delivery agent and one configuration
for every connection."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory

from popframe.delivery.agent import DeliveryAgent
from popframe.delivery.lmtp.config import LMTPConfig
from popframe.delivery.lmtp.protocol import LMTPServerProtocol

__all__ = ["LMTPFactory"]


class LMTPFactory(Factory):
    def __init__(self, agent: DeliveryAgent, config: LMTPConfig | None = None,
                 clock: Any = None) -> None:
        self.agent = agent
        self.config = config if config is not None else LMTPConfig()
        self.clock = clock

    def buildProtocol(self, addr: Any) -> LMTPServerProtocol:
        protocol = LMTPServerProtocol(self.agent, self.config, self.clock)
        protocol.factory = self
        return protocol
