"""Password schemes against reference hashes made by Dovecot 2.3.19's
``doveadm pw -s SCHEME -p PASSWORD`` (pasted, so Dovecot is not needed)."""

from __future__ import annotations

import base64
import hmac

import pytest

from popframe.auth import schemes
from popframe.auth.schemes import (
    SCHEMES,
    Encoding,
    Scheme,
    UnknownScheme,
    cram_md5_secret,
    decode,
    is_expensive,
    make_hash,
    plaintext,
    register,
    scram_record,
    verify_password,
)

pytestmark = pytest.mark.core

PASSWORD = b"correct horse"
WRONG = b"Correct horse"  # differs in the first 8 bytes: DES-CRYPT reads no more

# doveadm pw -s SCHEME -p 'correct horse'
DOVECOT = [
    "{SHA512-CRYPT}$6$G5w08Tk7LsObWsPn$5OWMphmVTH8UxH5ZHv0EJWEk9pq64XUJIzAla7iQGDj4843m0qU0"
    "MPNZ02/ZoXuLa2NdPCLcV3oh8bpG.Ws.l1",
    "{SHA256-CRYPT}$5$jhX0DLcUTKLWJEl5$Ba8ecBKNFRUXJqTU.X1ozXY/AGo6/kvM5g0LuDNAQk9",
    "{BLF-CRYPT}$2y$05$kZPWrIt8L3eBnWqYGUj/1OTXm67sWdWqS4SjucSsbuUgpfwZWKPn6",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$gWauIzyh27+ktor4fe1/vA$NEukd4eKE8jX125n+hqa6Dys"
    "wH/WgTYFX3KafSbH5wE",
    "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$Taut873L3t3X99uG0OHx5A$NPWnnvDcjpaJxozIkw/PCbFdfw"
    "PkjatPJFM/gr0TAz4",
    "{SSHA512}DHTjtMfL0HROMb9XLn6aV9R4LUHJbmoJX1CdpbLGJChoK5iWuVhE21qYbe4EXAMEmPxMU96X/UYRE"
    "CHpZiaCcR1Uups=",
    "{SSHA256}PDdsc4xFH+WXZlRZlmazZJ9drVFexsYtTPPkh1JQePTZmXxD",
    "{SSHA}LtdPQ542LKxjNoqNpdsfxuA/bI6ssxr2",
    "{PLAIN}correct horse",
    "{CLEAR}correct horse",
    "{CLEARTEXT}correct horse",
    "{CRYPT}$2y$05$v3dgYGWZ9/xNQWujuEQkdOpaqHkdVR.VGpuxEvDr6RMxDZf9cdkZC",
    "{MD5-CRYPT}$1$X14IBEPA$8ge8YlD69flRfUV0WrUv70",
    "{MD5}$1$xRQFEHHY$zL/bBjBl3pQ9G.l6XhUie0",
    "{DES-CRYPT}6AfQQph0XB.rE",
    "{SMD5}bBYQ7C7bZqt8DzaLBuxFb53BZv4=",
    "{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=",
    "{SHA1}L55TUjtiq8FBorTWAZ0jy6g129A=",
    "{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE=",
    "{SHA512}VraY3v7bWkNbY0r+MyC7rz/c2SC2xQOkRvx7endrKY1HnRumqLYXgI6wv1ec6aldZoNHvKtxSQhayTyy"
    "eZUZew==",
    "{PLAIN-MD5}3cb4e732631f47e6eb961f34554b7cde",
    "{LDAP-MD5}PLTnMmMfR+brlh80VUt83g==",
    # encoding suffixes
    "{SSHA.B64}RqaQnkbXYdXlVF3qUKQaClJ8ELKcVfmT",
    "{SSHA.HEX}6e101bd8570bda14b5b235e8d7dda80d45d1099e6e3a782e",
    "{SSHA512.B64}aVhWnuwDJ0hj1jYuC1fiA1m3UCiUSPkgem29G+Ygt3OJ1KL8ruyy5b7ZUGUftAtXErvwpDba2rRU"
    "nk90J1cen/f2d20=",
    "{SSHA512.HEX}482f46e7f82a93556197f6a4a974900550fea748d8cb93ae62b5de771d5cf287c09a2c2eec4406"
    "b4ec04b65ee26ac468d77f29fa1dd03438187bf52976acbbc325759272",
    "{SSHA256.HEX}db4ebbe612b9639877baba11ca5be2e21937ea927b0c37fd66128d18d2e3d7b3e21aecb6",
    "{SHA256.HEX}4104d36f8da2c254349f85836793ebe029e0c957063a34c91c2e9203187b5631",
    "{PLAIN.B64}Y29ycmVjdCBob3JzZQ==",
    "{PLAIN.HEX}636f727265637420686f727365",
    "{SHA256-CRYPT.HEX}24352459665070594c487764775464584171612474795866394d555175775343714139654b"
    "76324376475977432f6955564258397679442f68705263564735",
    # what SASL mechanisms read, verifying plain passwords too
    "{SCRAM-SHA-256}4096,aLNl000TvfgTbpcHID9B9A==,GnWHSAIzK4kqynk05/Mr2L/u1JbTd+hZBBsLdlxPakk=,"
    "s8yd3UslJx59YPOJx8eokaaV8wILjLedZmDSAwDiUMY=",
    "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29",
]

