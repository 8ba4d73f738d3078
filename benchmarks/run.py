#!/usr/bin/env python3
"""popframe vs Dovecot, side by side: every scenario for every server,
interleaved (A B, then B A, ...) over R repetitions at each concurrency;
prints a markdown table of medians and popframe/Dovecot ratios.

    bash benchmarks/setup.sh                 # once: dovecot, popbench user, uvloop, py-spy
    python benchmarks/run.py --quick         # smoke run, < 2 minutes
    python benchmarks/run.py --popframe-rev HEAD --out benchmarks/RESULTS.md   # the full run

See benchmarks/README.md for the scenarios, the metrics and the Dovecot
configuration.  All traffic is to 127.0.0.1; every loop is bounded in
sessions and time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus as corpus_mod  # noqa: E402
import servers as srv  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_SCENARIOS = ("check", "drain", "pipelined", "drain+dele")
ALL_SCENARIOS = LOAD_SCENARIOS + ("big", "huge-maildrop")


def machine_busy() -> float:
    """CPU seconds all processes on the machine have spent in user and
    system mode (/proc/stat; interrupt and softirq time, where loopback TCP
    is partly processed, is left out as it is charged to no process)."""
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process (the sampler thread) and its waited-for
    children (the load generator processes)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def uses_c_loadgen(a: argparse.Namespace, scenario: str) -> bool:
    """``--loadgen c`` runs the plain-TCP check and drain; loadgen.py the rest."""
    return a.loadgen == "c" and not a.tls and scenario in ("check", "drain")


class Bench:
    def __init__(self, args: argparse.Namespace, manifest: dict, corpus_dir: Path) -> None:
        self.a = args
        self.manifest = manifest
        self.corpus = corpus_dir
        self.manifest_path = corpus_dir / corpus_mod.MANIFEST
        self.users = sorted(u for u in manifest["users"] if u.startswith("u"))
        self.results: list[dict] = []

    def loadgen(self, server: srv.Server, scenario: str, concurrency: int, *, users: list[str] | None = None,
                duration: float | None = None, max_sessions: int = 1_000_000,
                session_timeout: float | None = None) -> dict:
        """One measured run: the load generator in a process of its own, the
        server's tree sampled around it."""
        session_timeout = session_timeout or self.a.session_timeout
        port = server.tls_port if self.a.tls else server.port
        cmd = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port),
               "--manifest", str(self.manifest_path), "--scenario", scenario, "-c", str(concurrency),
               "--duration", str(duration if duration is not None else self.a.duration),
               "--max-sessions", str(max_sessions), "--session-timeout", str(session_timeout)]
        if users:
            cmd += ["--users", ",".join(users)]
        if self.a.no_crc:
            cmd.append("--no-crc")
        if self.a.tls:
            cmd.append("--tls-resume" if self.a.tls_resume else "--tls")
        if uses_c_loadgen(self.a, scenario):
            cmd += ["--engine", "c"]
        rss0 = srv.tree_rss(server.pid)
        cpu0, busy0, own0 = srv.tree_cpu(server.pid), machine_busy(), own_cpu()
        db0 = server.database_cpu()
        sampler = srv.TreeSampler(server.pid).start()
        t0 = time.monotonic()
        limit = (duration or self.a.duration) + session_timeout + 60
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        wall = time.monotonic() - t0
        peak_rss, peak_pss, _ = sampler.stop()
        cpu, busy, own = srv.tree_cpu(server.pid) - cpu0, machine_busy() - busy0, own_cpu() - own0
        db = server.database_cpu() - db0  # the SQL store's database server, if any
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout)
        r.update(
            server=server.name, server_cpu_s=cpu,
            server_cpu_per_1k_msgs=cpu / r["messages"] * 1000 if r["messages"] else None,
            server_cpu_ms_per_session=cpu / r["sessions_ok"] * 1000 if r["sessions_ok"] else None,
            server_cpu_share=cpu / max(r["wall_s"], 1e-9),
            peak_rss_mb=peak_rss / 1e6, peak_pss_mb=peak_pss / 1e6, rss_before_mb=rss0 / 1e6,
            rss_growth_mb=(peak_rss - rss0) / 1e6,
            db_cpu_share=db / max(r["wall_s"], 1e-9) if db else None,
            server_db_cpu_ms_per_session=(cpu + db) / r["sessions_ok"] * 1000 if db and r["sessions_ok"] else None,
            server_db_cpu_per_1k_msgs=(cpu + db) / r["messages"] * 1000 if db and r["messages"] else None,
            # Everything else on this shared machine: the noise indicator.
            other_cpu_share=max(0.0, busy - cpu - db - own) / max(wall, 1e-9),
            errors_total=sum(r["errors"].values()),
        )
        return r

    def record(self, scenario: str, c: int, rep: int, r: dict) -> None:
        r.update(scenario_name=scenario, c=c, rep=rep)
        self.results.append(r)
        if self.a.json:  # after every run, so an interrupted run keeps what it measured
            self.a.json.write_text(json.dumps(self.results, indent=1))
        errs = f" ERRORS {r['errors']} e.g. {r['error_samples'][:2]}" if r["errors_total"] else ""
        log(f"  {scenario:13} c={c:<3} rep={rep} {r['server']:12} {r['sessions_per_s']:8.1f} sess/s "
            f"{r['messages_per_s']:8.1f} msg/s {r['mb_per_s']:6.1f} MB/s  p99 {r['session_p99_ms'] or 0:8.1f} ms  "
            f"srv cpu {r['server_cpu_share']:.2f}  other {r['other_cpu_share']:.2f}{errs}")

    def warm_up(self, servers: list[srv.Server]) -> None:
        """One check session per user on each server: builds popframe's size
        cache and Dovecot's index, so the timed runs compare warm servers."""
        for s in servers:
            r = self.loadgen(s, "check", 8, duration=600, max_sessions=len(self.users))
            log(f"warm-up {s.name}: {r['sessions_ok']} sessions in {r['wall_s']:.1f}s, errors {r['errors']}")

    def run(self, servers: list[srv.Server]) -> None:
        a = self.a
        for scenario in [s for s in LOAD_SCENARIOS if s in a.scenarios]:
            for c in a.conc:
                for rep in range(a.reps):
                    order = servers if rep % 2 == 0 else servers[::-1]
                    for s in order:
                        if scenario == "drain+dele":
                            # Each user once, on a fresh copy: max(c, --dele-users) of them.
                            users = self.users[:max(c, min(a.dele_users, len(self.users)))]
                            s.copy_users(users)
                            r = self.loadgen(s, scenario, c, users=users, duration=600, max_sessions=len(users))
                            r["left_after_dele"] = s.remaining_messages(users)
                            if r["left_after_dele"]:
                                r["errors"]["left-after-dele"] = r["left_after_dele"]
                                r["errors_total"] += 1
                        else:
                            r = self.loadgen(s, scenario, c)
                        self.record(scenario, c, rep, r)
        if "drain+dele" in a.scenarios:  # leave a full corpus for anyone reusing the servers
            for s in servers:
                s.copy_users(self.users)
        if "big" in a.scenarios and "big" in self.manifest["users"]:
            for rep in range(a.reps):
                for s in (servers if rep % 2 == 0 else servers[::-1]):
                    s.copy_users(["big"])
                    r = self.loadgen(s, "drain", 1, users=["big"], duration=600, max_sessions=1,
                                     session_timeout=max(120.0, a.session_timeout))
                    self.record("big", 1, rep, r)
        if "huge-maildrop" in a.scenarios and "huge" in self.manifest["users"]:
            for rep in range(a.huge_reps):
                for s in (servers if rep % 2 == 0 else servers[::-1]):
                    took = s.copy_users(["huge"])
                    log(f"  fresh copy of huge for {s.name}: {took:.1f}s")
                    r = self.loadgen(s, "check", 1, users=["huge"], duration=600, max_sessions=1 + a.huge_later,
                                     session_timeout=max(300.0, a.session_timeout))
                    series = r["open_series"]
                    r["first_open_stat_ms"] = series[0][1] if series else None
                    r["first_open_uidl_ms"] = series[0][2] if series else None
                    r["later_open_stat_ms"] = statistics.median(x[1] for x in series[1:]) if len(series) > 1 else None
                    r["later_open_uidl_ms"] = statistics.median(x[2] for x in series[1:]) if len(series) > 1 else None
                    self.record("huge-maildrop", 1, rep, r)
                    log(f"    first open: STAT {r['first_open_stat_ms']} ms, UIDL done {r['first_open_uidl_ms']} ms; "
                        f"later: STAT {r['later_open_stat_ms']} ms, UIDL done {r['later_open_uidl_ms']} ms")


