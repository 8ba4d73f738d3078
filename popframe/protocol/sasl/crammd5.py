"""CRAM-MD5 (RFC 2195): the server sends ``<random.random@hostname>``, the
client answers ``user hexdigest``, the digest being HMAC-MD5 keyed with the
password.  Weak (the server must keep the password or an equivalent key,
and the exchange can be attacked offline): off by default.

The secret kind is ``"cram-md5"``: a
:class:`~popframe.protocol.sasl.secrets.CramMD5Secret` (from a plaintext
password, or a stored Dovecot ``{CRAM-MD5}`` context:
``popframe.auth.crammd5.CramMD5Context``).  An unknown user is compared
against random bytes and fails like a wrong password.
"""

from __future__ import annotations

import hmac

from popframe.errors import BadArguments
from popframe.protocol import sasl
from popframe.protocol.normalize import normalize_user
from popframe.protocol.sasl.secrets import CramMD5Secret, SecretKind

_DIGEST_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_digest(text: bytes) -> bytes:
    """32 hex digits -> 16 bytes; anything else fails the exchange."""
    if len(text) != 32 or not set(text) <= _DIGEST_HEX:
        raise sasl.SASLFailed()
    return bytes.fromhex(text.decode("ascii"))


def user_name(text: bytes) -> str:
    try:
        return normalize_user(sasl.utf8(text))
    except BadArguments:
        raise sasl.SASLFailed() from None


@sasl.register
class CramMD5(sasl.Mechanism):
    name = "CRAM-MD5"

    def __init__(self, context: sasl.SASLContext) -> None:
        super().__init__(context)
        self._challenge = b""
        self._user: str | None = None
        self._digest = b""

    def start(self, initial_response: bytes | None) -> sasl.Step:
        if initial_response is not None:  # the server speaks first
            raise sasl.SASLFailed()
        random = self.context.random(16)
        first, second = int.from_bytes(random[:8], "big"), int.from_bytes(random[8:], "big")
        self._challenge = f"<{first}.{second}@{self.context.hostname}>".encode()
        return sasl.Challenge(self._challenge)

    def respond(self, response: bytes) -> sasl.Step:
        if self._user is not None:
            raise sasl.SASLFailed()
        name, space, digest = response.rpartition(b" ")
        if not space or not name:
            raise sasl.SASLFailed()
        self._digest = parse_digest(digest)
        self._user = user_name(name)
        return sasl.NeedSecret(self._user, SecretKind.CRAM_MD5)

    def secret(self, secret: object | None) -> sasl.Step:
        if self._user is None:
            raise sasl.SASLFailed()
        known = isinstance(secret, CramMD5Secret)
        if isinstance(secret, CramMD5Secret):
            expected = secret.hmac(self._challenge)
        else:
            expected = self.context.random(16)
        matched = hmac.compare_digest(expected, self._digest)
        if not (matched and known):
            raise sasl.SASLFailed()
        return sasl.Outcome(sasl.Verified(self._user))
