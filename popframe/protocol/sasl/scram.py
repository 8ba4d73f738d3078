"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 7677, RFC 5802), server side,
from stored keys only: the server never needs the password.

The exchange::

    C: n,[a=authzid],n=user,r=cnonce        -> NeedSecret(user, "scram-sha-256")
    S: r=cnonce+snonce,s=salt,i=4096        <- secret(ScramRecord | None)
    C: c=base64(gs2-header[+cb-data]),r=cnonce+snonce,p=proof
    S: v=server-signature                    (Outcome.final: "+ " line, then "")

A user with no SCRAM record (unknown, or stored in another scheme) gets a
fake record derived from the user name with an HMAC under a random key (per
process, unless :func:`set_fake_record_key` shares one): the same salt and
iteration count on every attempt for that name, and a failure only at the
proof, exactly like a wrong password.  Fake records have
:data:`DEFAULT_ITERATIONS` (``doveadm pw`` always writes 4096): real records
with another count would tell their users from unknown ones.

Channel binding (-PLUS, over TLS only): the client names the type in its
gs2 header and the mechanism asks the adapter for that type's data through
``SASLContext.channel_binding``.  Accepted: ``tls-exporter`` (RFC 9266, the
one defined for TLS 1.3), ``tls-unique`` (RFC 5929; TLS 1.2 only: the adapter
should return None for it on TLS 1.3, where it is undefined) and
``tls-server-end-point`` (RFC 5929, the hash of the server certificate:
weaker, since it only binds to the certificate, but what most clients, libpq
and scramp among them, implement).  A client that answers "y" (it could bind,
but believes the server cannot) while this connection offers -PLUS is refused:
someone stripped -PLUS from the list it saw (RFC 5802 section 6).