# doveadm pw -s SCHEME -p 'pässwörd'
UNICODE_PASSWORD = "pässwörd".encode()
DOVECOT_UNICODE = [
    "{SHA512-CRYPT}$6$9fgWY8dtyVL2V9sj$MPTpfEivHMHQPpiYaV2SXKz3UMPzQ3Lpwmm54UXL2k51nvorcDKSD14w"
    "04aEcUiNSKqwwZhydFsYdOmfGoczO0",
    "{SSHA512}vlWIFPAPTrzMfGSZrzvOof38ESfIvg/Ui54PgtxZMnn4UW1RxZxfPKRnRunycxCgKG4kbrSa2lqv+ny/"
    "PUV4Vd9nyAI=",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$RTEwt3PL+B9d0J6lzjroMA$sCfm7EBw27US1TsV1qakvXKkJ"
    "ULwgPnPBalaQo0E548",
    "{BLF-CRYPT}$2y$05$ZSKG6h3ks5a8ldpv3RbkBe04ij0L.f45u6PrBnWvfTh4CTI8l0UDq",
    "{SCRAM-SHA-256}4096,Y+mSPWlYFU2o40MCvIkYYw==,69/GMFaUYUANacoObyL28XUbSVWxk3e3cVY7IKvyRFI=,"
    "eXXr8cBiTFEazbfRN8LniXhP3Z5oJoe79mgGNQGMW14=",
    "{CRAM-MD5}4a60bd37924fc5d45b4c92ce695bac86cb234bc3028aab2a71a225cb0dedfbb9",
]

# doveadm pw -s BLF-CRYPT -p "$(printf 'a%.0s' {1..72})bbbbbbbbbb": Dovecot reads 72 bytes
LONG_PASSWORD = b"a" * 72 + b"b" * 10
DOVECOT_LONG_BCRYPT = "{BLF-CRYPT}$2y$05$lkEokJN0eNnIoq4yBxTNGOzTVaWmY35JghjIe9.ylaWqZSFghcl.6"

SHA512_CRYPT = DOVECOT[0]
SSHA512 = DOVECOT[5]


def _id(field: str) -> str:
    return field.partition("}")[0] + "}"


# -- Dovecot's hashes --------------------------------------------------------------


@pytest.mark.parametrize("stored", DOVECOT, ids=_id)
def test_dovecot_hash_accepts_the_password(stored: str) -> None:
    assert verify_password(stored, PASSWORD)


