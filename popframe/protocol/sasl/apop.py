"""APOP (RFC 1939 section 7): ``APOP name digest``, the digest being
``md5(timestamp + password)`` in hex, the timestamp the one in this
session's greeting (``SASLContext.apop_timestamp``).  Not SASL (``sasl =
False``: never listed by CAPA SASL or AUTH); the session runs it like one
from the APOP command.  Weak, and needs the plaintext stored (secret kind
``"plaintext"``): off by default.
"""

from __future__ import annotations

import hashlib
import hmac

from popframe.protocol import sasl
from popframe.protocol.sasl import SASLContext, Step
from popframe.protocol.sasl.crammd5 import parse_digest, user_name
from popframe.protocol.sasl.secrets import PlaintextSecret, SecretKind


@sasl.register
class Apop(sasl.Mechanism):
    name = "APOP"
    sasl = False

    # (The class attribute ``sasl`` hides the module in this body, so the
    # annotations name SASLContext and Step directly.)
    def __init__(self, context: SASLContext) -> None:
        super().__init__(context)
        self._user: str | None = None
        self._digest = b""

    def start(self, initial_response: bytes | None) -> Step:
        """``initial_response`` is ``b"name digest"`` from the command."""
        if not self.context.apop_timestamp or initial_response is None:
            raise sasl.SASLFailed()
        name, space, digest = initial_response.rpartition(b" ")
        if not space or not name:
            raise sasl.SASLFailed()
        self._digest = parse_digest(digest)
        self._user = user_name(name)
        return sasl.NeedSecret(self._user, SecretKind.PLAINTEXT)

    def secret(self, secret: object | None) -> Step:
        timestamp = self.context.apop_timestamp
        if self._user is None or not timestamp:
            raise sasl.SASLFailed()
        known = isinstance(secret, PlaintextSecret) and bool(secret.password)
        if isinstance(secret, PlaintextSecret) and known:
            expected = hashlib.md5(timestamp.encode("utf-8") + secret.password).digest()
        else:
            expected = self.context.random(16)
        matched = hmac.compare_digest(expected, self._digest)
        if not (matched and known):
            raise sasl.SASLFailed()
        return sasl.Outcome(sasl.Verified(self._user))
