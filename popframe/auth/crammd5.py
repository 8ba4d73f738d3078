"""CRAM-MD5 secrets: HMAC-MD5 keys from a plaintext password or from
Dovecot's stored ``{CRAM-MD5}`` contexts.

Dovecot's ``CRAM-MD5`` scheme (``doveadm pw -s CRAM-MD5``) does not store the
password: it stores the two MD5 chaining states HMAC-MD5 reaches after
hashing one block of ``key XOR opad`` and of ``key XOR ipad``, as 32 bytes in
hex (the outer state's four words, then the inner's, little-endian).  Going
on from a stored state needs MD5's compression function, which no library
exposes, so it is here (RFC 1321, pure Python; two or three blocks per
login).  See :class:`CramMD5Context`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct

from popframe.protocol.sasl.secrets import CramMD5Secret

__all__ = ["CONTEXT_LENGTH", "CramMD5Context", "md5_continue"]

_MASK = 0xFFFFFFFF
_BLOCK = 64
_INITIAL = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_SHIFTS = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_CONSTANTS = tuple(int(abs(math.sin(i + 1)) * 2**32) & _MASK for i in range(64))

#: Size of a stored context: two MD5 states of four 32-bit words.
CONTEXT_LENGTH = 32

State = tuple[int, int, int, int]


def _compress(state: State, block: bytes) -> State:
    """MD5's compression function (RFC 1321 section 3.4) on one block."""
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | ~d), (7 * i) % 16
        f = (f + a + _CONSTANTS[i] + x[g]) & _MASK
        shift = _SHIFTS[i]
        a, d, c = d, c, b
        b = (b + ((f << shift) | (f >> (32 - shift)))) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def md5_continue(state: State, hashed: int, data: bytes) -> bytes:
    """The MD5 digest of a message whose first ``hashed`` bytes (a multiple
    of 64) left the chaining value ``state``, and whose rest is ``data``."""
    total = hashed + len(data)
    padding = b"\x80" + b"\0" * ((55 - total) % _BLOCK)
    message = data + padding + struct.pack("<Q", (total * 8) & (2**64 - 1))
    for start in range(0, len(message), _BLOCK):
        state = _compress(state, message[start : start + _BLOCK])
    return struct.pack("<4I", *state)


def _key_states(key: bytes) -> tuple[State, State]:
    """(inner, outer) states of HMAC-MD5 after its key block (RFC 2104)."""
    if len(key) > _BLOCK:
        key = hashlib.md5(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = _compress(_INITIAL, bytes(k ^ 0x36 for k in key))
    outer = _compress(_INITIAL, bytes(k ^ 0x5C for k in key))
    return inner, outer


class CramMD5Context(CramMD5Secret):
    """A :class:`~popframe.protocol.sasl.secrets.CramMD5Secret` kept as
    HMAC-MD5's two key states, made from a plaintext password
    (:meth:`from_password`) or a stored Dovecot context
    (:meth:`from_context`); ``repr`` never shows either."""

    __slots__ = ("_inner", "_outer", "_password")

    def __init__(self, inner: State, outer: State, password: bytes | None = None) -> None:
        self._inner = inner
        self._outer = outer
        self._password = password

    @classmethod
    def from_password(cls, password: bytes) -> CramMD5Context:
        inner, outer = _key_states(password)
        return cls(inner, outer, password)

    @classmethod
    def from_context(cls, context: bytes) -> CramMD5Context:
        """From Dovecot's 32 bytes (``{CRAM-MD5}`` data, hex-decoded)."""
        if len(context) != CONTEXT_LENGTH:
            raise ValueError(f"a CRAM-MD5 context is {CONTEXT_LENGTH} bytes")
        words = struct.unpack("<8I", context)
        return cls(words[4:8], words[0:4])

    def context(self) -> bytes:
        """Dovecot's stored form: outer state, then inner, little-endian."""
        return struct.pack("<8I", *self._outer, *self._inner)

    def hmac(self, challenge: bytes) -> bytes:
        """HMAC-MD5(key, challenge) (RFC 2104), the digest CRAM-MD5 sends."""
        if self._password is not None:
            return hmac.new(self._password, challenge, hashlib.md5).digest()
        inner = md5_continue(self._inner, _BLOCK, challenge)
        return md5_continue(self._outer, _BLOCK, inner)