@pytest.mark.parametrize("stored", DOVECOT, ids=_id)
def test_dovecot_hash_refuses_other_passwords(stored: str) -> None:
    assert not verify_password(stored, WRONG)
    if not stored.startswith("{DES-CRYPT}"):  # DES reads 8 bytes, in Dovecot too
        assert not verify_password(stored, PASSWORD + b"x")
        assert not verify_password(stored, PASSWORD[:-1])


@pytest.mark.parametrize("stored", DOVECOT_UNICODE, ids=_id)
def test_utf8_passwords(stored: str) -> None:
    assert verify_password(stored, UNICODE_PASSWORD)
    assert not verify_password(stored, "passwörd".encode())
    assert not verify_password(stored, UNICODE_PASSWORD.decode().encode("latin-1"))


def test_scheme_names_are_case_insensitive() -> None:
    assert verify_password("{sha512-crypt}" + SHA512_CRYPT.partition("}")[2], PASSWORD)
    assert verify_password("{Ssha.b64}RqaQnkbXYdXlVF3qUKQaClJ8ELKcVfmT", PASSWORD)


def test_field_without_scheme_uses_the_default() -> None:
    bare = SHA512_CRYPT.partition("}")[2]
    assert verify_password(bare, PASSWORD)  # CRYPT, as in Dovecot
    assert not verify_password(bare, WRONG)
    assert verify_password("correct horse", PASSWORD, default_scheme="PLAIN")
    assert verify_password("correct horse", PASSWORD, default_scheme="plain")
    assert not verify_password("correct horse", PASSWORD)  # not a crypt(3) hash


def test_crypt_takes_any_crypt3_hash() -> None:
    """Like Dovecot: the name need not match the hash's $id$."""
    sha256 = DOVECOT[1].partition("}")[2]
    assert verify_password("{CRYPT}" + sha256, PASSWORD)
    assert verify_password("{SHA512-CRYPT}" + sha256, PASSWORD)


def test_unsalted_digest_hex_or_base64_is_guessed() -> None:
    hex_digest = "4104d36f8da2c254349f85836793ebe029e0c957063a34c91c2e9203187b5631"
    assert verify_password("{SHA256}" + hex_digest, PASSWORD)


# -- bcrypt -------------------------------------------------------------------------


def test_bcrypt_reads_only_72_bytes_as_dovecot_does() -> None:
    assert verify_password(DOVECOT_LONG_BCRYPT, LONG_PASSWORD)
    assert verify_password(DOVECOT_LONG_BCRYPT, b"a" * 72)
    assert verify_password(DOVECOT_LONG_BCRYPT, b"a" * 72 + b"anything else")
    assert not verify_password(DOVECOT_LONG_BCRYPT, b"a" * 71)
    assert verify_password("{CRYPT}" + DOVECOT_LONG_BCRYPT.partition("}")[2], LONG_PASSWORD)


def test_bcrypt_long_password_round_trip() -> None:
    stored = make_hash("BLF-CRYPT", LONG_PASSWORD, rounds=4)
    assert verify_password(stored, LONG_PASSWORD)
    assert verify_password(stored, b"a" * 72)
    assert not verify_password(stored, b"a" * 71 + b"b")


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_prefixes(prefix: str) -> None:
    stored = DOVECOT[2].replace("$2y$", prefix)
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, WRONG)


# -- what never matches, and never raises --------------------------------------------

