"""SHA512-CRYPT on OpenSSL's SHA-512 (popframe/auth/_shacrypt.c) gives
libxcrypt's answer for every setting it takes, and leaves every other
setting to libxcrypt."""

from __future__ import annotations

import ctypes
import threading

import crypt_r
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popframe.auth import schemes
from popframe.auth.stored import FALLBACK_DUMMY

pytestmark = pytest.mark.core

try:
    from popframe.auth import _shacrypt
except ImportError:  # not built: no compiler or no OpenSSL headers (setup.py)
    _shacrypt = None  # type: ignore[assignment]

needs_extension = pytest.mark.skipif(
    _shacrypt is None, reason="popframe.auth._shacrypt was not built (needs gcc and libssl-dev)")

ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def libxcrypt(password: bytes, setting: bytes) -> bytes | None:
    """The reference: libxcrypt's crypt_r, as schemes loads it."""
    assert schemes._LIBCRYPT_CRYPT_R is not None
    data = ctypes.create_string_buffer(schemes._CRYPT_DATA_SIZE)
    result: bytes | None = schemes._LIBCRYPT_CRYPT_R(password, setting, data)
    return result


passwords = st.binary(max_size=256).filter(lambda password: b"\0" not in password)
salts = st.text(ALPHABET, min_size=1, max_size=16).map(str.encode)
rounds = st.one_of(st.none(), st.integers(1000, 1500), st.just(5000))


@needs_extension
@settings(max_examples=150, deadline=None)
@given(passwords, salts, rounds)
def test_same_hash_as_libxcrypt(password: bytes, salt: bytes, rounds: int | None) -> None:
    setting = b"$6$" + (b"rounds=%d$" % rounds if rounds is not None else b"") + salt
    made = _shacrypt.sha512_crypt(password, setting)
    assert made is not None
    assert made == libxcrypt(password, setting)
    # Verifying: the whole stored hash is the setting.
    assert _shacrypt.sha512_crypt(password, made) == made


@needs_extension
@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 127, 128, 129, 255, 256])
def test_password_lengths_around_the_digest_size(length: int) -> None:
    password = bytes(i % 255 + 1 for i in range(length))
    setting = b"$6$rounds=1000$sixteencharsalt."
    assert _shacrypt.sha512_crypt(password, setting) == libxcrypt(password, setting)


@needs_extension
@pytest.mark.parametrize("setting", [
    b"$6$seventeen.chars.x",    # libxcrypt cuts the salt to 16
    b"$6$salt:colon$",          # not the crypt alphabet
    b"$6$$",                    # empty salt
    b"$6$",
    b"$6$rounds=999$salt",      # below the minimum: libxcrypt decides
    b"$6$rounds=0$salt",
    b"$6$rounds=01000$salt",    # a leading zero
    b"$6$rounds=$salt",
    b"$6$rounds=1000000000$salt",
    b"$6$rounds=1000",          # no salt after it
    b"$6$rounds=abc$salt",
    b"$5$salt$",                # SHA256-CRYPT
    b"$y$j9T$salt$",
    b"salt",
])
def test_unusual_settings_are_left_to_libxcrypt(setting: bytes) -> None:
    assert _shacrypt.sha512_crypt(b"password", setting) is None


@needs_extension
def test_passwords_it_does_not_take() -> None:
    assert _shacrypt.sha512_crypt(b"pass\0word", b"$6$salt$") is None
    # libxcrypt refuses passphrases of 512 octets and more: it decides.
    assert _shacrypt.sha512_crypt(b"x" * 257, b"$6$salt$") is None


@needs_extension
def test_verify_uses_it_and_libxcrypt_still_answers_the_rest(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    calls: list[bytes] = []

    def counting(password: bytes, setting: bytes) -> bytes | None:
        calls.append(setting)
        return _shacrypt.sha512_crypt(password, setting)

    monkeypatch.setattr(schemes, "_SHA512_CRYPT", counting)
    stored = crypt_r.crypt("correct horse", crypt_r.mksalt(crypt_r.METHOD_SHA512))
    assert schemes.verify_password("{SHA512-CRYPT}" + stored, b"correct horse")
    assert not schemes.verify_password("{SHA512-CRYPT}" + stored, b"Correct horse")
    assert calls == [stored.encode()] * 2
    # A salt libxcrypt cuts to 16 characters: computed by libxcrypt, same answer.
    long_salt = crypt_r.crypt("correct horse", "$6$abcdefghijklmnopqrstuvwxyz$")
    assert schemes.verify_password("{SHA512-CRYPT}" + long_salt, b"correct horse")
    # SHA256-CRYPT never reaches it.
    sha256 = crypt_r.crypt("correct horse", crypt_r.mksalt(crypt_r.METHOD_SHA256))
    assert schemes.verify_password("{SHA256-CRYPT}" + sha256, b"correct horse")
    assert len(calls) == 3


@needs_extension
def test_unknown_users_cost_what_known_ones_do() -> None:
    """The field an unknown user is checked against (when no user's can be
    borrowed) takes the same path as the users' own SHA512-CRYPT hashes."""
    dummy = FALLBACK_DUMMY.removeprefix("{SHA512-CRYPT}").encode()
    assert _shacrypt.sha512_crypt(b"guess", dummy) == libxcrypt(b"guess", dummy)


@needs_extension
def test_hashes_in_threads_agree() -> None:
    """The GIL is let go while hashing: many threads at once, each its own
    buffers, all right."""
    setting = b"$6$rounds=1000$threads"
    expected = {n: libxcrypt(b"password %d" % n, setting) for n in range(16)}
    got: dict[int, bytes | None] = {}

    def hash_one(n: int) -> None:
        got[n] = _shacrypt.sha512_crypt(b"password %d" % n, setting)

    threads = [threading.Thread(target=hash_one, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected


def test_what_hashes_is_said() -> None:
    said = schemes.SHA512_CRYPT_BY
    assert said == ("libxcrypt" if _shacrypt is None else "OpenSSL")


def test_without_the_extension_libxcrypt_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemes, "_SHA512_CRYPT", None)
    stored = crypt_r.crypt("correct horse", crypt_r.mksalt(crypt_r.METHOD_SHA512))
    assert schemes.verify_password("{SHA512-CRYPT}" + stored, b"correct horse")
    assert not schemes.verify_password("{SHA512-CRYPT}" + stored, b"wrong")