# -- the report ---------------------------------------------------------------------

# (key, label, format, higher is better?)
METRICS = {
    "load": [
        ("sessions_per_s", "sessions/s", "{:.1f}", True),
        ("messages_per_s", "messages/s", "{:.0f}", True),
        ("mb_per_s", "MB/s", "{:.1f}", True),
        ("session_p50_ms", "session p50 ms", "{:.1f}", False),
        ("session_p99_ms", "session p99 ms", "{:.1f}", False),
        ("open_p50_ms", "open p50 ms (PASS→STAT)", "{:.1f}", False),
        ("retr_p50_ms", "RETR p50 ms", "{:.2f}", False),
        ("retr_p99_ms", "RETR p99 ms", "{:.1f}", False),
        ("server_cpu_per_1k_msgs", "server CPU s / 1k msgs", "{:.2f}", False),
        ("server_cpu_ms_per_session", "server CPU ms / session", "{:.1f}", False),
        ("server_cpu_share", "server CPU (cores busy)", "{:.2f}", None),
        ("db_cpu_share", "database server CPU (cores busy; SQL store, LDAP slapd)", "{:.2f}", None),
        ("server_db_cpu_per_1k_msgs", "server + database CPU s / 1k msgs", "{:.2f}", False),
        ("server_db_cpu_ms_per_session", "server + database CPU ms / session", "{:.1f}", False),
        ("peak_rss_mb", "peak RSS MB (tree sum)", "{:.0f}", False),
        ("peak_pss_mb", "peak PSS MB (tree sum)", "{:.0f}", False),
        ("tls_resumed_share", "TLS handshakes resumed (--tls-resume)", "{:.0%}", None),
        ("loadgen_cpu_share", "loadgen CPU (cores busy)", "{:.2f}", None),
        ("other_cpu_share", "other load (cores busy)", "{:.2f}", None),
    ],
    "big": [
        ("mb_per_s", "MB/s", "{:.1f}", True),
        ("session_p50_ms", "session ms", "{:.0f}", False),
        ("server_cpu_s", "server CPU s", "{:.2f}", False),
        ("rss_growth_mb", "RSS growth MB (peak - before)", "{:.1f}", False),
        ("peak_rss_mb", "peak RSS MB (tree sum)", "{:.0f}", False),
        ("loadgen_cpu_share", "loadgen CPU (cores busy)", "{:.2f}", None),
        ("other_cpu_share", "other load (cores busy)", "{:.2f}", None),
    ],
    "huge": [
        ("first_open_stat_ms", "1st open: PASS→STAT ms", "{:.0f}", False),
        ("first_open_uidl_ms", "1st open: PASS→UIDL done ms", "{:.0f}", False),
        ("later_open_stat_ms", "later opens: PASS→STAT ms", "{:.1f}", False),
        ("later_open_uidl_ms", "later opens: PASS→UIDL done ms", "{:.1f}", False),
        ("server_cpu_s", "server CPU s (all sessions)", "{:.2f}", False),
        ("peak_rss_mb", "peak RSS MB (tree sum)", "{:.0f}", False),
        ("other_cpu_share", "other load (cores busy)", "{:.2f}", None),
    ],
}
NO_RATIO = {"tls_resumed_share"}  # a share: dividing two of them says nothing
CHECK_SKIP = {"messages_per_s", "mb_per_s", "retr_p50_ms", "retr_p99_ms", "server_cpu_per_1k_msgs",
              "server_db_cpu_per_1k_msgs"}


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def report(results: list[dict], server_names: list[str], reference: str = "dovecot") -> str:
    out = []
    others = [n for n in server_names if n != reference]
    has_ref = reference in server_names
    by = {}
    for r in results:
        by.setdefault((r["scenario_name"], r["c"], r["server"]), []).append(r)
    scen_order = [s for s in ALL_SCENARIOS if any(k[0] == s for k in by)]
    head = ["c", "metric", *server_names] + ([f"{n} / {reference}" for n in others] if has_ref else [])
    for scen in scen_order:
        kind = "big" if scen == "big" else "huge" if scen == "huge-maildrop" else "load"
        out.append(f"\n### {scen}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        cs = sorted({k[1] for k in by if k[0] == scen})
        for c in cs:
            for key, label, spec, _ in METRICS[kind]:
                if scen == "check" and key in CHECK_SKIP:
                    continue
                if scen != "check" and kind == "load" and key in ("server_cpu_ms_per_session",
                                                                  "server_db_cpu_ms_per_session"):
                    continue
                meds = {n: median_of(by.get((scen, c, n), []), key) for n in server_names}
                if all(v is None for v in meds.values()):
                    continue
                row = [str(c), label] + [fmt(meds[n], spec) for n in server_names]
                if has_ref:
                    for n in others:
                        ref = meds[reference]
                        row.append("–" if meds[n] is None or not ref or key in NO_RATIO
                                   else f"{meds[n] / ref:.2f}")
                out.append("| " + " | ".join(row) + " |")
            errs = {n: sum(r["errors_total"] for r in by.get((scen, c, n), [])) for n in server_names}
            runs = {n: len(by.get((scen, c, n), [])) for n in server_names}
            row = [str(c), "errors (all runs) / runs"] + [f"{errs[n]} / {runs[n]}" for n in server_names]
            out.append("| " + " | ".join(row + ([""] * len(others) if has_ref else [])) + " |")
    return "\n".join(out)


def summary(results: list[dict], server_names: list[str], reference: str = "dovecot") -> str:
    """The issue's targets, one line each."""
    if reference not in server_names:
        return ""
    by = {}
    for r in results:
        by.setdefault((r["scenario_name"], r["c"], r["server"]), []).append(r)
    lines = ["| target | c | " + " | ".join(f"{n} / {reference}" for n in server_names if n != reference)
             + " | goal |", "|---|---|" + "---|" * (len(server_names) - 1) + "---|"]
    checks = [("drain", "messages_per_s", "drain messages/s", "≥ 2"),
              ("check", "sessions_per_s", "check sessions/s", "≥ 2"),
              ("drain", "session_p99_ms", "drain p99 session latency", "≤ 1"),
              ("check", "session_p99_ms", "check p99 session latency", "≤ 1")]
    for scen, key, label, goal in checks:
        for c in sorted({k[1] for k in by if k[0] == scen}):
            ref = median_of(by.get((scen, c, reference), []), key)
            cells = []
            for n in server_names:
                if n == reference:
                    continue
                v = median_of(by.get((scen, c, n), []), key)
                cells.append("–" if v is None or not ref else f"{v / ref:.2f}")
            lines.append(f"| {label} | {c} | " + " | ".join(cells) + f" | {goal} |")
    return "\n".join(lines)


def machine_notes(load_at_start: float) -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    try:
        import twisted
        tw = twisted.__version__
    except Exception:  # noqa: BLE001
        tw = "?"
    return (f"{os.cpu_count()} CPUs ({cpu}), {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
            f"{platform.platform()}, Python {platform.python_version()}, Twisted {tw}, Dovecot {dovecot}, "
            f"load average at start {load_at_start:.2f}, at the end {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: small corpus, 1 repetition, c=8 (< 2 min)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per scenario and concurrency")
    p.add_argument("--conc", default="8,64,256", help="concurrencies, comma-separated")
    p.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    p.add_argument("--servers", default="auto",
                   help="comma-separated: popframe, popframe-wN, dovecot; a popframe name may end in "
                        "+cache (--auth-cache-ttl 3600) (auto: popframe, popframe-wNCPU when --workers "
                        "exists, dovecot)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of new sessions per run")
    p.add_argument("--session-timeout", type=float, default=30.0,
                   help="a session still running after this is an error (big: 120 s, huge-maildrop: 300 s)")
    p.add_argument("--popframe-backlog", type=int,
                   help="listen backlog for popframe (tcp:...:backlog=N); default: popframe's own "
                        "(1024 since it has one; Twisted's 50 before)")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--lf-fraction", type=float, default=0.05,
                   help="share of messages stored with bare LF line ends, as Postfix and Dovecot's "
                        "LDA store them (1.0: all; the rest are stored CRLF)")
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scheme", default="SHA512-CRYPT", help="SHA512-CRYPT, or PLAIN to isolate protocol cost")
    p.add_argument("--big-mb", type=int, default=100)
    p.add_argument("--huge", type=int, default=100_000)
    p.add_argument("--dele-users", type=int, default=100,
                   help="drain+dele: users drained (and deleted) per run: max(c, this)")
    p.add_argument("--huge-reps", type=int, default=2)
    p.add_argument("--huge-later", type=int, default=4, help="sessions after the first in huge-maildrop")
    p.add_argument("--no-crc", action="store_true")
    p.add_argument("--tls", action="store_true",
                   help="every session over implicit TLS (TLS 1.3, one self-signed ECDSA P-256 "
                        "certificate for all servers) instead of plain TCP")
    p.add_argument("--tls-resume", action="store_true",
                   help="with --tls: each of the c concurrent clients resumes the TLS session (ticket) "
                        "of its previous connection, as a polling client does; the report counts the "
                        "handshakes that resumed")
    p.add_argument("--loadgen", choices=("c", "python"), default="c",
                   help="c (default): plain-TCP check and drain by the load generator in C "
                        "(ceiling/pop3_load.c), which leaves the servers most of the CPU the Python "
                        "one takes on a 2-core machine; TLS and the other scenarios always run "
                        "loadgen.py. python: loadgen.py for everything (as every run before this option)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/popbench"))
    p.add_argument("--popframe-rev", help="benchmark this commit (git archive) instead of the working tree; "
                   "'worktree': a copy of the working tree taken at start")
    p.add_argument("--no-twisted-mail", action="store_true", help="skip the twistd mail probe")
    p.add_argument("--keep", action="store_true", help="leave the servers' directories in the workdir")
    p.add_argument("--out", type=Path, help="also write the report (markdown) here")
    p.add_argument("--json", type=Path, help="write every run's raw numbers here")
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.conc, a.duration = 1, "8", 2.0
        a.users, a.messages, a.big_mb, a.huge, a.huge_reps, a.huge_later = 16, 10, 5, 2000, 1, 2
    a.conc = [int(c) for c in a.conc.split(",")]
    a.scenarios = a.scenarios.split(",")
    unknown = set(a.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(ALL_SCENARIOS)}")
    if a.tls_resume and not a.tls:
        p.error("--tls-resume needs --tls")
    if max(a.conc) > a.users:
        p.error(f"c={max(a.conc)} needs at least that many users (--users {a.users}): "
                "a user is never in two sessions at once")
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    # Stop the servers (the finally below) on SIGTERM too, and on SIGINT
    # even when started in the background (where SIGINT is ignored).
    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    if shutil.which("dovecot") is None or subprocess.run(["getent", "passwd", srv.DOVECOT_USER],
                                                         capture_output=True).returncode != 0:
        log("dovecot or the popbench user is missing: running benchmarks/setup.sh")
        subprocess.run(["bash", str(HERE / "setup.sh")], check=True)

    a.workdir.mkdir(parents=True, exist_ok=True)
    a.workdir.chmod(0o755)
    src = srv.REPO
    if a.popframe_rev:
        src = srv.export_popframe(a.popframe_rev, a.workdir)
    rev = subprocess.run(["git", "-C", str(srv.REPO), "rev-parse", "--short",
                          "HEAD" if a.popframe_rev in (None, "worktree") else a.popframe_rev],
                         capture_output=True, text=True).stdout.strip()
    dirty = "" if a.popframe_rev not in (None, "worktree") else (
        " + uncommitted changes" if subprocess.run(["git", "-C", str(srv.REPO), "status", "--porcelain", "popframe"],
                                                   capture_output=True, text=True).stdout.strip() else "")
    has_workers = srv.popframe_has_workers(src)
    if a.servers == "auto":
        names = ["popframe"]
        if has_workers:
            names.append(f"popframe-w{os.cpu_count()}")
        names.append("dovecot")
    else:
        names = a.servers.split(",")

    big_mb = a.big_mb if "big" in a.scenarios else 0
    huge = a.huge if "huge-maildrop" in a.scenarios else 0
    corpus_dir = a.workdir / (f"corpus-s{a.seed}-u{a.users}-m{a.messages}-{a.scheme.lower()}"
                              f"-b{big_mb}-h{huge}"
                              + (f"-lf{a.lf_fraction:g}" if a.lf_fraction != 0.05 else ""))
    log(f"corpus {corpus_dir} (generated once, then reused)")
    manifest = corpus_mod.load_or_generate(
        corpus_dir, users=a.users, messages=a.messages, seed=a.seed, scheme=a.scheme,
        big_mb=big_mb, huge=huge, lf_fraction=a.lf_fraction)
    log(corpus_mod.summary(manifest))
    bench = Bench(a, manifest, corpus_dir)

    twisted_mail = None
    if not a.no_twisted_mail:
        try:
            twisted_mail = srv.probe_twisted_mail(a.workdir)
        except Exception as e:  # noqa: BLE001
            twisted_mail = f"probe failed: {e!r}"
        log(f"twistd mail: {twisted_mail}")

    servers: list[srv.Server] = []
    try:
        for n in names:
            s = srv.make_server(n, a.workdir, corpus_dir, src)
            if isinstance(s, srv.Popframe):
                s.backlog = a.popframe_backlog
            s.tls = a.tls
            shutil.rmtree(s.dir, ignore_errors=True)
            s.start()
            took = s.copy_users(bench.users)
            log(f"started {n} on 127.0.0.1:{s.port} (pid {s.pid}): {s.greeting!r}; copied maildirs in {took:.1f}s")
            servers.append(s)
        bench.warm_up(servers)
        bench.run(servers)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): reporting the {len(bench.results)} runs done")
        interrupted_note = f" (interrupted after {len(bench.results)} runs)"
    else:
        interrupted_note = ""
    finally:
        for s in servers:
            s.stop()
        if not a.keep:
            for s in servers:
                shutil.rmtree(s.dir, ignore_errors=True)

    elapsed = time.monotonic() - started
    cmd = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = [
        f"## popframe vs Dovecot ({datetime.date.today().isoformat()})",
        "",
        f"- command: `{cmd}` ({elapsed / 60:.1f} min{interrupted_note})",
        f"- popframe: {rev}{dirty} ({src if a.popframe_rev == 'worktree' else 'git archive of ' + a.popframe_rev if a.popframe_rev else 'working tree'}); "
        f"servers: {', '.join(names)}"
        + (f"; popframe listens with backlog={a.popframe_backlog}" if a.popframe_backlog else
           "; popframe listens with its default backlog (1024, or Twisted's 50 before it had one)"),
        f"- machine: {machine_notes(load_at_start)}",
        f"- corpus: seed {a.seed}, {corpus_mod.summary(manifest)}; {a.lf_fraction:.0%} stored with "
        f"bare LF, the rest CRLF; passwords {a.scheme}; "
        f"big: {big_mb} MB; huge: {huge} messages",
        f"- each cell: median of {a.reps} runs ({a.duration:g} s of new sessions each; drain+dele: "
        f"max(c, {a.dele_users}) users once each; huge-maildrop {a.huge_reps} runs), servers interleaved; "
        + ("implicit TLS 1.3 (ECDSA P-256, each client resuming its previous connection's TLS session) on 127.0.0.1"
           if a.tls_resume else
           "implicit TLS 1.3 (ECDSA P-256, no session resumption) on 127.0.0.1" if a.tls
         else "plain TCP (no TLS) on 127.0.0.1")
        + ("; check and drain loaded by the C load generator (ceiling/pop3_load.c)"
           if uses_c_loadgen(a, "check") else "; loaded by loadgen.py (Python)"),
    ]
    if twisted_mail:
        text.append(f"- Twisted's own `twistd mail` POP3: {twisted_mail}")
    summ = summary(bench.results, names)
    if summ:
        text += ["", "### targets (issue 4): ratios", "", summ]
    text.append(report(bench.results, names))
    md = "\n".join(text) + "\n"
    print(md)
    if a.out:
        a.out.write_text(md)
    if a.json:
        a.json.write_text(json.dumps(bench.results, indent=1))


if __name__ == "__main__":
    main()
