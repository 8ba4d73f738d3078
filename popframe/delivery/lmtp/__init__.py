"""The LMTP listener (RFC 2033) of ``twistd pop3 --lmtp ENDPOINT``: an MTA
hands mail over a socket, and gets one answer per recipient.

- :mod:`.protocol`: one connection;
- :mod:`.data`: the DATA phase, sans-IO (dot-unstuffing, the end);
- :mod:`.factory`: the listener's factory;
- :mod:`.config`: limits and names every connection shares.
"""

from popframe.delivery.lmtp.config import LMTPConfig
from popframe.delivery.lmtp.data import DataDecoder
from popframe.delivery.lmtp.factory import LMTPFactory
from popframe.delivery.lmtp.protocol import LMTPServerProtocol

__all__ = ["DataDecoder", "LMTPConfig", "LMTPFactory", "LMTPServerProtocol"]
