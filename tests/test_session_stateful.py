"""Hypothesis drives the sans-IO session with any command sequence and
checks it against a small model of RFC 1939: replies are well-formed, the
state moves only as the RFC says, and deletions reach the store only as
the Commit of a QUIT in TRANSACTION, exactly the messages marked."""

from __future__ import annotations

import re

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from popframe.interfaces import MessageInfo
from popframe.protocol import (
    NEED_DATA,
    Authenticate,
    Commit,
    Limits,
    Reply,
    Retrieve,
    Session,
    SessionConfig,
    SessionState,
)

pytestmark = pytest.mark.core

STATUS = re.compile(rb"^(\+OK|-ERR)( [^\r\n]*)?\r\n")
numbers = st.integers(min_value=-2, max_value=8)
# "X..." is no command, so noise never changes the state by accident.
garbage = st.binary(max_size=40).filter(lambda b: b"\n" not in b).map(lambda b: b"X" + b)


class SessionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.session = Session(SessionConfig(limits=SessionConfig().limits))
        self.messages = [MessageInfo(f"u{i}", 10 * i + 1) for i in range(1, 6)]
        self.state = SessionState.AUTHORIZATION
        self.deleted: set[int] = set()
        self.user_given = False
        self.committed: tuple[str, ...] | None = None
        self.bad = 0

    # -- driving ---------------------------------------------------------------

    def send(self, line: bytes) -> list[object]:
        self.session.receive_data(line + b"\r\n")
        events: list[object] = []
        while self.session.state is not SessionState.CLOSED:
            event = self.session.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, Authenticate):
                reply = self.session.logged_in(self.messages)
                assert reply.ok
                events.append(reply)
            elif isinstance(event, Retrieve):
                assert self.session.message_follows().ok
                self.session.request_done()
            elif isinstance(event, Commit):
                self.committed = event.deleted
                events.append(self.session.committed())
            if isinstance(event, Reply) and event.close:
                break
        for event in events:
            if isinstance(event, Reply):
                self.check_reply(event)
                if not event.ok:
                    # Every -ERR here is the client's fault; the tenth ends it.
                    self.bad += 1
                    assert event.close == (self.bad >= Limits().max_bad_commands)
                    if event.close:
                        self.state = SessionState.CLOSED
        return events

    def check_reply(self, reply: Reply) -> None:
        data = reply.encode()
        assert STATUS.match(data), data
        if reply.lines is not None:
            assert data.endswith(b"\r\n.\r\n")
        else:
            assert data.count(b"\r\n") == 1

    def only(self, events: list[object]) -> Reply:
        replies = [e for e in events if isinstance(e, Reply)]
        assert len(replies) >= 1
        return replies[-1]

    def live(self, number: int) -> bool:
        return 1 <= number <= len(self.messages) and number - 1 not in self.deleted

    # -- rules -----------------------------------------------------------------

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule()
    def user(self) -> None:
        before = self.state
        reply = self.only(self.send(b"USER alice"))
        if before is SessionState.AUTHORIZATION:
            assert reply.ok
            self.user_given = True
        else:
            assert not reply.ok

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule()
    def password(self) -> None:
        before = self.state
        events = self.send(b"PASS secret")
        if before is SessionState.AUTHORIZATION and self.user_given:
            assert isinstance(events[0], Authenticate)
            self.state = SessionState.TRANSACTION
        else:
            assert not self.only(events).ok

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule(number=numbers)
    def dele(self, number: int) -> None:
        expect_ok = self.state is SessionState.TRANSACTION and self.live(number)
        reply = self.only(self.send(b"DELE %d" % number))
        assert reply.ok == expect_ok
        if expect_ok:
            self.deleted.add(number - 1)

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule(number=numbers, command=st.sampled_from([b"RETR", b"LIST", b"UIDL"]))
    def look(self, number: int, command: bytes) -> None:
        ok = self.state is SessionState.TRANSACTION and self.live(number)
        events = self.send(command + b" %d" % number)
        if command == b"RETR":
            assert isinstance(events[0], Retrieve) == ok
        else:
            assert self.only(events).ok == ok

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule()
    def stat(self) -> None:
        before = self.state
        reply = self.only(self.send(b"STAT"))
        if before is SessionState.TRANSACTION:
            live = [m for i, m in enumerate(self.messages) if i not in self.deleted]
            assert reply.text == f"{len(live)} {sum(m.size for m in live)}"
        else:
            assert not reply.ok

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule()
    def rset(self) -> None:
        before = self.state
        reply = self.only(self.send(b"RSET"))
        assert reply.ok == (before is SessionState.TRANSACTION)
        if reply.ok:
            self.deleted.clear()

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule(line=garbage)
    def noise(self, line: bytes) -> None:
        before = self.session.state
        self.send(line)
        if self.state is not SessionState.CLOSED:
            assert self.session.state is before

    @precondition(lambda self: self.state is not SessionState.CLOSED)
    @rule()
    def quit(self) -> None:
        before = self.state
        reply = self.only(self.send(b"QUIT"))
        assert reply.ok and reply.close
        if before is SessionState.TRANSACTION:
            assert self.committed == tuple(self.messages[i].uid for i in sorted(self.deleted))
        else:
            assert self.committed is None
        self.state = SessionState.CLOSED

    @precondition(lambda self: self.state is SessionState.CLOSED)
    @rule(line=garbage)
    def closed_session_ignores_input(self, line: bytes) -> None:
        assert self.send(line) == []

    @invariant()
    def states_agree(self) -> None:
        if self.state is not SessionState.CLOSED:
            assert self.session.state is self.state
        if self.state is not SessionState.CLOSED or self.committed is None:
            # Nothing reaches the store before QUIT.
            assert self.committed is None or self.state is SessionState.CLOSED


SessionModel.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestSessionModel = SessionModel.TestCase
