#!/usr/bin/env python3
"""POP3 load generator: N concurrent sessions against one server, every
reply checked against the corpus manifest.

    python benchmarks/loadgen.py --port 1110 --manifest CORPUS/manifest.json \
        --scenario drain --concurrency 64 --duration 10 [--max-sessions N] [--json OUT]

Scenarios (each a complete session: connect, greeting, USER, PASS, ..., QUIT):

- ``check``: STAT, UIDL, QUIT (a client polling for new mail)
- ``drain``: STAT, UIDL, LIST, RETR every message, QUIT (no DELE)
- ``drain+dele``: as drain with DELE after each RETR; each user is used once
  (run it on a fresh copy of the maildirs)
- ``pipelined``: CAPA, then as drain with all RETRs sent in one write when
  CAPA lists PIPELINING (falls back to one at a time otherwise, and says so)

``--users`` picks the users (default: the regular ``u*`` users of the corpus;
``big`` and ``huge`` are used by naming them).  A user is never in two
sessions at once: sessions take a free user from a queue and put it back at
the end, so concurrency is capped at the number of users.  New sessions start
until ``--max-sessions`` have started or ``--duration`` seconds have passed;
sessions still running then get ``--session-timeout`` seconds to finish (a
session over it is counted as an error "timeout in STAGE", where STAGE is
the reply it was waiting for).  Rates divide by the time from the start to
the end of the last completed session.

Checks: STAT's count against the manifest, every UIDL known, LIST's octets
against the manifest, each RETR's octets after un-stuffing against LIST and
(unless --no-crc) the CRC-32 of the un-stuffed bytes.  Errors are counted by
kind, never raised.  Reports sessions/s, messages/s, MB/s, p50/p99 session,
open (PASS sent -> STAT answered) and per-RETR latency, and the load
generator's own CPU seconds (getrusage), as JSON.

``--tls``: implicit TLS 1.3 (asyncio's TLS transport); ``--tls-resume``:
the same, each of the c concurrent clients resuming the TLS session of its
previous connection (:class:`ResumingTLS`), counting the handshakes that
did.

``--engine c``: the check and drain scenarios (plain TCP) in C instead
(``ceiling/pop3_load.c``, compiled on first use next to the manifest): the
same sessions, checks and result, at a small fraction of this process's
CPU, which on a 2-core machine is CPU the measured server gets back.

asyncio with uvloop when it is installed (``--loop asyncio`` to compare); a
hand-written asyncio.Protocol parser (one ``bytearray``, ``find`` for the
terminator from where the last search stopped, and for a RETR not before
LIST's size, since dot-stuffing only adds octets) keeps the client's CPU per
byte low.  A server that sends fewer octets than LIST said is caught as a
timeout in RETR rather than as a size mismatch.  Only 127.0.0.1 / ::1 / localhost targets are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import resource
import ssl
import sys
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field

SCENARIOS = ("check", "drain", "drain+dele", "pipelined")
perf = time.perf_counter


class Pop3Error(Exception):
    """A session-ending problem; ``kind`` is what the error counter shows."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class _Waiter:
    """``least``: octets the body has at least (a RETR's LIST size): the
    search for its end starts there, so the body is not scanned at all."""

    __slots__ = ("fut", "multi", "scan", "sent", "least")

    def __init__(self, fut: asyncio.Future, multi: bool, sent: float, least: int = 0) -> None:
        self.fut, self.multi, self.scan, self.sent, self.least = fut, multi, 0, sent, least


