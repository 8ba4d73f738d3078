#!/usr/bin/env python3
"""popframe with its TRANSACTION loop compiled: issue 18's measured
prototype of "a compiled hot path".

For the benchmark only: nothing here is installed or imported by popframe.

    python benchmarks/ceiling/popframe_compiled.py MODULE_DIR PORT WORKERS LOGFILE [--python] -- POP3-OPTIONS...

POP3-OPTIONS are ``twistd pop3``'s, parsed by popframe's own ``Options``
into the same ``Settings``, ``Serving`` and ``POP3Factory`` a worker builds,
on Twisted's epoll reactor with the changes ``twistd pop3`` makes to it
(``dispatch_directly``, ``faster_text_logs``).  Everything up to and
including the login, and QUIT's commit, is popframe's Python as in
production.  When a RETR arrives in TRANSACTION with nothing pipelined
before it and nothing unsent, ``_Handoff`` makes a
``_pop3_transaction.Transaction`` (the C extension ``pop3_transaction.c``,
compiled into MODULE_DIR by servers.py) of the socket and the listing,
gives it that input, and from then on the reactor calls the transaction's
``step`` instead of the connection's ``doRead`` (a session that only
checks its maildrop, STAT, UIDL and QUIT, stays in Python).  C answers STAT, LIST, UIDL and RETR of wire-ready files on
the reactor's thread (no Python between a RETR's read and its reply but
the reactor's own dispatch) until a command it leaves to popframe (QUIT,
DELE, TOP, an error); then popframe takes the unread input, what the
socket did not take, and what was sent back: the session's record (the
logout line's RETR count and octets) is updated, and ``doRead`` is
Twisted's again.  Sessions with EXPIRE stay in Python.  Plain TCP only; the idle
timer is not re-armed while C serves (a prototype's shortcut).

``--python``: the same process layout with no hand-off (popframe's own
path for every command), the baseline for this launcher: it has no log
relay in a parent (each worker writes ``LOGFILE.N``), which is ~4% in its
favour against ``twistd pop3 --workers``.
"""

from __future__ import annotations

import os
import socket
import sys

from launch import popframe_factory, serve_forked


def serve(sock: socket.socket, log_path: str, module_dir: str, handoff: bool,
          pop3_args: list[str]) -> None:
    """One worker: the epoll reactor, popframe's factory, the shared port."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    from popframe.protocol.session import SessionState
    from popframe.server.protocol import POP3ServerProtocol
    from popframe.stores.maildir.listing import relative_path
    from popframe.stores.maildir.store import MaildirMaildrop
    from popframe.twisted_internals import dispatch_directly

    sys.path.insert(0, module_dir)
    import _pop3_transaction

    _TAKEN = {b"RETR", b"retr"}

    class _Handoff(POP3ServerProtocol):
        """Lets C serve a logged-in session's transaction loop."""

        def dataReceived(self, data: bytes) -> None:
            # The first RETR goes to C with what came with it; a session
            # that only checks (STAT, UIDL, QUIT) stays in Python.  While C
            # serves, the reactor calls its step, not this.
            if len(data) <= 1024 and data[:4] in _TAKEN and self._can_hand_off():
                self._hand_off(data)
            else:
                super().dataReceived(data)

        def _can_hand_off(self) -> bool:
            session, tcp = self.session, self._tcp
            return (session is not None and tcp is not None
                    and session.state is SessionState.TRANSACTION and session._pending is None
                    and not session.buffered and not self._closed and not self._waiting
                    and self._message is None and self._rest is None and not self._proxied
                    and session.language == "i-default" and not session.config.workarounds
                    and session.config.expire is None and isinstance(self._maildrop, MaildirMaildrop)
                    and tcp.connected and not tcp.disconnecting and not tcp.TLS
                    and not tcp._tempDataLen and tcp.offset == len(tcp.dataBuffer))

        def _hand_off(self, data: bytes) -> None:
            """The reactor calls the transaction's ``step`` where it called
            the connection's ``doRead``, until C gives the session back."""
            session, maildrop, tcp = self.session, self._maildrop, self._tcp
            assert session is not None and isinstance(maildrop, MaildirMaildrop) and tcp is not None
            messages = session._messages
            where = maildrop._map_now()
            base = maildrop._maildir.path if maildrop._maildir is not None else None
            paths: list[bytes | None] = []
            for uid, ready in zip(messages.uids, messages.ready, strict=True):
                entry = where.get(uid) if where is not None and ready and uid not in maildrop._moved else None
                paths.append(None if entry is None or base is None
                             else os.fsencode(os.path.join(base, relative_path(entry))))
            deleted = bytes(i in session._deleted for i in range(len(messages)))
            step = _pop3_transaction.Transaction(
                tcp.fileno(), paths, list(messages.sizes), [u.encode("ascii") for u in messages.uids],
                deleted).step
            handed_back = self._handed_back

            def do_read() -> None:
                result = step(b"")
                if result is not None:
                    handed_back(*result)

            self._reset_timeout()
            tcp.doRead = do_read  # type: ignore[method-assign]
            result = step(data)
            if result is not None:
                handed_back(*result)

        def _handed_back(self, pending: bytes, retrieved: list[int], unsent: bytes) -> None:
            """Python again: the session's record learns what C sent;
            the end of the input or an error the socket reports is read
            again by Twisted's ``doRead`` (epoll is level-triggered)."""
            tcp, session, record = self._tcp, self.session, self.record
            assert tcp is not None and session is not None and record is not None
            del tcp.doRead
            sizes = session._messages.sizes
            # No EXPIRE here (_can_hand_off), so the session keeps no retrievals.
            record.retrieved += len(retrieved)
            record.retrieved_octets += sum(sizes[i] for i in retrieved)
            if unsent:
                tcp.write(unsent)
            if pending and not self._closed:
                self._reset_timeout()
                session.receive_data(pending)
                self._pump()

    dispatch_directly(reactor)
    factory = popframe_factory(sock, log_path, pop3_args, reactor, _Handoff if handoff else None)
    reactor.adoptStreamPort(sock.fileno(), socket.AF_INET, factory)
    reactor.run()


def main() -> None:
    args = sys.argv[1:]
    if "--" not in args or args.index("--") not in (4, 5):
        sys.exit(__doc__)
    module_dir, port, workers, log_path = args[0], int(args[1]), int(args[2]), args[3]
    handoff = args[4] != "--python"
    pop3_args = args[args.index("--") + 1:]
    serve_forked(port, workers, lambda sock, n: serve(sock, f"{log_path}.{n}", module_dir, handoff, pop3_args))


if __name__ == "__main__":
    main()
