"""Dovecot password schemes: verify and make ``{SCHEME}data`` fields.

A stored field is ``{SCHEME}data``, or bare ``data`` for the default scheme
(Dovecot's is CRYPT).  As in Dovecot, ``SCHEME`` may end in ``.B64``,
``.BASE64`` or ``.HEX`` to say how ``data`` is encoded, and scheme names are
case-insensitive.  Each scheme is a :class:`Scheme` record in :data:`SCHEMES`,
so mechanisms that need more than verify read :func:`plaintext` (APOP: PLAIN
fields), :func:`scram_record` (SCRAM: ``{SCRAM-SHA-256}iterations,salt,
StoredKey,ServerKey`` fields, as ``doveadm pw -s SCRAM-SHA-256`` makes them)
and :func:`cram_md5_secret` (CRAM-MD5: ``{CRAM-MD5}`` contexts or PLAIN
fields); both of those schemes also verify plain passwords, as in Dovecot.
New schemes come in with :func:`register`.

This module imports nothing from Twisted.  Verifying blocks (milliseconds for
crypt(3), hundreds of them for argon2): callers run it off the reactor thread.
No stdlib ``crypt`` (gone in Python 3.13): ``crypt_r`` links libxcrypt.
SHA512-CRYPT hashes are verified by :mod:`popframe.auth._shacrypt` (the same
algorithm on OpenSSL's SHA-512, a quarter less CPU) when it was built.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import bcrypt
import crypt_r
from argon2 import exceptions as argon2_exceptions
from argon2 import low_level as argon2_low

from popframe.auth.crammd5 import CONTEXT_LENGTH as CRAM_MD5_CONTEXT_LENGTH
from popframe.auth.crammd5 import CramMD5Context
from popframe.protocol.sasl import scram
from popframe.protocol.sasl.scram import ScramRecord

__all__ = [
    "BCRYPT_DEFAULT_COST",
    "BCRYPT_MAX_PASSWORD",
    "DEFAULT_SCHEME",
    "DIGEST_SALT_BYTES",
    "Encoding",
    "Make",
    "SCHEMES",
    "SHA512_CRYPT_BY",
    "Scheme",
    "StoredPassword",
    "UnknownScheme",
    "Verify",
    "cram_md5_secret",
    "decode",
    "find_scheme",
    "is_expensive",
    "make_hash",
    "parse_scram",
    "plaintext",
    "register",
    "scram_record",
    "split_field",
    "verify_password",
]

DEFAULT_SCHEME = "CRYPT"

#: bcrypt's input limit; Dovecot (crypt_blowfish) silently ignores the rest.
BCRYPT_MAX_PASSWORD = 72
#: Cost for new BLF-CRYPT hashes (Dovecot's 5 is too cheap today).
BCRYPT_DEFAULT_COST = 10
#: Salt length of new SSHA-family hashes (Dovecot reads any length).
DIGEST_SALT_BYTES = 8


class UnknownScheme(ValueError):
    """A field names a scheme or encoding popframe does not know.

    The admin's mistake, not the user's: callers log it and refuse the login.
    """


class Encoding(enum.Enum):
    """How a scheme's data is written in the field."""

    NONE = "none"
    BASE64 = "base64"
    HEX = "hex"


_SUFFIXES = {"B64": Encoding.BASE64, "BASE64": Encoding.BASE64, "HEX": Encoding.HEX}

Verify = Callable[[bytes, bytes], bool]
Make = Callable[[bytes, "int | None"], bytes]


@dataclass(frozen=True, slots=True)
class Scheme:
    """One password scheme.

    ``verify(raw, password)`` gets the decoded stored data and the password a
    client sent; it returns False, never raises, on malformed data.
    ``make(password, rounds)`` returns new raw data; ``rounds`` means what it
    means to ``doveadm pw -r`` (None: the default; schemes without a cost
    ignore it).  ``raw_length`` is the decoded size of fixed-size digests:
    Dovecot tells hex from base64 by it when the field has no suffix.
    ``plaintext`` marks schemes whose raw data is the password itself.
    """

    name: str
    verify: Verify
    make: Make | None = None
    encoding: Encoding = Encoding.NONE
    raw_length: int = 0
    plaintext: bool = False
    expensive: bool = False