class Pop3Client(asyncio.Protocol):
    """Replies in order: each request gets a future of (status line, body or
    None, time the reply was complete).  The body of a multi-line reply is
    returned still dot-stuffed, with its final CRLF, without the ``.`` line."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray()
        self.pending: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.greeting = loop.create_future()
        self.pending.append(_Waiter(self.greeting, False, perf()))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pending = self.pending
        while pending:
            w = pending[0]
            result = self._parse(w)
            if result is None:
                return
            pending.popleft()
            if not w.fut.done():
                w.fut.set_result(result)

    def _parse(self, w: _Waiter) -> tuple[bytes, bytes | None, float] | None:
        buf = self.buf
        eol = buf.find(b"\r\n")
        if eol < 0:
            return None
        if not w.multi or not buf.startswith(b"+OK"):
            line = bytes(buf[:eol])
            del buf[:eol + 2]
            return line, None, perf()
        start = eol + 2
        if buf[start:start + 3] == b".\r\n":
            line = bytes(buf[:eol])
            del buf[:start + 3]
            return line, b"", perf()
        end = buf.find(b"\r\n.\r\n", max(start, w.scan, start + w.least - 2))
        if end < 0:
            w.scan = max(start, len(buf) - 4)
            return None
        line, body = bytes(buf[:eol]), bytes(buf[start:end + 2])
        del buf[:end + 5]
        return line, body, perf()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by server")
        while self.pending:
            w = self.pending.popleft()
            if not w.fut.done():
                w.fut.set_exception(Pop3Error("eof", str(self.lost)))

    def send(self, lines: list[bytes], multi: bool, least: list[int] | None = None) -> list[asyncio.Future]:
        if self.lost is not None:
            raise Pop3Error("eof", str(self.lost))
        now = perf()
        futs = []
        for i in range(len(lines)):
            fut = self.loop.create_future()
            self.pending.append(_Waiter(fut, multi, now, least[i] if least else 0))
            futs.append(fut)
        assert self.transport is not None
        self.transport.write(b"".join(line + b"\r\n" for line in lines))
        return futs


# Searching with a regular expression first is faster than bytes.replace's
# own search when, as in most messages, there is nothing to un-stuff.
_STUFFED = re.compile(rb"\r\n\.\.")


def unstuffed(body: bytes) -> bytes:
    if _STUFFED.search(body) is not None:
        body = body.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


def unstuffed_len(body: bytes) -> int:
    stuffed = body.count(b"\r\n..") if _STUFFED.search(body) is not None else 0
    return len(body) - stuffed - (1 if body.startswith(b"..") else 0)


@dataclass
class Stats:
    sessions_ok: int = 0
    sessions_failed: int = 0
    sessions_started: int = 0
    messages: int = 0
    octets: int = 0
    deleted: int = 0
    errors: Counter = field(default_factory=Counter)
    error_samples: list = field(default_factory=list)
    session_lat: list = field(default_factory=list)
    open_lat: list = field(default_factory=list)  # PASS sent -> STAT reply
    uidl_lat: list = field(default_factory=list)  # PASS sent -> UIDL reply complete
    retr_lat: list = field(default_factory=list)
    open_series: list = field(default_factory=list)  # (user, stat ms, uidl ms) in session order
    no_pipelining: int = 0
    tls_resumed: int = 0  # --tls-resume: handshakes that resumed a session
    tls_full: int = 0  # ... and those that did not

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {detail}"[:300])


class Session:
    def __init__(self, client: Pop3Client, stats: Stats, crc: bool, stage: list[str]) -> None:
        self.c, self.stats, self.crc, self.stage = client, stats, crc, stage

    async def ok(self, line: bytes, multi: bool = False, least: int = 0) -> tuple[bytes, bytes | None, float]:
        self.stage[0] = line.split(b" ")[0].decode()
        status, body, t = await self.c.send([line], multi, [least])[0]
        if not status.startswith(b"+OK"):
            raise Pop3Error("-ERR " + line.split(b" ")[0].decode(), status.decode("latin-1"))
        return status, body, t

    def check_message(self, n: int, body: bytes, listed: int, expected: tuple[int, int] | None) -> None:
        st = self.stats
        if self.crc:
            data = unstuffed(body)
            got = len(data)
        else:
            data, got = b"", unstuffed_len(body)
        if got != listed:
            st.error("retr-size", f"msg {n}: received {got} octets, LIST said {listed}")
        if expected is not None and self.crc and zlib.crc32(data) != expected[1]:
            st.error("retr-crc", f"msg {n}: content differs from the corpus")
        st.messages += 1
        st.octets += got


class ResumingTLS(asyncio.Protocol):
    """TLS over memory BIOs in front of a :class:`Pop3Client`, for
    ``--tls-resume``: asyncio's ``create_connection(ssl=...)`` cannot offer
    a saved session, ``SSLContext.wrap_bio(session=...)`` can.  To the POP3
    client it is the transport (``write``, ``close``); ``session`` and
    ``reused`` are read when the session ends."""

    def __init__(self, inner: Pop3Client, context: ssl.SSLContext, session: ssl.SSLSession | None) -> None:
        self.inner = inner
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost",
                                    session=session)
        self.transport: asyncio.Transport | None = None
        self.handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._step()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None:
            self.transport.write(data)

    def _step(self) -> None:
        """Handshake while it lasts, then decrypt whatever has arrived."""
        try:
            if not self.handshaken:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    return
                finally:
                    self._flush()
                self.handshaken = True
                self.inner.connection_made(self)  # type: ignore[arg-type]
            chunks = []
            while True:
                try:
                    chunk = self.tls.read(1 << 18)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            self._flush()  # reading can answer (a key update)
        except ssl.SSLError as error:
            self.inner.connection_lost(error)
            self.close()
            return
        if chunks:
            self.inner.data_received(b"".join(chunks))

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        self._step()

    def write(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner.lost is None:
            self.inner.connection_lost(exc)

    @property
    def reused(self) -> bool:
        return self.handshaken and self.tls.session_reused

    @property
    def session(self) -> ssl.SSLSession | None:
        return self.tls.session if self.handshaken else None


def tls_context() -> ssl.SSLContext:
    """Implicit TLS (port 995 style) as a current client speaks it: TLS 1.3
    only.  The benchmark's certificate is self-signed: not verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


