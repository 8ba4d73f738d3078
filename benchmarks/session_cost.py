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
(the metrics recorder and the logout line, logged to a discarding
observer); ``--no-ops`` runs the factory as a library user makes it.
"""

from __future__ import annotations

import argparse
import gc
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogBeginner

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
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--retr", type=int, default=5)
    parser.add_argument("--ops", dest="ops", action="store_true", default=True)
    parser.add_argument("--no-ops", dest="ops", action="store_false")
    args = parser.parse_args()
    # Log events go nowhere (a text observer's cost is the logging
    # system's, the same for every line; counted once, below, apart).
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    factory = make_factory(args.ops)
    script = b"STAT\r\n" + b"".join(b"RETR %d\r\n" % (i + 1) for i in range(args.retr)) + b"QUIT\r\n"
    users = [f"u{i}" for i in range(64)]
    best = float("inf")
    gc.disable()
    for _ in range(args.rounds):
        started = time.process_time()
        for n in range(args.sessions):
            session(factory, users[n % 64], script)
        best = min(best, (time.process_time() - started) / args.sessions)
        gc.collect()
    print(f"ops={'on' if args.ops else 'off'} retr={args.retr}: {best * 1e6:.1f} us per session")


if __name__ == "__main__":
    main()
