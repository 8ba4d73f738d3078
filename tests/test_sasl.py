"""AUTH (RFC 5034) in the sans-IO core: PLAIN, LOGIN, cancellation, limits."""

from __future__ import annotations

import pytest

from popframe.errors import AuthenticationFailed
from popframe.protocol import Authenticate, Limits, Session, SessionConfig, sasl
from popframe.testing.session import b64, replies

pytestmark = pytest.mark.core



def session(**config: object) -> Session:
    config.setdefault("mechanisms", ("PLAIN", "LOGIN"))
    return Session(SessionConfig(**config))  # type: ignore[arg-type]


def test_capa_lists_sasl_mechanisms_in_both_states() -> None:
    """RFC 2449 section 5: offered in AUTHORIZATION, announced in both."""
    s = session()
    [capa] = replies(s, b"CAPA\r\n")
    assert b"\r\nSASL PLAIN LOGIN\r\n" in capa
    replies(s, b"USER a\r\nPASS b\r\n")
    s.logged_in([])
    [capa] = replies(s, b"CAPA\r\n")
    assert b"\r\nSASL PLAIN LOGIN\r\n" in capa


def test_bare_auth_lists_mechanisms() -> None:
    assert replies(session(), b"AUTH\r\n") == [b"+OK SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n"]


def test_plain_with_initial_response() -> None:
    [event] = replies(session(), b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
    assert event == Authenticate(sasl.Password("alice", b"secret"), "PLAIN")


def test_plain_with_empty_challenge() -> None:
    s = session()
    assert replies(s, b"AUTH PLAIN\r\n") == [b"+ \r\n"]
    [event] = replies(s, b64(b"admin\0alice\0secret") + b"\r\n")
    assert event == Authenticate(sasl.Password("alice", b"secret", "admin"), "PLAIN")


def test_login_mechanism() -> None:
    s = session()
    assert replies(s, b"AUTH LOGIN\r\n") == [b"+ " + b64(b"Username:") + b"\r\n"]
    assert replies(s, b64(b"alice") + b"\r\n") == [b"+ " + b64(b"Password:") + b"\r\n"]
    [event] = replies(s, b64(b"pass word") + b"\r\n")
    assert event == Authenticate(sasl.Password("alice", b"pass word"), "LOGIN")


def test_login_with_initial_response() -> None:
    s = session()
    assert replies(s, b"AUTH LOGIN " + b64(b"alice") + b"\r\n") == [b"+ " + b64(b"Password:") + b"\r\n"]


def test_cancel_with_star() -> None:
    s = session()
    replies(s, b"AUTH PLAIN\r\n")
    assert replies(s, b"*\r\n") == [b"-ERR authentication cancelled\r\n"]
    assert replies(s, b"NOOP\r\n") == [b"-ERR command not valid in this state\r\n"]


@pytest.mark.parametrize(
    "response",
    [b"\0alice", b"alice\0secret", b"\0\0secret", b"\0alice\0", b"\0\xff\0pw", b"a\0b\0c\0d"],
)
def test_malformed_plain_fails_like_a_wrong_password(response: bytes) -> None:
    assert replies(session(), b"AUTH PLAIN " + b64(response) + b"\r\n") == [
        b"-ERR [AUTH] authentication failed\r\n"
    ]


def test_bad_base64_is_an_error() -> None:
    assert replies(session(), b"AUTH PLAIN ***\r\n") == [b"-ERR invalid base64\r\n"]
    s = session()
    replies(s, b"AUTH PLAIN\r\n")
    assert replies(s, b"not base64!\r\n") == [b"-ERR invalid base64\r\n"]
    assert replies(s, b"CAPA\r\n")[0].startswith(b"+OK")  # the exchange is over


def test_empty_initial_response_is_equals_sign() -> None:
    s = session()
    assert replies(s, b"AUTH PLAIN =\r\n") == [b"-ERR [AUTH] authentication failed\r\n"]


def test_unknown_mechanism() -> None:
    assert replies(session(), b"AUTH GSSAPI\r\n") == [b"-ERR unsupported SASL mechanism\r\n"]


def test_plaintext_mechanisms_hidden_until_tls() -> None:
    s = session(plaintext_auth_allowed=False, stls_available=True)
    [capa] = replies(s, b"CAPA\r\n")
    assert b"SASL" not in capa
    assert replies(s, b"AUTH PLAIN\r\n") == [
        b"-ERR plaintext authentication is disabled, use STLS first\r\n"
    ]


def test_long_sasl_response_is_allowed_but_bounded() -> None:
    s = session(limits=Limits(max_sasl_line=2048))
    replies(s, b"AUTH PLAIN\r\n")
    long = b64(b"\0alice\0" + b"p" * 1000)
    [event] = replies(s, long + b"\r\n")
    assert isinstance(event, Authenticate)
    s = session(limits=Limits(max_sasl_line=2048))
    replies(s, b"AUTH PLAIN\r\n")
    assert replies(s, b"A" * 4096 + b"\r\n") == [b"-ERR [AUTH] authentication failed\r\n"]


def test_failed_login_reply_is_the_same_whatever_the_reason() -> None:
    s = session()
    replies(s, b"AUTH PLAIN " + b64(b"\0alice\0pw") + b"\r\n")
    assert s.request_failed(AuthenticationFailed()).encode() == b"-ERR [AUTH] authentication failed\r\n"


def test_utf8_user_names_are_normalized() -> None:
    s = session()
    assert replies(s, b"UTF8\r\n") == [b"+OK UTF8 enabled\r\n"]
    replies(s, "USER Ju\u0308rgen\r\n".encode())
    [event] = replies(s, "PASS pa\u00a0ss\r\n".encode())
    assert event == Authenticate(sasl.Password("J\u00fcrgen", b"pa ss"), "USER")


def test_sasl_plain_is_always_normalized() -> None:
    [event] = replies(session(), b"AUTH PLAIN " + b64("\0Ju\u0308rgen\0pw".encode()) + b"\r\n")
    assert event.credentials.authcid == "J\u00fcrgen"


def test_apop_only_when_enabled() -> None:
    assert replies(session(), b"APOP alice " + b"0" * 32 + b"\r\n") == [
        b"-ERR APOP is not enabled\r\n"
    ]
