"""Fuzzing the sans-IO core with hypothesis (issue 5, "Fuzzing").

- ``parse_command`` with arbitrary lines: a Command or a ClientError.
- ``Session.receive_data`` / ``next_event`` with arbitrary bytes in
  arbitrary chunks, the adapter's side played with arbitrary outcomes:
  nothing escapes, every reply encodes to a well-formed POP3 response.
- Every SASL mechanism in ``sasl.MECHANISMS`` (and APOP) with arbitrary
  initial and later responses and secrets: only SASLFailed /
  AuthenticationFailed / ClientError escape, and steps are well typed.

Cases the fuzzer found (or that hand-picked edges pin down) stay as
``@example``s.  The budgets keep this file under about 30 s; set
``POPFRAME_FUZZ_EXAMPLES`` to fuzz longer.  ``EXAMPLES_RUN`` counts what
ran: a test whose strategies let no example through fails.
"""

from __future__ import annotations

import base64
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from popframe.errors import AuthenticationFailed, ClientError, TemporaryFailure
from popframe.interfaces import MessageInfo, PlaintextCramMD5, PlaintextSecret
from popframe.protocol import NEED_DATA, Limits, Session, SessionConfig, sasl
from popframe.protocol import commands as c
from popframe.protocol.replies import Reply
from popframe.protocol.sasl.scram import ScramRecord
from popframe.protocol.session import (
    Authenticate,
    Commit,
    LoginRefused,
    LookupSecret,
    Retrieve,
    SessionState,
    StartTLS,
)
from popframe.throttle import TooManyFailures

pytestmark = pytest.mark.core

EXAMPLES = int(os.environ.get("POPFRAME_FUZZ_EXAMPLES", "0")) or None
EXAMPLES_RUN: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _examples_ran() -> Iterator[None]:
    """Each test here must have run examples: a strategy or filter that
    rejects everything would otherwise pass without testing anything."""
    before = sum(EXAMPLES_RUN.values())
    yield
    assert sum(EXAMPLES_RUN.values()) > before, "hypothesis ran no example"


def budget(default: int) -> Any:
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


KEYWORDS = [k.encode() for k in (
    "USER", "PASS", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
    "CAPA", "STLS", "AUTH", "APOP", "UTF8", "user", "Auth", "XYZZY", "")]
MECHANISM_NAMES = [name.encode() for name in sasl.MECHANISMS] + [b"NOPE", b"plain", b""]


def word() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"1", b"0", b"2", b"99999999999", b"-1", b"+1", b"1.0", b"\xd9\xa3",
                         b"=", b"*", b"AGFsaWNlAHNlY3JldA==", b"\0", b"\xff", b"alice",
                         b"0123456789abcdef0123456789abcdef"]),
        st.sampled_from(MECHANISM_NAMES),
        st.binary(max_size=40).map(base64.b64encode),
        st.integers(0, 20).map(lambda n: str(n).encode()),
    )


def command_line() -> st.SearchStrategy[bytes]:
    structured = st.builds(
        lambda keyword, words, sep: sep.join([keyword, *words]),
        st.sampled_from(KEYWORDS), st.lists(word(), max_size=4),
        st.sampled_from([b" ", b"  ", b"\t", b" \x0b"]),
    )
    return st.one_of(structured, st.binary(max_size=300))


# -- the command parser ------------------------------------------------------------


