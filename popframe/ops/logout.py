"""The one log line a session leaves when it ends, as Dovecot's
``pop3_logout_format`` does::

    session ended user='alice' peer=192.0.2.7:50311 listener=ssl:995 tls=TLSv1.3
    mechanism=PLAIN retr=3/48211 top=0/0 deleted=2 end=QUIT duration=1.204s

(one line).  The event carries each value as a field of its own (``user``,
``peer``, ``listener``, ``tls``, ``mechanism``, ``retrieved``,
``retrieved_octets``, ``top``, ``top_octets``, ``deleted``, ``end``,
``duration``), so ``--log-format json`` writes them as JSON members.
Nothing the client sent as a secret is on the record, so nothing of one
can reach the line.
"""

from __future__ import annotations

from twisted.logger import Logger

from popframe.interfaces.observers import SessionObserver, SessionRecord

__all__ = ["LogoutLine", "NAMESPACE"]

#: The log namespace of the line (``[popframe.session#info]`` in text logs).
NAMESPACE = "popframe.session"

class LogoutLine(SessionObserver):
    """Logs the line at ``info`` when a session closes.  The text is made
    here in one f-string, and the event's format only names it: Twisted's
    formatter parsing a format of a dozen fields cost a text log 40 µs a
    session (benchmarks/session_cost.py --text-log)."""

    def __init__(self, logger: Logger | None = None) -> None:
        self.log = logger if logger is not None else Logger(namespace=NAMESPACE)

    def session_closed(self, record: SessionRecord) -> None:
        user, tls, mechanism = record.user, record.tls, record.mechanism
        duration = round(record.duration, 6)
        text = (
            f"session ended user={repr(user) if user is not None else '-'} peer={record.peer} "
            f"listener={record.listener} tls={tls or '-'} mechanism={mechanism or '-'} "
            f"retr={record.retrieved}/{record.retrieved_octets} "
            f"top={record.top}/{record.top_octets} deleted={record.deleted} end={record.end} "
            f"duration={duration:.3f}s")
        self.log.info(
            "{session_text}", session_text=text,
            user=user, peer=record.peer, listener=record.listener, tls=tls,
            mechanism=mechanism, retrieved=record.retrieved,
            retrieved_octets=record.retrieved_octets, top=record.top,
            top_octets=record.top_octets, deleted=record.deleted, end=record.end,
            duration=duration,
        )