async def run_session(loop, host: str, port: int, user: str, info: dict, scenario: str,
                      stats: Stats, crc: bool, stage: list[str],
                      tls: ssl.SSLContext | None = None,
                      tls_sessions: dict[int, ssl.SSLSession] | None = None, slot: int = 0) -> None:
    """``stage[0]`` says what the session is waiting for (for timeouts).
    ``tls_sessions``: resume the last TLS session of this ``slot`` (one of
    the c concurrent clients; --tls-resume)."""
    t0 = perf()
    stage[0] = "connect"
    resuming: ResumingTLS | None = None
    if tls is not None and tls_sessions is not None:
        _, resuming = await loop.create_connection(
            lambda: ResumingTLS(Pop3Client(loop), tls, tls_sessions.get(slot)), host, port)
        client = resuming.inner
    else:
        _, client = await loop.create_connection(lambda: Pop3Client(loop), host, port, ssl=tls,
                                                 server_hostname="localhost" if tls else None)
    s = Session(client, stats, crc, stage)
    try:
        stage[0] = "greeting"
        greeting = (await client.greeting)[0]
        if not greeting.startswith(b"+OK"):
            raise Pop3Error("greeting", greeting.decode("latin-1"))
        pipelining = False
        if scenario == "pipelined":
            _, capa, _ = await s.ok(b"CAPA", multi=True)
            pipelining = b"\r\nPIPELINING\r\n" in b"\r\n" + (capa or b"")
            if not pipelining:
                stats.no_pipelining += 1
        await s.ok(b"USER " + user.encode())
        t_pass = perf()
        await s.ok(b"PASS " + info["password"].encode())
        status, _, t_stat = await s.ok(b"STAT")
        _, uidl, t_uidl = await s.ok(b"UIDL", multi=True)
        stats.open_lat.append(t_stat - t_pass)
        stats.uidl_lat.append(t_uidl - t_pass)
        stats.open_series.append((user, round((t_stat - t_pass) * 1e3, 3), round((t_uidl - t_pass) * 1e3, 3)))
        expected: dict[str, tuple[int, int]] = info["by_uid"]
        count = int(status.split()[1])
        if count != len(expected):
            stats.error("stat-count", f"{user}: STAT {count}, corpus {len(expected)}")
        uids: dict[int, str] = {}
        for row in (uidl or b"").split(b"\r\n"):
            if row:
                n, uid = row.split(b" ", 1)
                uids[int(n)] = uid.decode().partition(":")[0]
        unknown = [u for u in uids.values() if u not in expected]
        if unknown:
            stats.error("uidl-unknown", f"{user}: {len(unknown)} UIDs not in the corpus, e.g. {unknown[0]}")
        if scenario != "check":
            _, listing, _ = await s.ok(b"LIST", multi=True)
            sizes: dict[int, int] = {}
            for row in (listing or b"").split(b"\r\n"):
                if row:
                    n, size = row.split(b" ", 1)
                    sizes[int(n)] = int(size)
            for n, size in sizes.items():
                want = expected.get(uids.get(n, ""))
                if want is not None and want[0] != size:
                    stats.error("list-size", f"{user} msg {n}: LIST {size}, corpus {want[0]}")
            numbers = sorted(sizes)
            if pipelining:
                stage[0] = "pipelined RETRs"
                futs = client.send([b"RETR %d" % n for n in numbers], multi=True,
                                   least=[sizes[n] for n in numbers])
                prev = perf()
                for n, fut in zip(numbers, futs, strict=True):
                    st, body, t = await fut
                    if not st.startswith(b"+OK"):
                        raise Pop3Error("-ERR RETR", st.decode("latin-1"))
                    stats.retr_lat.append(t - prev)
                    prev = t
                    s.check_message(n, body or b"", sizes[n], expected.get(uids.get(n, "")))
            else:
                for n in numbers:
                    t1 = perf()
                    _, body, t = await s.ok(b"RETR %d" % n, multi=True, least=sizes[n])
                    stats.retr_lat.append(t - t1)
                    s.check_message(n, body or b"", sizes[n], expected.get(uids.get(n, "")))
                    if scenario == "drain+dele":
                        await s.ok(b"DELE %d" % n)
                        stats.deleted += 1
        await s.ok(b"QUIT")
        stats.sessions_ok += 1
        stats.session_lat.append(perf() - t0)
    finally:
        if resuming is not None:
            if resuming.handshaken:
                stats.tls_resumed += resuming.reused
                stats.tls_full += not resuming.reused
                session = resuming.session
                if session is not None and tls_sessions is not None:
                    tls_sessions[slot] = session
            resuming.close()
        elif client.transport is not None:
            client.transport.close()


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def check_target(host: str) -> None:
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"loadgen: refusing non-loopback target {host}")


