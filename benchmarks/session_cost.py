#!/usr/bin/env python3
"""CPU per POP3 session in the server protocol alone, in memory: what the
observers (metrics, the logout line) and the limits add to a login and a
RETR, measured without sockets or a load generator's noise.

    python benchmarks/session_cost.py                  # this tree
    PYTHONPATH=/path/to/other/tree python benchmarks/session_cost.py --no-ops

Each session: connectionMade, USER/PASS (an in-memory checker, so no hash),
STAT, ``--retr`` RETRs of a 4 KiB message, QUIT, connectionLost, on a
``StringTransport`` from 127.0.0.1.  Rounds alternate, the best round's
microseconds per session are printed (the least disturbed by other work on
the machine).  ``--ops`` turns on what ``twistd pop3 --metrics ...`` runs
(the metrics recorder and the logout line); ``--no-ops`` runs the factory
as a library user makes it.  Log events are dropped unformatted, or with
``--text-log`` formatted as twistd writes them (into /dev/null).
"""

from __future__ import annotations

import argparse
import gc
import os
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogBeginner, textFileLogObserver

from popframe.server import POP3Factory, ServerConfig
from popframe.testing import MemoryChecker, MemoryStore, make_portal

MESSAGE = b"Subject: x\r\n\r\n" + (b"z" * 78 + b"\r\n") * 50  # 4 KiB


def make_factory(ops: bool) -> POP3Factory:
    users = {f"u{i}": "pw" for i in range(64)}
    store = MemoryStore({user: [MESSAGE] * 20 for user in users})
    clock = Clock()
    factory = POP3Factory(make_portal(store, MemoryChecker(users)),
                          ServerConfig(max_connections_per_ip=20), clock)
    if ops:
        from popframe.ops import MetricsRecorder, session_observer  # only in trees with it

        factory.set_observer(session_observer(MetricsRecorder()))
    return factory


def session(factory: POP3Factory, user: str, script: bytes) -> None:
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"USER " + user.encode() + b"\r\nPASS pw\r\n")
    protocol.dataReceived(script)
    protocol.connectionLost()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--retr", type=int, default=5)
    parser.add_argument("--ops", dest="ops", action="store_true", default=True)
    parser.add_argument("--no-ops", dest="ops", action="store_false")
    parser.add_argument("--events", action="store_true",
                        help="time each observer call alone (what one login, RETR, session "
                             "end adds) instead of whole sessions")
    parser.add_argument("--compare", action="store_true",
                        help="alternate rounds without and with --ops in this process")
    parser.add_argument("--text-log", action="store_true",
                        help="format every log event as twistd does, into /dev/null (else "
                             "events are dropped unformatted)")
    args = parser.parse_args()
    if args.text_log:
        sink = open(os.devnull, "w")  # noqa: SIM115
        observers = [textFileLogObserver(sink)]
    else:
        observers = [lambda event: None]
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
    try:  # what twistd pop3 does to its text log, in trees that do it
        from popframe.twisted_internals import faster_text_logs
    except ImportError:
        pass
    else:
        faster_text_logs()
    if args.events:
        time_events(args.rounds)
        return
    script = b"STAT\r\n" + b"".join(b"RETR %d\r\n" % (i + 1) for i in range(args.retr)) + b"QUIT\r\n"
    users = [f"u{i}" for i in range(64)]
    # --compare: both factories in this process, rounds alternating, so
    # the machine's other work disturbs both alike.
    modes = [False, True] if args.compare else [args.ops]
    factories = {ops: make_factory(ops) for ops in modes}
    best = dict.fromkeys(modes, float("inf"))
    gc.disable()
    for _ in range(args.rounds):
        for ops in modes:
            started = time.process_time()
            for n in range(args.sessions):
                session(factories[ops], users[n % 64], script)
            best[ops] = min(best[ops], (time.process_time() - started) / args.sessions)
            gc.collect()
    for ops in modes:
        print(f"ops={'on' if ops else 'off'} retr={args.retr} text-log={args.text_log}: "
              f"{best[ops] * 1e6:.1f} us per session")
    if args.compare:
        print(f"difference: {(best[True] - best[False]) * 1e6:+.1f} us per session "
              f"({(best[True] / best[False] - 1) * 100:+.1f}%)")


def time_events(rounds: int, calls: int = 20000) -> None:
    """Microseconds per observer call, as twistd pop3 --metrics runs them."""
    from popframe.interfaces.observers import SessionRecord
    from popframe.ops import MetricsRecorder, session_observer

    observer = session_observer(MetricsRecorder())
    record = SessionRecord("tcp:110", "127.0.0.1:40000", 0.0)
    record.user, record.mechanism, record.end, record.ended = "alice", "USER", "QUIT", 1.0
    events = {
        "session_opened": lambda: observer.session_opened(record),
        "login_finished": lambda: observer.login_finished(record, "USER", "ok", 0.001),
        "message_sent (RETR)": lambda: observer.message_sent(record, "RETR", 4000, 0.0002),
        "session_closed (+line)": lambda: observer.session_closed(record),
    }
    gc.disable()
    for name, call in events.items():
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(calls):
                call()
            best = min(best, (time.process_time() - started) / calls)
        print(f"{name:24} {best * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