@budget(1000)
@given(command_line())
@example(b"")
@example(b"\0")
@example(b"LIST \xd9\xa3")  # Arabic-Indic digit: str.isdigit() would say yes
@example(b"RETR \xef\xbc\x91")  # fullwidth 1
@example(b"RETR 99999999999999999999999999")
@example(b"TOP 1 \xb2")  # superscript two (Latin-1)
@example(b"AUTH PLAIN =")
@example(b"AUTH PLAIN AGFsaWNl\nAA==")
@example(b"AUTH \xc3\xa9")
@example(b"APOP alice 0123456789ABCDEF0123456789ABCDEF")
@example(b"APOP \xff 0123456789abcdef0123456789abcdef")
@example(b"USER \xed\xa0\x80")  # a lone surrogate, invalid UTF-8
@example(b"USER \t")
@example(b"PASS  ")
def test_parse_command_returns_a_command_or_a_client_error(line: bytes) -> None:
    EXAMPLES_RUN["parse_command"] += 1
    try:
        command = c.parse_command(line)
    except ClientError as error:
        assert error.message and "\n" not in error.message
        return
    assert isinstance(command, c.Command)
    keyword = line.partition(b" ")[0].upper()
    assert command.keyword == keyword
    for name in ("number", "lines"):
        value = getattr(command, name, None)
        assert value is None or (isinstance(value, int) and value >= 0)
    if isinstance(command, c.Auth) and command.mechanism is not None:
        assert command.mechanism.isascii() and command.mechanism == command.mechanism.upper()


# -- the session -----------------------------------------------------------------

STATUS = re.compile(rb"^(\+OK|-ERR)( \[[A-Z/-]+\])?( [^\r\n]*)?\r\n")
SCRAM_RECORD = ScramRecord.from_password(b"secret", b"0123456789abcdef", 4096)
MESSAGES = [MessageInfo("uid1", 100), MessageInfo("uid2", 5), MessageInfo("u3", 0)]


def check_reply(reply: Reply) -> bytes:
    data = reply.encode()
    if reply.continuation:
        assert re.fullmatch(rb"\+ [A-Za-z0-9+/=]*\r\n", data), data
        return data
    match = STATUS.match(data)
    assert match, data
    assert reply.ok == data.startswith(b"+OK")
    rest = data[match.end():]
    if reply.lines is None:
        assert rest == b"", data
    else:
        assert rest.endswith(b".\r\n"), data
        body = rest[:-3].split(b"\r\n")[:-1] if rest != b".\r\n" else []
        assert all(not line.startswith(b".") or line.startswith(b"..") for line in body), data
    return data


class Chooser:
    """The fuzzer's choices for the other side (config, backend outcomes,
    secrets), as a list of ints so that found cases fit in an @example;
    an exhausted list always answers 0."""

    def __init__(self, choices: list[int]) -> None:
        self.choices = list(choices)

    def pick(self, options: list[Any] | int) -> Any:
        value = self.choices.pop(0) if self.choices else 0
        if isinstance(options, int):
            return value % options
        return options[value % len(options)]


CHOICES = st.lists(st.integers(0, 255), max_size=40)


def session_config(choose: Chooser) -> SessionConfig:
    return SessionConfig(
        plaintext_auth_allowed=choose.pick([True, False]),
        stls_available=choose.pick([True, False]),
        tls_active=choose.pick([False, True]),
        mechanisms=tuple(sasl.MECHANISMS),
        user_pass=choose.pick([True, False]),
        apop_timestamp="<1.2@example.org>",
        login_delay=choose.pick([None, 0, 3600]),
        channel_binding=lambda kind: b"binding-data-" + kind.encode(),
        random=lambda n: b"\x01" * n,
        limits=Limits(max_line=choose.pick([255, 30]), max_bad_commands=choose.pick([10, 3]),
                      max_sasl_line=choose.pick([16 * 1024, 64])),
    )


def secret_for(kind: str, choose: Chooser) -> object | None:
    choice = choose.pick(4)
    if choice == 0:
        return None
    if choice == 3:  # another type than the kind's (a lookup rejects these; the core must too)
        return choose.pick([b"", b"\0", b"x", 0, "text"])
    declared = {"scram-sha-256": SCRAM_RECORD, "plaintext": PlaintextSecret(b"secret"),
                "cram-md5": PlaintextCramMD5(b"secret")}
    return declared[kind] if choice == 1 else choose.pick(list(declared.values()))


