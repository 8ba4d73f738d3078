"""The sans-IO session: bytes in, events and reply bytes out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popframe.errors import AuthenticationFailed, MaildropInUse, TemporaryFailure
from popframe.protocol import (
    Authenticate,
    Commit,
    Limits,
    MessageEncoder,
    MessageInfo,
    Reply,
    Retrieve,
    Session,
    SessionConfig,
    SessionMisuse,
    SessionState,
    StartTLS,
    sasl,
)
from popframe.protocol.encoding import VerbatimEncoder
from popframe.testing.session import replies

pytestmark = pytest.mark.core

MESSAGES = [MessageInfo("uid-a", 120), MessageInfo("uid-b", 200), MessageInfo("uid-c", 5)]


def logged_in(messages: list[MessageInfo] = MESSAGES, **config: object) -> Session:
    session = Session(SessionConfig(**config))  # type: ignore[arg-type]
    [ok, auth] = replies(session, b"USER alice\r\nPASS secret\r\n")
    assert ok == b"+OK send your password\r\n"
    assert auth == Authenticate(sasl.Password("alice", b"secret"), "USER")
    session.logged_in(messages)
    return session


def test_greeting() -> None:
    assert Session().greeting().encode() == b"+OK popframe ready\r\n"


def test_login_reply_counts_messages() -> None:
    session = Session()
    replies(session, b"USER alice\r\nPASS secret\r\n")
    assert session.logged_in(MESSAGES).encode() == b"+OK maildrop has 3 messages (325 octets)\r\n"
    assert session.state is SessionState.TRANSACTION


def test_pass_without_user() -> None:
    assert replies(Session(), b"PASS x\r\n") == [b"-ERR send USER first\r\n"]


def test_failed_login_stays_in_authorization_with_auth_code() -> None:
    session = Session()
    replies(session, b"USER alice\r\nPASS wrong\r\n")
    reply = session.request_failed(AuthenticationFailed())
    assert reply.encode() == b"-ERR [AUTH] authentication failed\r\n"
    assert session.state is SessionState.AUTHORIZATION
    assert replies(session, b"PASS again\r\n") == [b"-ERR send USER first\r\n"]


def test_in_use_code() -> None:
    session = Session()
    replies(session, b"USER alice\r\nPASS pw\r\n")
    reply = session.request_failed(MaildropInUse())
    assert reply.encode().startswith(b"-ERR [IN-USE] ")


def test_transaction_commands_refused_before_login() -> None:
    for line in [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 1", b"RSET", b"NOOP"]:
        assert replies(Session(), line + b"\r\n") == [
            b"-ERR command not valid in this state\r\n"
        ]


def test_stat_list_uidl() -> None:
    session = logged_in()
    assert replies(session, b"STAT\r\n") == [b"+OK 3 325\r\n"]
    assert replies(session, b"LIST\r\n") == [
        b"+OK 3 messages (325 octets)\r\n1 120\r\n2 200\r\n3 5\r\n.\r\n"
    ]
    assert replies(session, b"LIST 2\r\n") == [b"+OK 2 200\r\n"]
    assert replies(session, b"UIDL\r\n") == [
        b"+OK unique-id listing follows\r\n1 uid-a\r\n2 uid-b\r\n3 uid-c\r\n.\r\n"
    ]
    assert replies(session, b"UIDL 3\r\n") == [b"+OK 3 uid-c\r\n"]


@pytest.mark.parametrize("line", [b"LIST 0", b"LIST 4", b"RETR 9", b"UIDL 0", b"DELE 4", b"TOP 5 0"])
def test_out_of_range(line: bytes) -> None:
    assert replies(logged_in(), line + b"\r\n") == [b"-ERR no such message\r\n"]


def test_deleted_messages_are_hidden_and_refused() -> None:
    session = logged_in()
    assert replies(session, b"DELE 2\r\n") == [b"+OK message 2 deleted\r\n"]
    assert replies(session, b"STAT\r\n") == [b"+OK 2 125\r\n"]
    assert replies(session, b"LIST\r\n") == [
        b"+OK 2 messages (125 octets)\r\n1 120\r\n3 5\r\n.\r\n"
    ]
    assert replies(session, b"UIDL\r\n") == [
        b"+OK unique-id listing follows\r\n1 uid-a\r\n3 uid-c\r\n.\r\n"
    ]
    for line in [b"DELE 2", b"RETR 2", b"LIST 2", b"UIDL 2", b"TOP 2 0"]:
        assert replies(session, line + b"\r\n") == [b"-ERR message already deleted\r\n"]
    assert replies(session, b"RSET\r\n") == [b"+OK maildrop has 3 messages (325 octets)\r\n"]
    assert replies(session, b"STAT\r\n") == [b"+OK 3 325\r\n"]


def test_quit_in_transaction_commits_only_marked() -> None:
    session = logged_in()
    replies(session, b"DELE 1\r\nDELE 3\r\n")
    [commit] = replies(session, b"QUIT\r\n")
    assert commit == Commit(("uid-a", "uid-c"))
    assert session.state is SessionState.UPDATE
    reply = session.committed()
    assert reply.close
    assert reply.encode() == b"+OK popframe signing off (1 messages left)\r\n"


def test_failed_commit_closes_with_sys_temp() -> None:
    session = logged_in()
    replies(session, b"DELE 1\r\nQUIT\r\n")
    reply = session.request_failed(TemporaryFailure())
    assert reply.close
    assert reply.encode().startswith(b"-ERR [SYS/TEMP] ")
    assert session.state is SessionState.CLOSED


def test_quit_before_login_closes_without_commit() -> None:
    [reply] = replies(Session(), b"QUIT\r\n")
    assert reply == b"+OK popframe signing off\r\n"


def test_retr_and_top_requests() -> None:
    session = logged_in()
    [retr] = replies(session, b"RETR 2\r\n")
    assert retr == Retrieve(2, MESSAGES[1])
    assert session.message_follows().encode() == b"+OK 200 octets\r\n"
    session.request_done()
    [top] = replies(session, b"TOP 1 3\r\n")
    assert top == Retrieve(1, MESSAGES[0], 3)
    assert session.message_follows().encode() == b"+OK top of message follows\r\n"
    session.request_done()


def test_next_event_refuses_while_request_outstanding() -> None:
    session = logged_in()
    replies(session, b"RETR 1\r\nSTAT\r\n")
    with pytest.raises(SessionMisuse):
        session.next_event()
    session.request_done()
    assert replies(session, b"") == [b"+OK 3 325\r\n"]


def test_pipelined_commands_answer_in_order() -> None:
    session = logged_in()
    out = replies(session, b"STAT\r\nLIST 1\r\nNOOP\r\nUIDL 1\r\n")
    assert out == [b"+OK 3 325\r\n", b"+OK 1 120\r\n", b"+OK\r\n", b"+OK 1 uid-a\r\n"]


def test_bare_lf_and_split_lines() -> None:
    session = Session()
    assert replies(session, b"CA") == []
    assert replies(session, b"PA\n")[0].startswith(b"+OK capability list follows\r\n")


def test_capa_in_both_states() -> None:
    session = Session(SessionConfig(stls_available=True))
    [capa] = replies(session, b"CAPA\r\n")
    assert capa == (
        b"+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nPIPELINING\r\n"
        b"RESP-CODES\r\nAUTH-RESP-CODE\r\nEXPIRE NEVER\r\nUTF8 USER\r\nLANG\r\nSTLS\r\n"
        b"IMPLEMENTATION popframe\r\n.\r\n"
    )
    session = logged_in(stls_available=True)
    [capa] = replies(session, b"CAPA\r\n")
    # RFC 2449 section 5: everything AUTHORIZATION offered but STLS
    # (RFC 2595 section 4: only before login).
    assert capa == (
        b"+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nPIPELINING\r\n"
        b"RESP-CODES\r\nAUTH-RESP-CODE\r\nEXPIRE NEVER\r\nUTF8 USER\r\nLANG\r\n"
        b"IMPLEMENTATION popframe\r\n.\r\n"
    )


def test_capa_after_login_keeps_sasl_user_and_utf8() -> None:
    """The capabilities a client saw before login are there after it, byte
    for byte, apart from STLS and LOGIN-DELAY's per-user tag."""
    config = {
        "stls_available": True,
        "tls_active": False,
        "plaintext_auth_allowed": True,
        "mechanisms": ("PLAIN", "SCRAM-SHA-256"),
        "login_delay": 0,
        "login_delay_per_user": True,
    }
    before = Session(SessionConfig(**config))  # type: ignore[arg-type]
    [capa_before] = replies(before, b"CAPA\r\n")
    session = logged_in(**config)
    [capa_after] = replies(session, b"CAPA\r\n")
    assert b"SASL PLAIN SCRAM-SHA-256\r\n" in capa_after
    assert b"\r\nUSER\r\n" in capa_after and b"\r\nUTF8 USER\r\n" in capa_after
    assert capa_before.replace(b"STLS\r\n", b"").replace(
        b"LOGIN-DELAY 0 USER", b"LOGIN-DELAY 0"
    ) == capa_after


