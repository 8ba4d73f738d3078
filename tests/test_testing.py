"""The test kit itself (popframe.testing): start_server's deadline with
stand-in servers, reading fired Deferreds, waiting with the reactor, and
the back-pressure transport.  (The contract suites run in
test_store_contracts.py and test_checker_contracts.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThread
from zope.interface import implementer

import popframe.testing
from popframe.errors import NoSuchMessage
from popframe.testing import (
    POP3,
    BufferedTransport,
    HeldRunner,
    RecordingRunner,
    WaitTimeout,
    failure_of,
    result_of,
    run_twistd,
    start_server,
    stop_reactor,
    wait_for,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.core


@pytest.fixture(scope="session", autouse=True)
def _reactor_stopped_after_the_session() -> Iterator[None]:
    yield
    stop_reactor()  # wait_for's thread pool, so the run can exit


def test_everything_it_exported_before_is_still_there() -> None:
    for name in ("TWISTD", "InMemoryConnection", "MemoryChecker", "MemoryStore",
                 "ServerProcess", "connect_in_memory", "make_portal", "start_server",
                 "RecordingClient"):
        assert name in popframe.testing.__all__
        assert getattr(popframe.testing, name) is not None


# -- start_server, with stand-ins for twistd -----------------------------------------

def stand_in(script: str) -> list[str]:
    """A "twistd" that runs a shell script (twistd's arguments become $1...)."""
    return ["sh", "-c", script, "twistd"]


@pytest.mark.process
def test_start_server_gives_up_at_its_deadline_when_the_server_prints_nothing(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start within 0.5 s"):
        start_server([], tmp_path, startup_seconds=0.5,
                     twistd=stand_in("echo $$ > pid; exec sleep 600"))
    assert time.monotonic() - started < 15  # not the 600 s the stand-in would take
    pid = tmp_path / "pid"
    if pid.exists():  # it ran far enough to say who it was: it is gone now
        assert not Path(f"/proc/{pid.read_text().strip()}").exists()


@pytest.mark.process
def test_start_server_fails_at_once_with_the_log_when_the_server_exits(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)status 3.*no such option: --bogus"):
        start_server(["--bogus"], tmp_path, startup_seconds=120,
                     twistd=stand_in('echo "no such option: $5"; exit 3'))
    assert time.monotonic() - started < 60  # the exit ended the wait, not the deadline


@pytest.mark.process
def test_start_server_reads_the_ports_from_the_log(tmp_path: Path) -> None:
    script = (  # a line in two writes; a third listener in the same write as the second
        "echo starting up; printf 'POP3Factory starting on 4'; sleep 0.1; echo '242'; "
        "printf 'POP3Factory (TLS) starting on 4343\\nPOP3Factory starting on 5000\\n'; "
        "exec sleep 600"
    )
    server = start_server(["--listen", "tcp:0"], tmp_path, listeners=2, twistd=stand_in(script))
    try:
        assert server.ports == [4242, 4343]
        assert (server.port, server.tls_port) == (4242, 4343)
    finally:
        server.stop()
    assert server.process.returncode is not None
    log = server.log.read_text()
    assert log.startswith("starting up\n") and "starting on 5000" in log


# -- Deferreds that have fired --------------------------------------------------------

def test_result_of_a_fired_deferred() -> None:
    assert result_of(succeed(42)) == 42

    async def coroutine() -> str:
        return "done"

    assert result_of(coroutine()) == "done"


def test_result_of_a_failure_raises_it() -> None:
    with pytest.raises(NoSuchMessage):
        result_of(fail(NoSuchMessage()))


def test_result_of_an_unfired_deferred_is_a_test_failure_and_leaves_it_alone() -> None:
    d: Deferred[str] = Deferred()
    with pytest.raises(AssertionError, match="has not fired"):
        result_of(d)
    d.callback("later")
    assert result_of(d) == "later"


def test_failure_of_checks_the_type() -> None:
    failure = failure_of(fail(NoSuchMessage()), NoSuchMessage)
    assert isinstance(failure.value, NoSuchMessage)
    with pytest.raises(AssertionError, match="expected KeyError, got NoSuchMessage"):
        failure_of(fail(NoSuchMessage()), KeyError)
    with pytest.raises(AssertionError, match="got the result 1"):
        failure_of(succeed(1))


# -- waiting with the reactor ---------------------------------------------------------

def test_wait_for_runs_the_reactor_until_the_deferred_fires() -> None:
    from twisted.internet import reactor

    later: Deferred[str] = Deferred()
    reactor.callLater(0, later.callback, "fired")
    assert wait_for(later, timeout=10) == "fired"
    assert not reactor.running  # a synchronous test goes on synchronously
    assert wait_for(deferToThread(os.getpid), timeout=10) == os.getpid()


def test_wait_for_raises_what_the_deferred_failed_with() -> None:
    from twisted.internet import reactor

    later: Deferred[None] = Deferred()
    reactor.callLater(0, later.errback, NoSuchMessage())
    with pytest.raises(NoSuchMessage):
        wait_for(later, timeout=10)


def test_wait_for_gives_up_at_its_timeout_and_cancels() -> None:
    cancelled: list[Deferred[None]] = []
    never: Deferred[None] = Deferred(cancelled.append)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="did not fire within 0.2 s"):
        wait_for(never, timeout=0.2)
    assert time.monotonic() - started < 10
    assert cancelled == [never]


def test_a_deferred_that_fires_late_does_not_end_a_later_wait() -> None:
    from twisted.internet import reactor

    late: Deferred[str] = Deferred(lambda d: None)  # cancelling does not fire it
    with pytest.raises(WaitTimeout):
        wait_for(late, timeout=0.05)
    wanted: Deferred[str] = Deferred()
    reactor.callLater(0, late.callback, "too late")
    reactor.callLater(0.05, wanted.callback, "this one")
    assert wait_for(wanted, timeout=10) == "this one"


def test_wait_for_refuses_to_nest() -> None:
    from twisted.internet import reactor

    refused: list[BaseException] = []
    outer: Deferred[None] = Deferred()

    def inside() -> None:
        try:
            wait_for(Deferred(), timeout=1)
        except RuntimeError as e:
            refused.append(e)
        outer.callback(None)

    reactor.callLater(0, inside)
    wait_for(outer, timeout=10)
    assert len(refused) == 1 and "running reactor" in str(refused[0])


def test_wait_for_a_cancelled_deferred_raises_cancelled() -> None:
    d: Deferred[None] = Deferred()
    d.cancel()
    with pytest.raises(CancelledError):
        wait_for(d)


# -- polling ----------------------------------------------------------------------------

def test_wait_until_returns_the_first_true_answer_and_retries_what_it_is_told() -> None:
    answers = iter([OSError("refused"), None, 0, "ready"])

    def condition() -> str | int | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(condition, "the answer", interval=0, retry_on=(OSError,)) == "ready"


def test_wait_until_gives_up_at_its_deadline_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"waiting for the port .*ConnectionRefusedError"):
        wait_until(lambda: (_ for _ in ()).throw(ConnectionRefusedError()), "the port", 0.2,
                   retry_on=(OSError,))
    assert time.monotonic() - started < 5


