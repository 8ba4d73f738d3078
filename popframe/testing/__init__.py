"""The test kit for popframe backends and tests (in the spirit of
``treq.testing``): contract suites to run against your store or checker,
an in-memory store and checker, the real server protocol against a client
in memory, a real ``twistd pop3`` on loopback, and helpers for Deferreds.

Running the store contract against your own store (a pytest file)::

    from popframe.testing.contracts import StoreContract

    from my_store import MyStore


    class TestMyStore(StoreContract):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "mail")

        def add_message(self, store, user, octets):  # not needed for an IDeliverableStore
            return store.add(user, octets)  # a Deferred, or None when done

The modules, one job each:

- :mod:`.contracts`: ``StoreContract`` and ``CheckerContract`` (import them
  from there: they need pytest, the rest of the kit does not);
- :mod:`.memory`: ``MemoryStore`` and ``MemoryChecker``;
- :mod:`.session`: ``replies``, feeding bytes to the sans-IO core and
  collecting its encoded replies and requests (``encoded``, ``answered``,
  ``b64`` beside it);
- :mod:`.connection`: ``connect_in_memory``, the server protocol against a
  ``RecordingClient`` through ``twisted.test.iosim``;
- :mod:`.process`: ``start_server``, a real ``twistd pop3`` process;
  ``wait_for_log``, waiting for lines in a process's log; ``run_twistd``,
  twistd run to its end (what it says when it refuses to start);
- :mod:`.polling`: ``wait_until``, asking again until a deadline (for what
  is not a Deferred: a port, a lock another process holds);
- :mod:`.transports`: ``BufferedTransport``, a ``StringTransport`` that
  pushes back like a socket, and ``connect_transport``, a factory's
  protocol connected to one;
- :mod:`.deferreds`: ``result_of`` / ``failure_of``, reading a fired Deferred;
- :mod:`.reactor`: ``wait_for``, running the reactor until one fires;
- :mod:`.runners`: ``RecordingRunner`` and ``HeldRunner``, stand-ins for a
  backend's ``run_blocking`` that record its work or hold it.
"""

from popframe.testing.connection import (
    InMemoryConnection,
    RecordingClient,
    connect_in_memory,
    make_portal,
)
from popframe.testing.deferreds import failure_of, result_of
from popframe.testing.memory import MemoryChecker, MemoryStore
from popframe.testing.polling import wait_until
from popframe.testing.process import (
    POP3,
    TWISTD,
    ServerProcess,
    run_twistd,
    start_server,
    wait_for_log,
)
from popframe.testing.reactor import WaitTimeout, stop_reactor, wait_for
from popframe.testing.runners import HeldRunner, RecordingRunner
from popframe.testing.session import answered, b64, encoded, replies
from popframe.testing.transports import BufferedTransport, connect_transport

__all__ = [
    "POP3",
    "TWISTD",
    "BufferedTransport",
    "HeldRunner",
    "InMemoryConnection",
    "MemoryChecker",
    "MemoryStore",
    "RecordingClient",
    "RecordingRunner",
    "ServerProcess",
    "WaitTimeout",
    "answered",
    "b64",
    "connect_in_memory",
    "connect_transport",
    "encoded",
    "failure_of",
    "make_portal",
    "replies",
    "result_of",
    "run_twistd",
    "start_server",
    "stop_reactor",
    "wait_for",
    "wait_for_log",
    "wait_until",
]
