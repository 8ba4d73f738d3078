"""The Twisted adapter around the sans-IO core.

- :mod:`~popframe.server.protocol`: ``POP3ServerProtocol``, one connection:
  the pump, streaming, timeouts, output.
- :mod:`~popframe.server.factory`: ``POP3Factory``, shared by listeners.
- :mod:`~popframe.server.login`: the login pipeline (throttle, checkers,
  user settings, LOGIN-DELAY, log lines).
- :mod:`~popframe.server.body`: reading a stored message, from a file or an
  ``IMessageBody``.
- :mod:`~popframe.server.config`, :mod:`~popframe.server.failures`,
  :mod:`~popframe.server.peers`: settings, backend failures as replies, who
  the client is.
"""

from popframe.server.config import ServerConfig
from popframe.server.factory import POP3Factory
from popframe.server.failures import as_pop3_error
from popframe.server.peers import is_loopback
from popframe.server.protocol import POP3ServerProtocol

__all__ = ["POP3Factory", "POP3ServerProtocol", "ServerConfig", "as_pop3_error", "is_loopback"]