def test_wait_until_lets_other_exceptions_through_at_once() -> None:
    with pytest.raises(KeyError):
        wait_until(lambda: {}["missing"], "a key", retry_on=(OSError,))


@pytest.mark.process
def test_wait_for_log_reads_until_the_lines_come_and_fails_when_the_process_exits(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    with open(log, "wb") as sink:
        writer = subprocess.Popen(["sh", "-c", "echo one; sleep 0.2; echo ready 1; echo ready 2; "
                                   "exec sleep 600"], stdout=sink)
    try:
        matches = wait_for_log(writer, log, r"ready (\d)", count=2, timeout=30)
        assert [m.group(1) for m in matches] == ["1", "2"]
    finally:
        writer.kill()
        writer.wait()
    with open(log, "wb") as sink:
        subprocess.run(["sh", "-c", "echo failing; exit 3"], stdout=sink)
        quitter = subprocess.Popen(["true"])
        quitter.wait()
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)exited .*'ready'.*failing"):
        wait_for_log(quitter, log, "ready", timeout=60)
    assert time.monotonic() - started < 30  # the exit ended the wait, not the deadline


# -- run_blocking stand-ins -------------------------------------------------------------

def test_recording_runner_runs_at_once_and_names_the_work() -> None:
    def load(n: int) -> int:
        return n + 1

    def broken() -> None:
        raise NoSuchMessage("gone")

    run = RecordingRunner()
    assert result_of(run(load, 1)) == 2
    failure_of(run(broken), NoSuchMessage)
    assert run.calls == ["load", "broken"]


def test_held_runner_holds_work_until_the_test_runs_it() -> None:
    def load() -> str:
        return "loaded"

    def delete() -> None:
        raise NoSuchMessage("gone")

    run = HeldRunner(hold=lambda function: function is delete)
    assert result_of(run(load)) == "loaded"  # not held
    first, second = run(delete), run(delete)
    assert not first.called and len(run.pending) == 2
    run.run_next()
    failure_of(first, NoSuchMessage)
    assert not second.called
    run.run_all()
    failure_of(second, NoSuchMessage)
    with pytest.raises(AssertionError, match="no call is held"):
        run.run_next()


# -- the back-pressure transport ------------------------------------------------------

@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


@pytest.mark.adapter
def test_buffered_transport_pauses_its_producer_when_full() -> None:
    transport = BufferedTransport(limit=10)
    producer = Producer()
    transport.registerProducer(producer, streaming=True)
    transport.write(b"0123456789")
    assert not producer.paused
    transport.write(b"x")
    assert producer.paused
    assert transport.drain() == b"0123456789x"
    assert not producer.paused and transport.value() == b""


@pytest.mark.adapter
def test_buffered_transport_without_a_limit_never_pushes_back() -> None:
    transport = BufferedTransport()
    producer = Producer()
    transport.registerProducer(producer, streaming=True)
    transport.write(b"x" * 1_000_000)
    assert not producer.paused
    assert transport.getPeer().host == "127.0.0.1"


@pytest.mark.adapter
def test_buffered_transport_records_tls_and_aborts() -> None:
    transport = BufferedTransport()
    options = object()
    transport.startTLS(options)
    transport.abortConnection()
    assert transport.tls_options is options
    assert transport.aborted and transport.disconnecting


@pytest.mark.process
def test_the_python_running_the_tests_runs_twistd() -> None:
    assert popframe.testing.TWISTD[0] == sys.executable


@pytest.mark.process
def test_run_twistd_returns_what_a_refusing_server_said(tmp_path: Path) -> None:
    refused = run_twistd(*POP3, "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path, timeout=60)
    assert refused.returncode != 0
    assert "twistd pop3: --store: required" in refused.stdout + refused.stderr