MALFORMED = [
    "{SHA512-CRYPT}",
    "{SHA512-CRYPT}$6$",
    "{SHA512-CRYPT}$6$G5w08Tk7LsObWsPn$",
    "{SHA512-CRYPT}" + SHA512_CRYPT.partition("}")[2][:-1],
    "{SHA512-CRYPT}*",
    "{SHA512-CRYPT}*0",
    "{SHA512-CRYPT}!" + SHA512_CRYPT.partition("}")[2],
    "{SHA512-CRYPT}$9$unknown$method",
    "{CRYPT}pässwörd",
    "{BLF-CRYPT}$2y$05$short",
    "{BLF-CRYPT}$2y$99$kZPWrIt8L3eBnWqYGUj/1OTXm67sWdWqS4SjucSsbuUgpfwZWKPn6",
    "{BLF-CRYPT}" + SHA512_CRYPT.partition("}")[2],
    "{BLF-CRYPT}",
    "{ARGON2ID}$argon2id$garbage",
    "{ARGON2ID}$argon2d$v=19$m=65536,t=3,p=1$gWauIzyh27+ktor4fe1/vA$NEukd4eKE8jX125n+hqa6Dys"
    "wH/WgTYFX3KafSbH5wE",
    "{ARGON2ID}not argon at all",
    "{SSHA512}not base64!",
    "{SSHA512}ü",
    "{SSHA512}" + base64.b64encode(b"x" * 64).decode(),  # no salt
    "{SSHA}",
    "{SSHA.HEX}zz",
    "{SSHA.HEX}abc",
    "{SHA256}c2hvcnQ=",  # wrong length
    "{PLAIN-MD5}3cb4e732631f47e6eb961f34554b7cd",
    "{PLAIN}",
    "{PLAIN.B64}%%%",
    "",
]


@pytest.mark.parametrize("stored", MALFORMED)
def test_malformed_hashes_do_not_match(stored: str) -> None:
    assert verify_password(stored, PASSWORD) is False
    assert verify_password(stored, b"") is False


@pytest.mark.parametrize("name", ["{NOPE}x", "{SSHA.BASE32}x", "{SSHA.}x", "{}x", "{CRAM-MD5 }x"])
def test_unknown_scheme_raises(name: str) -> None:
    with pytest.raises(UnknownScheme):
        verify_password(name, PASSWORD)
    assert issubclass(UnknownScheme, ValueError)


def test_unknown_default_scheme_raises() -> None:
    with pytest.raises(UnknownScheme):
        verify_password("secret", PASSWORD, default_scheme="NOPE")


def test_unclosed_brace_is_data_of_the_default_scheme() -> None:
    assert verify_password("{secret", b"{secret", default_scheme="PLAIN")


@pytest.mark.parametrize("stored", [SHA512_CRYPT, SSHA512, "{PLAIN}", "{PLAIN}abc"], ids=_id)
def test_empty_password_never_matches(stored: str) -> None:
    assert not verify_password(stored, b"")


def test_nul_never_matches() -> None:
    """A C string stops at NUL: "correct horse\\0junk" must not pass for "correct horse"."""
    for stored in (SHA512_CRYPT, DOVECOT[2], "{PLAIN}correct horse", SSHA512):
        assert not verify_password(stored, PASSWORD + b"\0junk")
    assert not verify_password("{PLAIN.HEX}6100", b"a\0")


def test_non_utf8_passwords() -> None:
    password = "pässwörd".encode("latin-1")
    assert verify_password("{PLAIN.HEX}" + password.hex(), password)
    assert verify_password(make_hash("SSHA512", password), password)
    assert not verify_password(SHA512_CRYPT, password)  # crypt_r takes str: no match, no raise