def run_session(choose: Chooser, chunks: list[bytes]) -> list[bytes]:
    """Feed ``chunks``; answer each request as a backend might."""
    session = Session(session_config(choose))
    out = [check_reply(session.greeting())]
    for chunk in chunks:
        session.receive_data(chunk)
        for _ in range(10_000):
            state_before = session.state
            event = session.next_event()
            if event is NEED_DATA:
                break
            while not isinstance(event, Reply) and event is not NEED_DATA:
                event = backend(session, event, choose, out)
            if isinstance(event, Reply):
                out.append(check_reply(event))
                if event.close:
                    assert session.state is SessionState.CLOSED
            assert _legal(state_before, session.state), (state_before, session.state)
        else:
            raise AssertionError("next_event never asked for data")
        assert session.buffered <= len(chunk) + 64 * 1024
    session.connection_lost()
    return out


_ORDER = [SessionState.AUTHORIZATION, SessionState.TRANSACTION, SessionState.UPDATE,
          SessionState.CLOSED]


def _legal(before: SessionState, after: SessionState) -> bool:
    return _ORDER.index(after) >= _ORDER.index(before)


def backend(session: Session, event: object, choose: Chooser, out: list[bytes]) -> object:
    """The adapter's part: an arbitrary outcome for ``event``."""
    fail = choose.pick([False, True])
    if isinstance(event, Authenticate):
        if fail:
            return session.request_failed(choose.pick(
                [AuthenticationFailed(), TemporaryFailure()]))
        return session.logged_in(MESSAGES)
    if isinstance(event, LookupSecret):
        return session.secret_found(secret_for(event.kind, choose))  # type: ignore[arg-type]
    if isinstance(event, LoginRefused):
        drop = choose.pick([False, True])
        return session.request_failed(TooManyFailures() if drop else AuthenticationFailed(), drop)
    if isinstance(event, Retrieve):
        if fail:
            return session.request_failed(TemporaryFailure())
        out.append(check_reply(session.message_follows()))
        session.request_done()
        return NEED_DATA
    if isinstance(event, Commit):
        assert session.state is SessionState.UPDATE
        return session.request_failed(TemporaryFailure()) if fail else session.committed()
    if isinstance(event, StartTLS):
        out.append(check_reply(event.reply))
        assert session.buffered == 0  # nothing pipelined survives STLS
        session.tls_started()
        return NEED_DATA
    raise AssertionError(f"unexpected event {event!r}")


