"""The log relay between a worker and its parent (popframe.workers.logs):
what a worker's observer writes, read back by the parent's relay."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent, globalLogPublisher

from popframe.workers.contract import LOG_FD
from popframe.workers.logs import LEAN, TEXT, LogRelay, RelayObserver

pytestmark = pytest.mark.adapter


class Peer:
    """A field that is no plain value: JSON cannot carry it."""

    def __repr__(self) -> str:
        return "<Peer 127.0.0.1:40722>"


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def worker_lines(emit: Any, *, text_only: bool = False) -> bytes:
    """What a worker's RelayObserver writes for what ``emit(log)`` logs."""
    stream = io.StringIO()
    publisher = LogPublisher(RelayObserver(stream, text_only=text_only))
    emit(Logger(namespace="popframe.session", observer=publisher))
    return stream.getvalue().encode()


def relay(data: bytes, worker: int = 3, text_logs: Any = None) -> list[dict[str, Any]]:
    """Feed ``data`` to a parent's relay a few octets at a time."""
    seen: list[dict[str, Any]] = []
    relay = LogRelay(worker, on_event=seen.append, text_logs=text_logs)
    for start in range(0, len(data), 7):
        relay.data_received(LOG_FD, data[start:start + 7])
    relay.connection_lost(LOG_FD)
    return seen


def test_an_event_arrives_as_its_text_with_its_plain_fields(
        published: list[dict[str, Any]]) -> None:
    data = worker_lines(lambda log: log.warn(
        "session ended user={user!r} peer={peer!r} retr={retr}", user="u1", peer=Peer(),
        retr=20, popframe_ready=True))
    assert data.startswith(LEAN.encode()) and data.count(b"\n") == 1
    [event] = relay(data)
    assert published == [event]
    assert formatEvent(event) == "session ended user='u1' peer=<Peer 127.0.0.1:40722> retr=20"
    assert event["log_level"] is LogLevel.warn
    assert event["log_system"] == "worker-3 popframe.session#warn"
    assert (event["user"], event["retr"], event["popframe_ready"]) == ("u1", 20, True)
    assert "peer" not in event  # not a plain value: only in the text
    assert event["popframe_worker"] == 3


def test_a_failure_keeps_its_traceback(published: list[dict[str, Any]]) -> None:
    def emit(log: Logger) -> None:
        try:
            raise ValueError("the store broke")
        except ValueError:
            log.failure("reading a message failed", popframe_reload=False)

    [event] = relay(worker_lines(emit))
    assert "ValueError: the store broke" in event["log_failure"].getTraceback()
    assert "raise ValueError" in event["log_failure"].getTraceback()
    assert event["popframe_reload"] is False
    assert formatEvent(event) == "reading a message failed"


def test_a_line_that_is_no_event_is_logged_as_text(published: list[dict[str, Any]]) -> None:
    relay(b"\x1fnot json\nTraceback (most recent call last):\n", worker=2)
    assert [formatEvent(event) for event in published] == [
        "\x1fnot json", "Traceback (most recent call last):"]
    assert all(event["log_system"] == "worker-2" for event in published)


def test_json_that_is_no_event_is_logged_as_text(published: list[dict[str, Any]]) -> None:
    relay(b'\x1f5\n\x1f{"user": "u1"}\n')
    assert [formatEvent(event) for event in published] == ["\x1f5", '\x1f{"user": "u1"}']


def test_a_legacy_event_arrives_as_its_text(published: list[dict[str, Any]]) -> None:
    """A ``twisted.python.log`` event's own keys (``format``, ``message``)
    stay in the worker: the parent's observers would format them again."""
    stream = io.StringIO()
    RelayObserver(stream)({
        "format": "%(line)s went %(how)s", "line": "x", "how": "wrong", "message": (),
        "isError": 0, "system": "-", "time": 1.0, "log_namespace": "log_legacy",
        "log_level": LogLevel.info, "log_time": 1.0, "log_format": "{log_text}",
        "log_text": "x went wrong", "log_system": "-"})
    [event] = relay(stream.getvalue().encode())
    assert formatEvent(event) == "x went wrong"
    assert {"format", "message", "isError", "time"}.isdisjoint(event)
    assert (event["line"], event["log_system"]) == ("x", "worker-3")


# -- text_only: the parent's log is text alone ------------------------------------------


def text_log_lines(events: list[dict[str, Any]]) -> list[str]:
    """What twistd's text log (made faster, as the parent's is) writes."""
    from twisted.logger import textFileLogObserver

    from popframe.twisted_internals import faster_text_logs

    out = io.StringIO()
    publisher = LogPublisher(textFileLogObserver(out))
    faster_text_logs(publisher)
    for event in events:
        publisher(dict(event))
    return out.getvalue().splitlines()