def test_capa_after_login_over_tls_without_plaintext() -> None:
    """Plaintext refused on the link: USER is absent before and after
    login alike; on TLS it is present in both."""
    session = logged_in(tls_active=True, plaintext_auth_allowed=False, mechanisms=("PLAIN",))
    [capa] = replies(session, b"CAPA\r\n")
    assert b"\r\nUSER\r\n" in capa and b"\r\nSASL PLAIN\r\n" in capa
    plain = Session(SessionConfig(plaintext_auth_allowed=False, mechanisms=("PLAIN",)))
    [capa] = replies(plain, b"CAPA\r\n")
    assert b"\r\nUSER\r\n" not in capa and b"SASL" not in capa


def test_plaintext_auth_refused_until_tls() -> None:
    session = Session(SessionConfig(stls_available=True, plaintext_auth_allowed=False))
    [capa] = replies(session, b"CAPA\r\n")
    assert b"\r\nUSER\r\n" not in capa
    assert replies(session, b"USER alice\r\n") == [
        b"-ERR plaintext authentication is disabled, use STLS first\r\n"
    ]
    [stls] = replies(session, b"STLS\r\n")
    assert isinstance(stls, StartTLS)
    session.tls_started()
    [capa] = replies(session, b"CAPA\r\n")
    assert b"\r\nUSER\r\n" in capa and b"STLS" not in capa
    assert replies(session, b"USER alice\r\n") == [b"+OK send your password\r\n"]