# -- making hashes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "prefix", "rounds"),
    [
        ("SHA512-CRYPT", "{SHA512-CRYPT}$6$", None),
        ("SHA512-CRYPT", "{SHA512-CRYPT}$6$rounds=1000$", 1000),
        ("SHA256-CRYPT", "{SHA256-CRYPT}$5$", None),
        ("BLF-CRYPT", "{BLF-CRYPT}$2y$04$", 4),
        ("BLF-CRYPT", "{BLF-CRYPT}$2y$10$", None),
        ("ARGON2ID", "{ARGON2ID}$argon2id$v=19$m=65536,t=1,p=1$", 1),
        ("ARGON2I", "{ARGON2I}$argon2i$v=19$m=32768,t=1,p=1$", 1),
        ("SSHA512", "{SSHA512}", None),
        ("SSHA256", "{SSHA256}", None),
        ("SSHA", "{SSHA}", None),
        ("PLAIN", "{PLAIN}correct horse", None),
        ("CLEAR", "{CLEAR}correct horse", None),
        ("plain.b64", "{PLAIN.B64}Y29ycmVjdCBob3JzZQ==", None),
        ("ssha512.hex", "{SSHA512.HEX}", None),
        ("SCRAM-SHA-256", "{SCRAM-SHA-256}4096,", None),
        ("SCRAM-SHA-256", "{SCRAM-SHA-256}5000,", 5000),
        ("CRAM-MD5", "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29", None),
    ],
)
def test_make_hash_round_trip(scheme: str, prefix: str, rounds: int | None) -> None:
    stored = make_hash(scheme, PASSWORD, rounds=rounds)
    assert stored.startswith(prefix)
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, WRONG)


def test_make_hash_default_sha512_crypt() -> None:
    stored = make_hash("SHA512-CRYPT", PASSWORD)
    assert stored.startswith("{SHA512-CRYPT}$6$") and "rounds=" not in stored
    assert make_hash("SHA512-CRYPT", PASSWORD) != stored  # a fresh salt each time


def test_make_hash_salts() -> None:
    assert make_hash("SSHA512", PASSWORD) != make_hash("SSHA512", PASSWORD)
    raw = base64.b64decode(make_hash("SSHA512", PASSWORD).partition("}")[2])
    assert len(raw) == 64 + schemes.DIGEST_SALT_BYTES


@pytest.mark.parametrize("scheme", ["CRYPT", "MD5-CRYPT", "DES-CRYPT", "SHA", "SMD5", "PLAIN-MD5"])
def test_make_hash_refuses_verify_only_schemes(scheme: str) -> None:
    with pytest.raises(ValueError, match="verify"):
        make_hash(scheme, PASSWORD)


def test_make_hash_refuses_bad_input() -> None:
    with pytest.raises(UnknownScheme):
        make_hash("NOPE", PASSWORD)
    with pytest.raises(ValueError):
        make_hash("SSHA512", b"")
    with pytest.raises(ValueError):
        make_hash("SSHA512", b"a\0b")
    with pytest.raises(ValueError):
        make_hash("PLAIN", b"\xff")  # not UTF-8: use PLAIN.B64
    assert plaintext(make_hash("PLAIN.B64", b"\xff")) == b"\xff"


# -- what other mechanisms read -------------------------------------------------------


def test_plaintext() -> None:
    for stored in ("{PLAIN}correct horse", "{clear}correct horse", "{PLAIN.HEX}636f727265637420686f727365"):
        assert plaintext(stored) == PASSWORD
    assert plaintext("correct horse", default_scheme="PLAIN") == PASSWORD
    assert plaintext(SSHA512) is None
    assert plaintext(SHA512_CRYPT) is None
    assert plaintext("{PLAIN}") is None
    assert plaintext("{PLAIN.HEX}zz") is None
    with pytest.raises(UnknownScheme):
        plaintext("{NOPE}x")


def test_decode() -> None:
    record = decode("{ssha512.hex}" + "00" * 70)
    assert record is not None
    assert record.name == "SSHA512" and record.scheme is SCHEMES["SSHA512"]
    assert record.raw == b"\0" * 70
    assert decode("{SSHA512.HEX}0") is None
    assert "correct horse" not in repr(decode("{PLAIN}correct horse"))


SCRAM = DOVECOT[-2]
CRAM_MD5 = DOVECOT[-1]


