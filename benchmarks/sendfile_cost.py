#!/usr/bin/env python3
"""Is ``os.sendfile`` a lever for RETR of a wire-ready message (issue 18)?

    python benchmarks/sendfile_cost.py [SIZE ...]    # default 27000 4000

Sender CPU (this thread's user + system time) per message over loopback
TCP, a reader thread draining the other end: popframe's way (open, read
the file, one ``sendmsg`` of the +OK line, the octets and ``.CRLF``)
against ``send(+OK, MSG_MORE)``, ``sendfile``, ``send(.CRLF)``.  Rounds
alternate; 20,000 messages each.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import tempfile
import threading
from collections.abc import Callable

MESSAGES = 20_000
HEAD, TAIL = b"+OK octets\r\n", b".\r\n"


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def measure(size: int) -> None:
    with tempfile.NamedTemporaryFile(suffix=".eml") as message:
        message.write((b"x" * 76 + b"\r\n") * (size // 78))
        message.flush()
        path = message.name
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def drain() -> None:
            while client.recv(1 << 20):
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()

        def read_and_sendmsg() -> None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, size + 1)
            finally:
                os.close(fd)
            server.sendmsg([HEAD, data, TAIL])

        def with_sendfile() -> None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                server.send(HEAD, socket.MSG_MORE)
                length, offset = os.fstat(fd).st_size, 0
                while offset < length:
                    offset += os.sendfile(server.fileno(), fd, offset, length - offset)
                server.send(TAIL)
            finally:
                os.close(fd)

        ways: list[tuple[str, Callable[[], None]]] = [("read + sendmsg", read_and_sendmsg),
                                                      ("sendfile", with_sendfile)]
        for name, send in [ways[0], *ways, *ways]:  # the first round warms up
            start = thread_cpu()
            for _ in range(MESSAGES):
                send()
            print(f"{size:>7} octets  {name:15} {(thread_cpu() - start) / MESSAGES * 1e6:6.1f} µs")
        server.close()
        reader.join(10)
        client.close()
        listener.close()


if __name__ == "__main__":
    for size in [int(arg) for arg in sys.argv[1:]] or [27_000, 4_000]:
        measure(size)