def test_stls_discards_pipelined_plaintext() -> None:
    session = Session(SessionConfig(stls_available=True))
    [stls] = replies(session, b"STLS\r\nUSER evil\r\nPASS injected\r\n")
    assert isinstance(stls, StartTLS)
    assert stls.reply.encode() == b"+OK begin TLS negotiation\r\n"
    session.tls_started()
    assert session.buffered == 0
    assert replies(session, b"") == []


def test_stls_refused_when_unavailable_active_or_after_login() -> None:
    assert replies(Session(), b"STLS\r\n") == [b"-ERR STLS not available\r\n"]
    session = Session(SessionConfig(stls_available=True, tls_active=True))
    assert replies(session, b"STLS\r\n") == [b"-ERR TLS is already active\r\n"]
    session = logged_in(stls_available=True)
    assert replies(session, b"STLS\r\n") == [
        b"-ERR STLS is only allowed before authentication\r\n"
    ]


def test_overlong_line_gets_err_and_session_continues() -> None:
    session = Session()
    assert replies(session, b"USER " + b"a" * 300 + b"\r\nCAPA\r\n")[0] == (
        b"-ERR command line too long\r\n"
    )
    # The same when the long line arrives in pieces without a line end yet.
    session = Session()
    assert replies(session, b"X" * 1000) == []
    assert session.buffered == 0
    assert replies(session, b"Y" * 1000) == []
    assert replies(session, b"\r\nQUIT\r\n") == [
        b"-ERR command line too long\r\n",
        b"+OK popframe signing off\r\n",
    ]


def test_line_of_exactly_255_octets_is_accepted() -> None:
    session = Session()
    line = b"USER " + b"a" * 248 + b"\r\n"
    assert len(line) == 255
    assert replies(session, line) == [b"+OK send your password\r\n"]


def test_too_many_bad_commands_disconnects() -> None:
    session = Session(SessionConfig(limits=Limits(max_bad_commands=3)))
    out = replies(session, b"FOO\r\nBAR\r\nBAZ\r\nCAPA\r\n")
    assert out[:2] == [b"-ERR unknown command\r\n"] * 2
    assert out[2] == b"-ERR unknown command; too many bad commands\r\n"
    assert len(out) == 3
    assert session.state is SessionState.CLOSED


def test_garbage_bytes_get_err_not_crash() -> None:
    session = Session()
    out = replies(session, b"\xff\xfe\x00\x01\r\nRETR \x00\r\n\x80\r\n")
    assert all(reply.startswith(b"-ERR ") for reply in out)


def test_update_state_only_after_quit() -> None:
    session = logged_in()
    replies(session, b"DELE 1\r\n")
    session.connection_lost()
    assert session.state is SessionState.CLOSED


def test_retr_of_a_wire_ready_message_sends_it_verbatim_but_top_encodes() -> None:
    ready = MessageInfo("r", 10, wire_ready=True)
    assert type(Retrieve(1, ready).encoder()) is VerbatimEncoder
    assert type(Retrieve(1, ready, 0).encoder()) is MessageEncoder
    assert type(Retrieve(1, MessageInfo("n", 10)).encoder()) is MessageEncoder


@given(st.lists(st.binary().filter(lambda b: b"\r" not in b and b"\n" not in b), max_size=8))
def test_multiline_replies_stuff_exactly_the_lines_starting_with_a_dot(lines: list[bytes]) -> None:
    expected = b"+OK x\r\n" + b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
    ) + b".\r\n"
    assert Reply(True, "x", lines=lines).encode() == expected
