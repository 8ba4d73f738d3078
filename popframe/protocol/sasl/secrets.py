"""The stored secrets that mechanisms verifying in the core need.

SCRAM, CRAM-MD5 and APOP check the client's proof here, against a secret
the adapter fetched from a checker (``ISecretLookup``).  Each kind of
secret has one declared type, so a backend knows exactly what to return and
the core never guesses from the shape of a value:

=================  ===================  ============================
kind               type                 used by
=================  ===================  ============================
``scram-sha-256``  :class:`ScramRecord`   SCRAM-SHA-256(-PLUS)
``plaintext``      :class:`PlaintextSecret`  APOP
``cram-md5``       :class:`CramMD5Secret`    CRAM-MD5
=================  ===================  ============================
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ITERATIONS",
    "SECRET_TYPES",
    "CramMD5Secret",
    "PlaintextCramMD5",
    "PlaintextSecret",
    "ScramRecord",
    "Secret",
    "SecretKind",
]


#: Iterations of new SCRAM records and of the fake ones (Dovecot's default).
DEFAULT_ITERATIONS = 4096


class SecretKind(enum.StrEnum):
    """The kinds of stored secret a lookup can be asked for."""

    SCRAM_SHA_256 = "scram-sha-256"
    PLAINTEXT = "plaintext"
    CRAM_MD5 = "cram-md5"


@dataclass(frozen=True, slots=True, repr=False)
class ScramRecord:
    """A user's stored SCRAM-SHA-256 keys (RFC 5802 section 3): what
    Dovecot's ``{SCRAM-SHA-256}iter,salt,StoredKey,ServerKey`` holds.  The
    server never needs the password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    @classmethod
    def from_password(
        cls, password: bytes, salt: bytes, iterations: int = DEFAULT_ITERATIONS
    ) -> ScramRecord:
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        return cls(salt, hashlib.sha256(client_key).digest(), server_key, iterations)

    def __repr__(self) -> str:
        return f"ScramRecord(iterations={self.iterations}, <keys hidden>)"


@dataclass(frozen=True, slots=True, repr=False)
class PlaintextSecret:
    """The password itself (APOP digests it with the greeting's timestamp).
    Only stores that keep plaintext-equivalent passwords can serve it."""

    password: bytes

    def __repr__(self) -> str:
        return "PlaintextSecret(<hidden>)"


class CramMD5Secret(ABC):
    """What CRAM-MD5 needs of a user's secret: HMAC-MD5 of the challenge
    under the password (RFC 2195).  A backend returns a
    :class:`PlaintextCramMD5`, or a subclass that computes it from a stored
    HMAC context (``popframe.auth.crammd5.CramMD5Context``)."""

    @abstractmethod
    def hmac(self, challenge: bytes) -> bytes:
        """HMAC-MD5(password, challenge)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<hidden>)"


class PlaintextCramMD5(CramMD5Secret):
    """CRAM-MD5 from the plaintext password."""

    __slots__ = ("_password",)

    def __init__(self, password: bytes) -> None:
        self._password = password

    def hmac(self, challenge: bytes) -> bytes:
        return hmac.new(self._password, challenge, hashlib.md5).digest()


Secret = ScramRecord | PlaintextSecret | CramMD5Secret

#: The one type a lookup of each kind returns (or None: no such user, or
#: no secret of that kind for them).
SECRET_TYPES: dict[SecretKind, type[Secret]] = {
    SecretKind.SCRAM_SHA_256: ScramRecord,
    SecretKind.PLAINTEXT: PlaintextSecret,
    SecretKind.CRAM_MD5: CramMD5Secret,
}