@dataclass(frozen=True, slots=True)
class StoredPassword:
    """A decoded password field: the scheme and its raw (decoded) data."""

    name: str
    scheme: Scheme
    raw: bytes = field(repr=False)  # the password itself for PLAIN

    def verify(self, password: bytes) -> bool:
        return _acceptable(password) and bool(self.raw) and self.scheme.verify(self.raw, password)


#: Scheme name (upper case, aliases included) -> scheme.
SCHEMES: dict[str, Scheme] = {}


def register(scheme: Scheme, *aliases: str) -> Scheme:
    """Make ``scheme`` known under its name and ``aliases``."""
    for name in (scheme.name, *aliases):
        SCHEMES[name.upper()] = scheme
    return scheme


# -- parsing fields -----------------------------------------------------------


def split_field(stored: str, default_scheme: str = DEFAULT_SCHEME) -> tuple[str, str]:
    """Split ``{SCHEME}data`` into the scheme name (with suffix) and data."""
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 0:
            return stored[1:end], stored[end + 1 :]
    return default_scheme, stored


def find_scheme(name: str) -> tuple[str, Scheme, Encoding | None]:
    """Look up ``SSHA512``, ``ssha512.hex``...: (name, scheme, explicit encoding).

    Raises :class:`UnknownScheme`.
    """
    base, dot, suffix = name.upper().partition(".")
    scheme = SCHEMES.get(base)
    encoding = _SUFFIXES.get(suffix) if dot else None
    if scheme is None or (dot and encoding is None):
        raise UnknownScheme(f"unknown password scheme {name!r}")
    return base, scheme, encoding


def decode(stored: str, default_scheme: str = DEFAULT_SCHEME) -> StoredPassword | None:
    """Parse a stored field; None when its data is malformed.

    Raises :class:`UnknownScheme` when the scheme is not known.
    """
    name, data = split_field(stored, default_scheme)
    base, scheme, explicit = find_scheme(name)
    for encoding in _candidate_encodings(scheme, explicit, data):
        raw = _decode_data(data, encoding)
        if raw is not None and (not scheme.raw_length or len(raw) == scheme.raw_length):
            return StoredPassword(base, scheme, raw)
    return None


def _candidate_encodings(scheme: Scheme, explicit: Encoding | None, data: str) -> list[Encoding]:
    """Dovecot guesses hex or base64 for fixed-size digests without a suffix."""
    if explicit is not None:
        return [explicit]
    if scheme.encoding is not Encoding.NONE and scheme.raw_length:
        if len(data) == 2 * scheme.raw_length:
            return [Encoding.HEX, Encoding.BASE64]
        return [Encoding.BASE64]
    return [scheme.encoding]


def _decode_data(data: str, encoding: Encoding) -> bytes | None:
    try:
        if encoding is Encoding.HEX:
            return binascii.unhexlify(data)
        if encoding is Encoding.BASE64:
            return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        return data.encode("utf-8")
    except ValueError:  # binascii.Error, UnicodeError, non-ASCII input
        return None


def _encode_data(raw: bytes, encoding: Encoding) -> str:
    if encoding is Encoding.HEX:
        return raw.hex()
    if encoding is Encoding.BASE64:
        return base64.b64encode(raw).decode("ascii")
    return raw.decode("utf-8")


def _acceptable(password: bytes) -> bool:
    """Empty passwords never match; NUL would truncate a C string and let
    ``secret\\0junk`` match ``secret``."""
    return bool(password) and b"\0" not in password


# -- the public API -----------------------------------------------------------


def verify_password(stored: str, password: bytes, default_scheme: str = DEFAULT_SCHEME) -> bool:
    """Whether ``password`` matches the stored field.

    False for a wrong password or malformed data; raises :class:`UnknownScheme`
    only for an unknown scheme name (a configuration problem).
    """
    record = decode(stored, default_scheme)
    return record is not None and record.verify(password)


def make_hash(scheme: str, password: bytes, *, rounds: int | None = None) -> str:
    """A new field ``{SCHEME}data`` for ``password``, as ``doveadm pw`` makes it."""
    base, record, explicit = find_scheme(scheme)
    if record.make is None:
        raise ValueError(f"{base} can verify passwords but not make new hashes")
    if not _acceptable(password):
        raise ValueError("the password is empty or contains NUL")
    raw = record.make(password, rounds)
    suffix = scheme.upper().partition(".")[2]
    label = f"{base}.{suffix}" if suffix else base
    return "{" + label + "}" + _encode_data(raw, explicit or record.encoding)


