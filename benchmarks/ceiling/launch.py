"""What the prototypes in this directory share: the process layout (one
listening socket, bound before the fork, shared by WORKERS forked
processes as popframe's workers share their parent's; SIGTERM to the
parent stops them all) and each worker's popframe factory, built from
``twistd pop3``'s options as a worker builds it.  For the benchmark only."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from typing import Any


def serve_forked(port: int, workers: int, serve: Callable[[socket.socket, int], None]) -> None:
    """Run ``serve(sock, n)`` in each of ``workers`` children; return when
    they have all ended."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    children: list[int] = []
    for n in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                serve(sock, n)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    for _ in children:
        os.wait()


def popframe_factory(sock: socket.socket, log_path: str, pop3_args: list[str], reactor: Any,
                     protocol: Callable[[Any], Any] | None = None) -> Any:
    """A worker's text log (``log_path``, with ``faster_text_logs``) and its
    started listener factory for ``pop3_args`` on ``sock``'s port, built by
    popframe's ``Options``, ``Settings`` and ``Serving``;
    ``protocol(factory)``, when given, makes each connection's protocol.
    Call it once the worker's reactor is installed."""
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from popframe.ops.serving import Serving
    from popframe.options import Options
    from popframe.settings import Settings
    from popframe.twisted_internals import faster_text_logs

    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115  (the process's life)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    faster_text_logs()
    options = Options()
    listen = f"tcp:{sock.getsockname()[1]}:interface=127.0.0.1"
    options.parseOptions([*pop3_args, "--listen", listen])
    serving = Serving(Settings.from_options(options), reactor)
    if protocol is not None:
        pop3 = serving.factories["pop3"]
        pop3.buildProtocol = lambda addr: protocol(pop3)
    factory = serving.factory("pop3", listen)
    factory.doStart()
    return factory