async def run_load(host: str, port: int, users: dict[str, dict], scenario: str, concurrency: int,
                   duration: float, max_sessions: int, session_timeout: float, crc: bool,
                   tls: bool = False, tls_resume: bool = False) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    once = scenario == "drain+dele"
    queue: deque[str] = deque(users)
    if once:
        max_sessions = min(max_sessions, len(users))
    concurrency = min(concurrency, len(users))
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), perf()
    deadline = t0 + duration
    last_end = [t0]
    context = tls_context() if tls or tls_resume else None
    tls_sessions: dict[int, ssl.SSLSession] | None = {} if tls_resume else None

    async def worker(slot: int) -> None:
        while stats.sessions_started < max_sessions and perf() < deadline and queue:
            user = queue.popleft()
            stats.sessions_started += 1
            stage = ["start"]
            try:
                async with asyncio.timeout(session_timeout):
                    await run_session(loop, host, port, user, users[user], scenario, stats, crc, stage,
                                      context, tls_sessions, slot)
                last_end[0] = perf()
            except Pop3Error as e:
                stats.sessions_failed += 1
                stats.error(e.kind, f"{user}: {e}")
            except TimeoutError:
                stats.sessions_failed += 1
                stats.error(f"timeout in {stage[0]}", f"{user}: session over {session_timeout}s")
            except OSError as e:
                stats.sessions_failed += 1
                stats.error("connect" if not isinstance(e, ConnectionResetError) else "reset", f"{user}: {e!r}")
            except Exception as e:  # noqa: BLE001 - a malformed reply must not stop the run
                stats.sessions_failed += 1
                stats.error("protocol", f"{user}: {e!r}")
            if not once:
                queue.append(user)

    await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    # Rates are over the time to the last *completed* session: a session
    # that hangs until --session-timeout is an error, not idle time to
    # divide the work by.
    wall = max(last_end[0] - t0, 1e-9)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ms = lambda v: None if v is None else round(v * 1e3, 3)  # noqa: E731
    return {
        "scenario": scenario, "concurrency": concurrency, "wall_s": round(wall, 4),
        "sessions_ok": stats.sessions_ok, "sessions_failed": stats.sessions_failed,
        "sessions_per_s": stats.sessions_ok / wall, "messages": stats.messages,
        "messages_per_s": stats.messages / wall, "octets": stats.octets,
        "mb_per_s": stats.octets / wall / 1e6, "deleted": stats.deleted,
        "session_p50_ms": ms(pct(stats.session_lat, 50)), "session_p99_ms": ms(pct(stats.session_lat, 99)),
        "open_p50_ms": ms(pct(stats.open_lat, 50)), "open_p99_ms": ms(pct(stats.open_lat, 99)),
        "uidl_p50_ms": ms(pct(stats.uidl_lat, 50)),
        "retr_p50_ms": ms(pct(stats.retr_lat, 50)), "retr_p99_ms": ms(pct(stats.retr_lat, 99)),
        "loadgen_cpu_s": round(cpu, 3), "loadgen_cpu_share": cpu / wall,
        "errors": dict(stats.errors), "error_samples": stats.error_samples,
        "no_pipelining_sessions": stats.no_pipelining,
        "open_series": stats.open_series if len(stats.open_series) <= 50 else [],
        "loop": type(loop).__module__.split(".")[0], "tls": tls or tls_resume,
        "tls_resume": tls_resume, "tls_resumed": stats.tls_resumed, "tls_full_handshakes": stats.tls_full,
        "tls_resumed_share": (stats.tls_resumed / (stats.tls_resumed + stats.tls_full)
                              if tls_resume and stats.tls_resumed + stats.tls_full else None),
    }