def plaintext(stored: str, default_scheme: str = DEFAULT_SCHEME) -> bytes | None:
    """The password of a PLAIN-family field (for APOP, CRAM-MD5), else None."""
    record = decode(stored, default_scheme)
    if record is None or not record.scheme.plaintext or not record.raw:
        return None
    return record.raw


def scram_record(stored: str, default_scheme: str = DEFAULT_SCHEME) -> ScramRecord | None:
    """The keys of a ``{SCRAM-SHA-256}`` field (for SCRAM), else None."""
    record = decode(stored, default_scheme)
    if record is None or record.scheme is not SCHEMES["SCRAM-SHA-256"]:
        return None
    return parse_scram(record.raw)


def cram_md5_secret(stored: str, default_scheme: str = DEFAULT_SCHEME) -> CramMD5Context | None:
    """What CRAM-MD5 needs from a ``{CRAM-MD5}`` or PLAIN-family field, else None."""
    record = decode(stored, default_scheme)
    if record is None or not record.raw:
        return None
    if record.scheme is SCHEMES["CRAM-MD5"]:
        return CramMD5Context.from_context(record.raw)
    if record.scheme.plaintext:
        return CramMD5Context.from_password(record.raw)
    return None


def is_expensive(stored: str, default_scheme: str = DEFAULT_SCHEME) -> bool:
    """Whether verifying the field costs real CPU or memory (crypt, argon2)."""
    return find_scheme(split_field(stored, default_scheme)[0])[1].expensive


# -- PLAIN ---------------------------------------------------------------------


def _plain_verify(raw: bytes, password: bytes) -> bool:
    return hmac.compare_digest(raw, password)


def _plain_make(password: bytes, rounds: int | None) -> bytes:
    return password


# -- crypt(3) through libxcrypt -------------------------------------------------


def _load_libcrypt_crypt_r() -> Callable[..., bytes | None] | None:
    """libxcrypt's ``crypt_r`` through ctypes, which releases the GIL for
    the call: the ``crypt_r`` module holds it for the whole 3-7 ms of a
    SHA512-CRYPT hash, which stalls the reactor even from a thread pool
    (measured: benchmarks/gil_check.py)."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).crypt_r
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    function.restype = ctypes.c_char_p
    return function


def _load_sha512_crypt() -> Callable[[bytes, bytes], bytes | None] | None:
    """SHA512-CRYPT on OpenSSL's SHA-512 (``_shacrypt.c``): optional, built
    where a C compiler and OpenSSL's headers were (setup.py); it releases
    the GIL too."""
    try:
        from popframe.auth._shacrypt import sha512_crypt
    except ImportError:
        return None
    return sha512_crypt


_LIBCRYPT_CRYPT_R = _load_libcrypt_crypt_r()
_SHA512_CRYPT = _load_sha512_crypt()
#: What verifies SHA512-CRYPT hashes here: "OpenSSL" (the C part was
#: built) or "libxcrypt".
SHA512_CRYPT_BY = "OpenSSL" if _SHA512_CRYPT is not None else "libxcrypt"
#: sizeof(struct crypt_data) in libxcrypt; it must start zeroed.
_CRYPT_DATA_SIZE = 32768


def _crypt(word: bytes, setting: bytes) -> bytes | None:
    """crypt(3) of ``word`` with ``setting``; None when libxcrypt refuses."""
    if b"\0" in word or b"\0" in setting:
        return None
    if _SHA512_CRYPT is not None and setting.startswith(b"$6$"):
        result = _SHA512_CRYPT(word, setting)  # None: an unusual setting, for libxcrypt
        if result is not None:
            return result
    if _LIBCRYPT_CRYPT_R is not None:
        data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
        return _LIBCRYPT_CRYPT_R(word, setting, data)
    try:
        result = crypt_r.crypt(word.decode("utf-8"), setting.decode("ascii"))
    except (OSError, ValueError):  # incl. UnicodeDecodeError
        return None
    return result.encode("ascii") if result is not None else None


def _crypt_verify(raw: bytes, password: bytes) -> bool:
    """Any hash libxcrypt knows.  Like Dovecot, the scheme name does not have
    to match the hash's ``$id$``."""
    if raw[:1] in (b"*", b"!"):  # locked entries and libxcrypt failure tokens
        return False
    result = _crypt(password, raw)
    return result is not None and hmac.compare_digest(result, raw)