def test_text_only_sends_the_text_and_writes_the_same_line() -> None:
    def emit(log: Logger) -> None:
        log.info("logout user={user!r} retr={retr}\tend=quit", user="u1", retr=20)
        log.warn("peer {peer!r}", peer=Peer(), log_system="custom system")

    text = worker_lines(emit, text_only=True)
    assert text.count(TEXT.encode()) == 2 and LEAN.encode() not in text
    as_text, whole = relay(text), relay(worker_lines(emit))
    assert text_log_lines(as_text) == text_log_lines(whole)
    assert text_log_lines(as_text)[0].endswith(
        " [worker-3 popframe.session#info] logout user='u1' retr=20\tend=quit")
    assert text_log_lines(as_text)[1].endswith(" [worker-3 custom system] peer <Peer 127.0.0.1:40722>")
    assert "user" not in as_text[0]  # fields are not sent: only the text is written
    assert as_text[0]["log_level"] is LogLevel.info and as_text[0]["popframe_worker"] == 3


def test_text_only_still_sends_whole_what_the_parent_needs() -> None:
    def emit(log: Logger) -> None:
        log.info("ready", popframe_ready=True)
        log.info("two\nlines")
        try:
            raise ValueError("the store broke")
        except ValueError:
            log.failure("reading failed")

    data = worker_lines(emit, text_only=True)
    assert TEXT.encode() not in data and data.count(LEAN.encode()) == 3
    ready, two, failed = relay(data)
    assert ready["popframe_ready"] is True
    assert text_log_lines([two])[0].endswith("two") and text_log_lines([two])[1] == "\tlines"
    assert "ValueError: the store broke" in failed["log_failure"].getTraceback()


def test_a_broken_text_line_is_logged_as_it_came(published: list[dict[str, Any]]) -> None:
    relay(b"\x1ex\tinfo\n\x1e1.5\n")
    assert [formatEvent(event) for event in published] == ["\x1ex\tinfo", "\x1e1.5"]


def test_the_parent_writes_text_lines_to_the_text_log_in_order() -> None:
    """With ``text_logs`` (the parent's log is text alone), a text line is
    written to the log's file directly, exactly as the event would have
    been, in order with the events that still go whole."""
    from twisted.logger import textFileLogObserver

    from popframe.twisted_internals import faster_text_logs, text_log_files

    def emit(log: Logger) -> None:
        log.info("first user={user!r}", user="u1")
        log.info("ready", popframe_ready=True)  # goes whole: published
        log.warn("second\twith a tab")
        log.info("{empty}", empty="")  # no text: no line

    out = io.StringIO()
    observer = textFileLogObserver(out)
    text_logs = text_log_files(LogPublisher(observer))
    assert text_logs is None  # not made faster yet
    faster_text_logs(LogPublisher(observer))
    text_logs = text_log_files(LogPublisher(observer))
    assert text_logs is not None and text_logs[0][0] is out
    globalLogPublisher.addObserver(observer)
    try:
        relay(worker_lines(emit))  # every event published
        written = relay(worker_lines(emit, text_only=True), text_logs=text_logs)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [event.get("popframe_ready") for event in written] == [True]  # only the whole one
    lines = [line.partition(" ")[2] for line in out.getvalue().splitlines()]  # no time
    assert len(lines) == 6 and lines[3:] == lines[:3]
    assert lines[3:] == [
        "[worker-3 popframe.session#info] first user='u1'",
        "[worker-3 popframe.session#info] ready",
        "[worker-3 popframe.session#warn] second\twith a tab"]


class Reader:
    """A worker's log pipe as the parent's reactor reads it."""

    def __init__(self) -> None:
        self.reading, self.connected, self.disconnecting = True, True, False

    def stopReading(self) -> None:  # noqa: N802 (Twisted's name)
        self.reading = False

    def startReading(self) -> None:  # noqa: N802
        self.reading = True


def test_the_parent_leaves_a_log_pipe_unread_for_a_pause_after_reading_it(
        published: list[dict[str, Any]]) -> None:
    """Lines logged meanwhile wait in the pipe, to be read together."""
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from popframe.workers.pool import LOG_PAUSE, _WorkerProtocol

    clock = Clock()
    worker = _WorkerProtocol(SimpleNamespace(reactor=clock, metrics_fd=None, metrics=None),
                             SimpleNamespace(id=2))  # type: ignore[arg-type]
    pipe, output = Reader(), Reader()
    worker.transport = SimpleNamespace(pipes={LOG_FD: pipe, 1: output})  # type: ignore[assignment]
    worker.childDataReceived(LOG_FD, worker_lines(lambda log: log.info("one")))
    assert [formatEvent(event) for event in published] == ["one"]  # relayed at once
    assert not pipe.reading and len(clock.getDelayedCalls()) == 1
    worker.childDataReceived(1, b"printed\n")  # standard output: read as it comes
    assert output.reading and len(clock.getDelayedCalls()) == 1
    clock.advance(LOG_PAUSE)
    assert pipe.reading
    worker.childDataReceived(LOG_FD, worker_lines(lambda log: log.info("two")))
    pipe.connected = False  # closed meanwhile: not read again
    clock.advance(LOG_PAUSE)
    assert not pipe.reading
    assert [formatEvent(event) for event in published] == ["one", "printed", "two"]