def load_users(manifest_path: str, names: list[str] | None) -> dict[str, dict]:
    with open(manifest_path) as f:
        manifest = json.load(f)
    all_users = manifest["users"]
    if names is None:
        names = [u for u in all_users if u.startswith("u")]
    users = {}
    for name in names:
        info = all_users[name]
        users[name] = {"password": info["password"],
                       "by_uid": {base: (size, crc) for base, size, crc in info["messages"]}}
    return users


def run_c_engine(a: argparse.Namespace, users: dict[str, dict]) -> dict:
    """``--engine c``: the same run by ``ceiling/pop3_load.c``."""
    import subprocess
    import tempfile
    from pathlib import Path

    if a.scenario not in ("check", "drain") or a.tls or a.tls_resume or a.host != "127.0.0.1":
        raise SystemExit("loadgen: --engine c runs check and drain on 127.0.0.1 without TLS")
    source = Path(__file__).resolve().parent / "ceiling" / "pop3_load.c"
    binary = Path(a.manifest).resolve().parent / "pop3_load"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source), "-lz"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".users") as listing:
        for name, info in users.items():
            listing.write(f"U {name} {info['password']} {len(info['by_uid'])}\n")
            listing.writelines(f"M {uid} {size} {crc}\n" for uid, (size, crc) in info["by_uid"].items())
        listing.flush()
        done = subprocess.run([str(binary), str(a.port), listing.name, a.scenario, str(a.concurrency),
                               str(a.duration), str(a.max_sessions), str(a.session_timeout),
                               "0" if a.no_crc else "1"], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    result.update(no_pipelining_sessions=0, open_series=[], loop="c", tls=False, tls_resume=False,
                  tls_resumed=0, tls_full_handshakes=0, tls_resumed_share=None)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--scenario", choices=SCENARIOS, default="check")
    p.add_argument("--concurrency", "-c", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds during which new sessions start")
    p.add_argument("--max-sessions", type=int, default=1_000_000)
    p.add_argument("--session-timeout", type=float, default=30.0)
    p.add_argument("--users", help="comma-separated users (default: all u* users)")
    p.add_argument("--no-crc", action="store_true", help="check octet counts only, not content")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--engine", choices=("python", "c"), default="python",
                   help="c: check and drain by ceiling/pop3_load.c (less of the machine's CPU)")
    p.add_argument("--json", help="write the result here (default: stdout)")
    p.add_argument("--tls", action="store_true", help="implicit TLS (TLS 1.3) to --port")
    p.add_argument("--tls-resume", action="store_true",
                   help="implicit TLS, each of the c clients resuming the TLS session (ticket) of its "
                        "previous connection, as a polling client does; counts the handshakes that resumed")
    a = p.parse_args(argv)
    check_target(a.host)
    users = load_users(a.manifest, a.users.split(",") if a.users else None)
    if a.engine == "c":
        write_result(run_c_engine(a, users), a.json)
        return
    if a.loop == "uvloop":
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            print("loadgen: uvloop not installed, using asyncio", file=sys.stderr)
            runner = asyncio.run
    else:
        runner = asyncio.run
    result = runner(run_load(a.host, a.port, users, a.scenario, a.concurrency, a.duration,
                             a.max_sessions, a.session_timeout, not a.no_crc, a.tls, a.tls_resume))
    write_result(result, a.json)


def write_result(result: dict, path: str | None) -> None:
    """The result as JSON, into ``path`` (None or -: standard output)."""
    text = json.dumps(result)
    if path and path != "-":
        with open(path, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