def _crypt_maker(method: crypt_r._Method) -> Make:
    def make(password: bytes, rounds: int | None) -> bytes:
        result = crypt_r.crypt(password.decode("utf-8"), crypt_r.mksalt(method, rounds=rounds))
        if not result or result.startswith("*"):
            raise ValueError(f"libxcrypt cannot make {method.name} hashes")
        return result.encode("ascii")

    return make


# -- bcrypt (BLF-CRYPT) ----------------------------------------------------------

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")


def _bcrypt_verify(raw: bytes, password: bytes) -> bool:
    if raw.startswith(b"$2x$"):  # the old sign-extension bug: only libxcrypt has it
        return _crypt_verify(raw, password)
    if not raw.startswith(_BCRYPT_PREFIXES):
        return False
    try:
        computed = bcrypt.hashpw(password[:BCRYPT_MAX_PASSWORD], raw)
    except ValueError:
        return False
    return hmac.compare_digest(computed, raw)


def _bcrypt_make(password: bytes, rounds: int | None) -> bytes:
    salt = bcrypt.gensalt(rounds=rounds or BCRYPT_DEFAULT_COST, prefix=b"2b")
    hashed = bcrypt.hashpw(password[:BCRYPT_MAX_PASSWORD], salt)
    return b"$2y$" + hashed[4:]  # $2b$ and $2y$ are one algorithm; Dovecot writes $2y$


# -- argon2 ----------------------------------------------------------------------

_ARGON2_TYPES = {b"$argon2id$": argon2_low.Type.ID, b"$argon2i$": argon2_low.Type.I}


def _argon2_verify(raw: bytes, password: bytes) -> bool:
    """The hash's own prefix picks the variant, as libsodium does for Dovecot."""
    for prefix, kind in _ARGON2_TYPES.items():
        if raw.startswith(prefix):
            try:
                return argon2_low.verify_secret(raw, password, kind)
            except (argon2_exceptions.VerificationError, argon2_exceptions.InvalidHashError):
                return False
    return False


def _argon2_maker(kind: argon2_low.Type, time_cost: int, memory_kib: int) -> Make:
    """Dovecot's (libsodium's "interactive") defaults; ``rounds`` is time cost."""

    def make(password: bytes, rounds: int | None) -> bytes:
        return argon2_low.hash_secret(
            password,
            secrets.token_bytes(16),
            time_cost=rounds or time_cost,
            memory_cost=memory_kib,
            parallelism=1,
            hash_len=32,
            type=kind,
        )

    return make


# -- hashlib digests ---------------------------------------------------------------


def _digest_verifier(algorithm: str) -> Verify:
    def verify(raw: bytes, password: bytes) -> bool:
        return hmac.compare_digest(hashlib.new(algorithm, password).digest(), raw)

    return verify


def _salted_verifier(algorithm: str) -> Verify:
    """``raw`` is digest(password + salt) + salt."""
    size = hashlib.new(algorithm).digest_size

    def verify(raw: bytes, password: bytes) -> bool:
        if len(raw) <= size:
            return False
        digest, salt = raw[:size], raw[size:]
        return hmac.compare_digest(hashlib.new(algorithm, password + salt).digest(), digest)

    return verify


def _salted_maker(algorithm: str) -> Make:
    def make(password: bytes, rounds: int | None) -> bytes:
        salt = secrets.token_bytes(DIGEST_SALT_BYTES)
        return hashlib.new(algorithm, password + salt).digest() + salt

    return make


# -- SCRAM-SHA-256 (Dovecot: iterations,salt,StoredKey,ServerKey in base64) ----------


def parse_scram(raw: bytes) -> ScramRecord | None:
    """Dovecot's ``iterations,salt,StoredKey,ServerKey``; None if malformed."""
    fields = raw.split(b",")
    if len(fields) != 4 or not fields[0].isdigit() or fields[0].startswith(b"0"):
        return None
    iterations = int(fields[0])
    try:
        salt, stored_key, server_key = (base64.b64decode(f, validate=True) for f in fields[1:])
    except ValueError:
        return None
    size = hashlib.sha256().digest_size
    if (
        not scram.MIN_ITERATIONS <= iterations <= scram.MAX_ITERATIONS
        or not salt
        or len(stored_key) != size
        or len(server_key) != size
    ):
        return None
    return ScramRecord(salt, stored_key, server_key, iterations)