Why not ``scramp``'s ``ScramServer`` (checked in scramp 1.5.0): it refuses
any authorization identity in the gs2 header ("The GS2 authzid must be
empty"), so master users could not use SCRAM; it refuses ``tls-exporter`` by
name (``CbName.UNSUPPORTED_TYPES``), so TLS 1.3 would be left with only
``tls-server-end-point``; and it fetches the user's keys synchronously inside
``set_client_first`` and rejects unknown users there.  The server side is a
handful of HMACs (below); scramp remains the independent client the tests
run against it (plain, and -PLUS with ``tls-server-end-point`` and
``tls-unique``), with RFC 7677's example exchange, mpop (GNU SASL), and
``tls-exporter`` over real TLS 1.3 with keying material pyOpenSSL exports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import ClassVar

from popframe.errors import BadArguments
from popframe.protocol import sasl
from popframe.protocol.normalize import normalize_user
from popframe.protocol.sasl.secrets import DEFAULT_ITERATIONS, ScramRecord, SecretKind

# ScramRecord and DEFAULT_ITERATIONS live in secrets.py (the declared
# secret types) and are named here too, where SCRAM's users look.
__all__ = [
    "CHANNEL_BINDING_TYPES",
    "DEFAULT_ITERATIONS",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "SALT_BYTES",
    "ScramRecord",
    "ScramSHA256",
    "ScramSHA256Plus",
    "fake_record",
    "set_fake_record_key",
]

#: Bounds on a stored record's iteration count (Dovecot refuses fewer than
#: 4096; more than this is a denial of service waiting to happen).
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000
#: Salt of new and fake records (Dovecot's length).
SALT_BYTES = 16
_KEY_BYTES = hashlib.sha256().digest_size
_NONCE_BYTES = 24

#: Channel-binding types -PLUS accepts, when the adapter can supply them.
CHANNEL_BINDING_TYPES = ("tls-exporter", "tls-unique", "tls-server-end-point")

_SASLNAME = re.compile(r"(?:[^=,]|=2C|=3D)+")
_ESCAPE = re.compile(r"=2C|=3D")

# Unknown users' fake records are stable while the process runs and cannot
# be computed from outside.  Processes that serve one set of users together
# (--workers, several nodes) must share it: see set_fake_record_key.
_fake_key = secrets.token_bytes(32)


def set_fake_record_key(key: bytes) -> None:
    """Use ``key`` (32 random bytes shared by every process that serves the
    same users) for fake records, so that an unknown user gets the same salt
    whichever process answers; otherwise the salt changing from one
    connection to the next would tell unknown users from real ones."""
    global _fake_key
    if len(key) < 16:
        raise ValueError("the fake-record key must be at least 16 bytes")
    _fake_key = key


def fake_record(user: str) -> ScramRecord:
    """The record an unknown ``user`` appears to have."""
    name, key = user.encode("utf-8"), _fake_key
    return ScramRecord(
        salt=_hmac(key, b"salt\0" + name)[:SALT_BYTES],
        stored_key=_hmac(key, b"stored-key\0" + name),
        server_key=_hmac(key, b"server-key\0" + name),
        iterations=DEFAULT_ITERATIONS,
    )


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise sasl.SASLFailed() from None


def _saslname(text: str) -> str:
    """Decode RFC 5802's saslname: "," and "=" travel as "=2C" and "=3D"."""
    if not _SASLNAME.fullmatch(text):
        raise sasl.SASLFailed()
    name = _ESCAPE.sub(lambda m: "," if m.group() == "=2C" else "=", text)
    try:
        return normalize_user(name)
    except BadArguments:
        raise sasl.SASLFailed() from None


def _valid_nonce(nonce: str) -> bool:
    return bool(nonce) and all("\x21" <= ch <= "\x7e" and ch != "," for ch in nonce)


def _valid_cb_name(name: str) -> bool:
    return bool(name) and all(ch.isascii() and (ch.isalnum() or ch in ".-") for ch in name)


@sasl.register
class ScramSHA256(sasl.Mechanism):
    name = "SCRAM-SHA-256"
    # Channel binding required (the -PLUS variant).
    plus: ClassVar[bool] = False

    def __init__(self, context: sasl.SASLContext) -> None:
        super().__init__(context)
        self._gs2_header = ""
        self._cb_data = b""
        self._authcid = ""
        self._authzid: str | None = None
        self._client_first_bare: str | None = None
        self._client_nonce = ""
        self._record: ScramRecord | None = None
        self._known = False
        self._server_first: str | None = None
        self._nonce = ""
        self._done = False

    def start(self, initial_response: bytes | None) -> sasl.Step:
        if initial_response is None:
            return sasl.Challenge(b"")
        return self.respond(initial_response)

    def respond(self, response: bytes) -> sasl.Step:
        if self._client_first_bare is None:
            return self._client_first(sasl.utf8(response))
        if self._server_first is not None and not self._done:
            self._done = True
            return self._client_final(sasl.utf8(response))
        raise sasl.SASLFailed()

    # -- client-first-message ------------------------------------------------

    def _client_first(self, message: str) -> sasl.Step:
        parts = message.split(",", 2)
        if len(parts) != 3:
            raise sasl.SASLFailed()
        flag, authzid, bare = parts
        self._channel_binding(flag)
        if authzid:
            if not authzid.startswith("a="):
                raise sasl.SASLFailed()
            self._authzid = _saslname(authzid[2:])
        self._gs2_header = f"{flag},{authzid},"

        attributes = bare.split(",")
        # [reserved-mext ","] username "," nonce ["," extensions]: "m=" is
        # reserved for mandatory extensions, of which none exist yet.
        if (
            len(attributes) < 2
            or not attributes[0].startswith("n=")
            or not attributes[1].startswith("r=")
        ):
            raise sasl.SASLFailed()
        if any(len(a) < 2 or a[1] != "=" for a in attributes[2:]):
            raise sasl.SASLFailed()
        self._authcid = _saslname(attributes[0][2:])
        self._client_nonce = attributes[1][2:]
        if not _valid_nonce(self._client_nonce):
            raise sasl.SASLFailed()
        self._client_first_bare = bare
        return sasl.NeedSecret(self._authcid, SecretKind.SCRAM_SHA_256)

    def _channel_binding(self, flag: str) -> None:
        """Check the gs2-cbind-flag against this mechanism and connection."""
        if flag.startswith("p="):
            kind = flag[2:]
            if not self.plus or not _valid_cb_name(kind) or kind not in CHANNEL_BINDING_TYPES:
                raise sasl.SASLFailed()
            data = self.context.channel_binding(kind) if self.context.tls_active else None
            if not data:
                raise sasl.SASLFailed()
            self._cb_data = data
        elif flag == "y":
            if self.plus or self._plus_offered():
                raise sasl.SASLFailed()  # a downgrade
        elif flag != "n" or self.plus:
            raise sasl.SASLFailed()

    def _plus_offered(self) -> bool:
        """Whether the client could have seen -PLUS on this connection."""
        plus = self.name + "-PLUS"
        if plus not in sasl.MECHANISMS:
            return False
        offered = self.context.mechanisms
        if offered is not None:
            return plus in offered
        # Not told: assume -PLUS is offered wherever it could work.
        return self.context.tls_active and any(
            self.context.channel_binding(kind) for kind in CHANNEL_BINDING_TYPES
        )

    # -- server-first-message --------------------------------------------------

    def secret(self, secret: object | None) -> sasl.Step:
        if self._client_first_bare is None or self._server_first is not None:
            raise sasl.SASLFailed()
        if isinstance(secret, ScramRecord):
            self._record, self._known = secret, True
        else:
            self._record, self._known = fake_record(self._authcid), False
        server_nonce = base64.b64encode(self.context.random(_NONCE_BYTES)).decode("ascii")
        self._nonce = self._client_nonce + server_nonce
        record = self._record
        self._server_first = f"r={self._nonce},s={_b64(record.salt)},i={record.iterations}"
        return sasl.Challenge(self._server_first.encode("ascii"))

    # -- client-final-message ----------------------------------------------------

    def _client_final(self, message: str) -> sasl.Step:
        assert self._record is not None and self._client_first_bare is not None
        without_proof, separator, proof_text = message.rpartition(",p=")
        attributes = without_proof.split(",")
        if (
            not separator
            or len(attributes) < 2
            or not attributes[0].startswith("c=")
            or not attributes[1].startswith("r=")
            or any(len(a) < 2 or a[1] != "=" for a in attributes[2:])
        ):
            raise sasl.SASLFailed()
        binding = _unb64(attributes[0][2:])
        expected_binding = self._gs2_header.encode("utf-8") + self._cb_data
        nonce = attributes[1][2:]
        proof = _unb64(proof_text)
        if not hmac.compare_digest(binding, expected_binding):
            raise sasl.SASLFailed()
        if not hmac.compare_digest(nonce.encode("utf-8"), self._nonce.encode("ascii")):
            raise sasl.SASLFailed()
        if len(proof) != _KEY_BYTES:
            raise sasl.SASLFailed()

        record = self._record
        auth_message = ",".join((self._client_first_bare, self._server_first or "", without_proof))
        auth_message_bytes = auth_message.encode("utf-8")
        client_signature = _hmac(record.stored_key, auth_message_bytes)
        client_key = bytes(p ^ s for p, s in zip(proof, client_signature, strict=True))
        matched = hmac.compare_digest(hashlib.sha256(client_key).digest(), record.stored_key)
        if not (matched and self._known):
            raise sasl.SASLFailed()
        server_signature = _hmac(record.server_key, auth_message_bytes)
        return sasl.Outcome(
            sasl.Verified(self._authcid, self._authzid),
            final=f"v={_b64(server_signature)}".encode("ascii"),
        )


@sasl.register
class ScramSHA256Plus(ScramSHA256):
    name = "SCRAM-SHA-256-PLUS"
    plus = True
    requires_tls = True