def chunked(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(data, min_size=1, max_size=8)


def lines_stream() -> st.SearchStrategy[bytes]:
    return st.lists(
        st.tuples(command_line(), st.sampled_from([b"\r\n", b"\n", b"\r", b""])),
        max_size=15,
    ).map(lambda pairs: b"".join(a + b for a, b in pairs))


LOGIN = b"USER alice\r\nPASS secret\r\n"


@budget(300)
@given(CHOICES, chunked(st.one_of(lines_stream(), st.binary(max_size=400))))
@example([], [b"AUTH SCRAM-SHA-256\r\n", b"biwsbj1hbGljZSxyPWFiYw==\r\n", b"\r\n"])
@example([1], [b"AUTH SCRAM-SHA-256 biwsbj1hbGljZSxyPWFiYw==\r\n\r\n"])
@example([], [b"STLS\r\nUSER evil\r\n"])
@example([0, 1], [b"STLS\r\nUSER evil\r\n"])
@example([], [b"AUTH PLAIN\r\n*\r\n" + b"X" * 70_000 + b"\r\nCAPA\r\n"])
@example([], [b"A" * 300, b"UTH PLAIN\r\n"])  # the tail of an overlong line
@example([], [LOGIN + b"DELE 1\r\nDELE 1\r\nRETR 1\r\nTOP 2 0\r\nQUIT\r\n"])
@example([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [LOGIN + b"QUIT\r\n"])  # a failed commit
@example([], [b"AUTH OAUTHBEARER " + base64.b64encode(b"n,a=x,\x01auth=Bearer t\x01\x01")
              + b"\r\nQ\r\n"])
def test_session_survives_arbitrary_input(choices: list[int], chunks: list[bytes]) -> None:
    EXAMPLES_RUN["session"] += 1
    run_session(Chooser(choices), chunks)


# -- SASL mechanisms ------------------------------------------------------------

ALLOWED = (sasl.SASLFailed, AuthenticationFailed, ClientError)


def mechanism_context(choose: Chooser) -> sasl.SASLContext:
    tls = choose.pick([True, False])
    return sasl.SASLContext(
        tls_active=tls,
        channel_binding=lambda kind: (b"cb-" + kind.encode()) if tls else None,
        random=lambda n: b"\x02" * n,
        apop_timestamp=choose.pick(["<1.2@example.org>", None]),
        mechanisms=choose.pick([tuple(sasl.MECHANISMS), None, ("PLAIN",)]),
    )


def sasl_response() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        st.sampled_from([
            b"", b"\0", b"\0\0", b"\0alice\0secret", b"alice\0alice\0secret", b"n,,n=alice,r=abc",
            b"y,,n=alice,r=abc", b"p=tls-unique,,n=alice,r=abc", b"p=tls-exporter,,n=a,r=b",
            b"n,a=bob,n=alice,r=abc", b"c=biws,r=abc,p=AAAA", b"n,,\x01auth=Bearer x\x01\x01",
            b"user=alice\x01auth=Bearer x\x01\x01", b"alice 0123456789abcdef0123456789abcdef",
            b"\x01", b"n,,n==2C,r=x", b"n,,n=al=3Dice,r=x", b"n,,n=a=ZZ,r=x",
        ]),
        st.lists(st.sampled_from([b"n", b"y", b"p=", b",", b"a=", b"n=", b"r=", b"c=", b"p=",
                                  b"=2C", b"=3D", b"=", b"\x01", b"auth=Bearer ", b"user=",
                                  b"host=", b"alice", b"\xff", b"\0"]), max_size=12).map(b"".join),
    )


@pytest.mark.parametrize("name", sorted(sasl.MECHANISMS))
def test_mechanism_survives_arbitrary_messages(name: str) -> None:
    mechanism_class = sasl.MECHANISMS[name]

    @budget(150)
    @given(CHOICES, st.none() | sasl_response(), st.lists(sasl_response(), max_size=5))
    @example([], None, [])
    @example([], b"", [b""])
    @example([], b"=", [b"*"])
    @example([1], b"\0alice\0secret", [])
    def fuzz(choices: list[int], initial: bytes | None, responses: list[bytes]) -> None:
        EXAMPLES_RUN[f"sasl {name}"] += 1
        choose = Chooser(choices)
        mechanism = mechanism_class(mechanism_context(choose))
        try:
            step = mechanism.start(initial)
            for response in [*responses, b""]:
                step = check_step(step)
                if isinstance(step, sasl.Outcome):
                    error = AuthenticationFailed()
                    extra = mechanism.failure_challenge(error)
                    assert extra is None or isinstance(extra, bytes)
                    return
                if isinstance(step, sasl.NeedSecret):
                    step = mechanism.secret(secret_for(step.kind, choose))
                else:
                    step = mechanism.respond(response)
        except ALLOWED:
            return

    fuzz()


def check_step(step: object) -> object:
    assert isinstance(step, (sasl.Challenge, sasl.NeedSecret, sasl.Outcome)), step
    if isinstance(step, sasl.Challenge):
        assert isinstance(step.data, bytes)
    elif isinstance(step, sasl.NeedSecret):
        assert isinstance(step.user, str) and isinstance(step.kind, str)
    else:
        credentials = step.credentials
        assert isinstance(credentials, (sasl.Password, sasl.Verified, sasl.BearerToken,
                                        sasl.External)), credentials
        assert step.final is None or isinstance(step.final, bytes)
    return step