def _scram_verify(raw: bytes, password: bytes) -> bool:
    record = parse_scram(raw)
    if record is None:
        return False
    computed = ScramRecord.from_password(password, record.salt, record.iterations)
    return hmac.compare_digest(computed.stored_key, record.stored_key) & hmac.compare_digest(
        computed.server_key, record.server_key
    )


def _scram_make(password: bytes, rounds: int | None) -> bytes:
    iterations = scram.DEFAULT_ITERATIONS if rounds is None else rounds
    if not scram.MIN_ITERATIONS <= iterations <= scram.MAX_ITERATIONS:
        raise ValueError(
            f"SCRAM-SHA-256 iterations must be {scram.MIN_ITERATIONS} to {scram.MAX_ITERATIONS}"
        )
    record = ScramRecord.from_password(password, secrets.token_bytes(scram.SALT_BYTES), iterations)
    fields = (record.salt, record.stored_key, record.server_key)
    return b",".join([b"%d" % iterations, *(base64.b64encode(f) for f in fields)])


# -- CRAM-MD5 (Dovecot: HMAC-MD5's inner and outer states after the key) -------------


def _cram_md5_verify(raw: bytes, password: bytes) -> bool:
    return hmac.compare_digest(CramMD5Context.from_password(password).context(), raw)


def _cram_md5_make(password: bytes, rounds: int | None) -> bytes:
    return CramMD5Context.from_password(password).context()


# -- the table ---------------------------------------------------------------------


def _register_builtins() -> None:
    register(Scheme("PLAIN", _plain_verify, _plain_make, plaintext=True), "CLEAR", "CLEARTEXT")

    # What SASL mechanisms read (scram_record, cram_md5_secret); both also
    # verify plain passwords (USER/PASS, PLAIN), as in Dovecot.
    register(Scheme("SCRAM-SHA-256", _scram_verify, _scram_make, expensive=True))
    register(
        Scheme("CRAM-MD5", _cram_md5_verify, _cram_md5_make, Encoding.HEX, CRAM_MD5_CONTEXT_LENGTH)
    )

    # Verify-only crypt(3) names: new hashes should use a strong scheme.
    register(Scheme("CRYPT", _crypt_verify, expensive=True))
    register(Scheme("DES-CRYPT", _crypt_verify, expensive=True))
    register(Scheme("MD5-CRYPT", _crypt_verify, expensive=True), "MD5")
    sha256 = _crypt_maker(crypt_r.METHOD_SHA256)
    sha512 = _crypt_maker(crypt_r.METHOD_SHA512)
    register(Scheme("SHA256-CRYPT", _crypt_verify, sha256, expensive=True))
    register(Scheme("SHA512-CRYPT", _crypt_verify, sha512, expensive=True))
    register(Scheme("BLF-CRYPT", _bcrypt_verify, _bcrypt_make, expensive=True))

    argon2i = _argon2_maker(argon2_low.Type.I, 4, 32768)
    argon2id = _argon2_maker(argon2_low.Type.ID, 3, 65536)
    register(Scheme("ARGON2I", _argon2_verify, argon2i, expensive=True))
    register(Scheme("ARGON2ID", _argon2_verify, argon2id, expensive=True))

    for name, algorithm in (("SSHA", "sha1"), ("SSHA256", "sha256"), ("SSHA512", "sha512")):
        register(
            Scheme(name, _salted_verifier(algorithm), _salted_maker(algorithm), Encoding.BASE64)
        )
    register(Scheme("SMD5", _salted_verifier("md5"), encoding=Encoding.BASE64))

    # Unsalted digests: verify only, so users can be moved off them.
    for name, algorithm, encoding, aliases in (
        ("SHA", "sha1", Encoding.BASE64, ("SHA1",)),
        ("SHA256", "sha256", Encoding.BASE64, ()),
        ("SHA512", "sha512", Encoding.BASE64, ()),
        ("PLAIN-MD5", "md5", Encoding.HEX, ()),
        ("LDAP-MD5", "md5", Encoding.BASE64, ()),
    ):
        size = hashlib.new(algorithm).digest_size
        scheme = Scheme(name, _digest_verifier(algorithm), encoding=encoding, raw_length=size)
        register(scheme, *aliases)


_register_builtins()