def test_scram_record() -> None:
    record = scram_record(SCRAM)
    assert record is not None and record.iterations == 4096
    assert record.salt == base64.b64decode("aLNl000TvfgTbpcHID9B9A==")
    assert record.stored_key == base64.b64decode("GnWHSAIzK4kqynk05/Mr2L/u1JbTd+hZBBsLdlxPakk=")
    assert record.server_key == base64.b64decode("s8yd3UslJx59YPOJx8eokaaV8wILjLedZmDSAwDiUMY=")
    assert scram_record(make_hash("SCRAM-SHA-256", PASSWORD, rounds=6000)).iterations == 6000  # type: ignore[union-attr]
    for other in ("{PLAIN}correct horse", SSHA512, CRAM_MD5, "{SCRAM-SHA-256}junk"):
        assert scram_record(other) is None


@pytest.mark.parametrize(
    "data",
    [
        "4096,aLNl000TvfgTbpcHID9B9A==,GnWHSAIzK4kqynk05/Mr2L/u1JbTd+hZBBsLdlxPakk=",  # 3 fields
        "1000,aLNl000TvfgTbpcHID9B9A==,{k},{k}",  # fewer iterations than Dovecot takes
        "04096,aLNl000TvfgTbpcHID9B9A==,{k},{k}",
        "-4096,aLNl000TvfgTbpcHID9B9A==,{k},{k}",
        "99999999,aLNl000TvfgTbpcHID9B9A==,{k},{k}",
        "4096,,{k},{k}",
        "4096,aLNl000TvfgTbpcHID9B9A==,{k},AAAA",  # short key
        "4096,aLNl000TvfgTbpcHID9B9A==,{k},{k}!",
        "4096,aLNl000TvfgTbpcHID9B9A=,{k},{k}",  # bad padding
    ],
)
def test_malformed_scram_records(data: str) -> None:
    stored = "{SCRAM-SHA-256}" + data.format(k="GnWHSAIzK4kqynk05/Mr2L/u1JbTd+hZBBsLdlxPakk=")
    assert scram_record(stored) is None
    assert not verify_password(stored, PASSWORD)


def test_scram_iterations_must_be_what_dovecot_takes() -> None:
    for rounds in (1000, 4095, 10_000_001):
        with pytest.raises(ValueError, match="iterations"):
            make_hash("SCRAM-SHA-256", PASSWORD, rounds=rounds)


def test_cram_md5_secret() -> None:
    challenge = b"<1896.697170952@postoffice.example.net>"
    expected = hmac.new(PASSWORD, challenge, "md5").digest()
    for stored in (CRAM_MD5, "{PLAIN}correct horse", "{CLEAR.B64}Y29ycmVjdCBob3JzZQ=="):
        secret = cram_md5_secret(stored)
        assert secret is not None and secret.hmac(challenge) == expected
    for other in (SCRAM, SSHA512, SHA512_CRYPT, "{PLAIN}", "{CRAM-MD5}abcd"):
        assert cram_md5_secret(other) is None
    with pytest.raises(UnknownScheme):
        cram_md5_secret("{NOPE}x")


def test_is_expensive() -> None:
    assert is_expensive(SHA512_CRYPT) and is_expensive(DOVECOT[3]) and is_expensive(DOVECOT[2])
    assert not is_expensive(SSHA512) and not is_expensive("{PLAIN}x")
    assert is_expensive(SCRAM) and not is_expensive(CRAM_MD5)


def test_register_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    """How SCRAM and CRAM-MD5 records will come in."""
    monkeypatch.setattr(schemes, "SCHEMES", dict(SCHEMES))
    reverse = Scheme(
        "REVERSED",
        verify=lambda raw, password: raw == password[::-1],
        make=lambda password, rounds: password[::-1],
        encoding=Encoding.HEX,
    )
    register(reverse, "BACKWARDS")
    stored = make_hash("backwards", PASSWORD)
    assert stored == "{BACKWARDS}" + PASSWORD[::-1].hex()
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, WRONG)
    assert "REVERSED" not in SCHEMES  # the module's table, not the test's copy
