#!/usr/bin/env python3
"""Profile popframe under load with py-spy and print its hot spots.

    python benchmarks/profile.py drain -c 8 --duration 20 [--popframe-rev HEAD]
    python benchmarks/profile.py check -c 64 --duration 20

Starts popframe (as run.py does, on the same corpus), warms it up, then runs
``py-spy record --format raw --threads`` on the server while the load
generator runs the scenario.  Writes the collapsed stacks (for flamegraph.pl
or speedscope) and an SVG flame graph to ``--out`` (default
benchmarks/out/profile-SCENARIO.*), and prints the functions with the most
samples: "self" (the function itself was running) and "total" (it was on the
stack), as a share of all non-idle samples of the reactor thread and of all
threads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus as corpus_mod  # noqa: E402
import servers as srv  # noqa: E402

#: Leaf frames that mean "waiting", not working: the reactor in epoll_wait,
#: pool threads waiting for work.  py-spy's own idle detection does not
#: catch them in --nonblocking mode.
IDLE_LEAVES = {"threading.py:Condition.wait", "twisted/internet/epollreactor.py:EPollReactor.doPoll",
               "threading.py:Thread._wait_for_tstate_lock", "queue.py:Queue.get"}

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/popframe/server.py:123)`` -> ``popframe/server.py:func``."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = re.sub(r"^.*/lib/python3\.\d+/(?!site-packages/)", "", m.group("file"))
    for marker in ("site-packages/", "/popframe-", f"{srv.REPO}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/popframe-":
                path = path.split("/", 1)[1]
            break
    return f"{path}:{m.group('func')}"


def analyse(raw: Path, top: int = 25) -> str:
    by_thread: dict[str, tuple[Counter, Counter, int]] = {}
    everything = (Counter(), Counter(), [0])
    idle: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith("thread") or frames[0].startswith("process") else "all"
        if thread != "all":
            frames = frames[1:]
            if frames and frames[0].startswith("thread"):
                thread, frames = frames[0], frames[1:]
        names = [short(f) for f in frames]
        if names and names[-1] in IDLE_LEAVES:
            idle[thread] += n
            continue
        self_c, total_c, tot = by_thread.setdefault(thread, (Counter(), Counter(), [0]))
        for sc, tc, t in ((self_c, total_c, tot), everything):
            t[0] += n
            if names:
                sc[names[-1]] += n
            for name in set(names):
                tc[name] += n
    out = []
    threads = sorted(by_thread.items(), key=lambda kv: -kv[1][2][0])
    grand = everything[2][0] or 1
    out.append("busy samples per thread (share of all busy samples; idle = waiting in epoll or for "
               "work): " + ", ".join(f"{t.replace('thread ', '')}: {v[2][0] / grand:.0%} (idle {idle[t]})"
                                     for t, v in threads[:6]))
    sections = [("all threads", everything)]
    if threads:
        sections.insert(0, (f"busiest thread {threads[0][0]}", threads[0][1]))
    for title, (self_c, total_c, tot) in sections:
        total = tot[0] or 1
        out.append(f"\n## {title}: {tot[0]} busy samples\n\nself   total  function")
        for name, n in self_c.most_common(top):
            out.append(f"{n / total:5.1%} {total_c[name] / total:6.1%}  {name}")
        out.append("\ntotal  function (inclusive, popframe's own)")
        for name, n in [(k, v) for k, v in total_c.most_common() if k.startswith("popframe/")][:top]:
            out.append(f"{n / total:5.1%}  {name}")
    return "\n".join(out)


_PY_FRAME = re.compile(r"py::(?P<func>\S+?):(?P<file>\S+?)\+0x")
_SYSCALL = re.compile(r"__(?:x64|do)_sys_(\w+)")


def analyse_perf(script: Path, top: int = 30, shown: int = 3) -> str:
    """The busiest threads' CPU samples from ``perf script`` (with perf_jit
    frames): self (the innermost Python function, and the system call it
    was in) and total (on the stack), as a share of the thread's samples."""
    threads: dict[str, tuple[Counter, Counter, list[int]]] = {}
    for block in script.read_text(errors="replace").split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        head = lines[0].split()
        if len(head) < 2:
            continue
        thread = f"{head[0]} {head[1]}"
        functions: list[str] = []
        syscall = None
        for line in lines[1:]:
            frame = _PY_FRAME.search(line)
            if frame:
                functions.append(short(f"{frame.group('func')} ({frame.group('file')})"))
            elif syscall is None and not functions:
                found = _SYSCALL.search(line)
                syscall = found.group(1) if found else None
        self_c, total_c, count = threads.setdefault(thread, (Counter(), Counter(), [0]))
        count[0] += 1
        leaf = functions[0] if functions else "(no Python frame)"
        self_c[leaf + (f" [{syscall}]" if syscall else "")] += 1
        for name in set(functions):
            total_c[name] += 1
    out = []
    busiest = sorted(threads.items(), key=lambda kv: -kv[1][2][0])
    grand = sum(v[2][0] for _, v in busiest) or 1
    out.append("CPU samples per thread: " + ", ".join(
        f"{t}: {v[2][0] / grand:.0%}" for t, v in busiest[:8]))
    for title, (self_c, total_c, count) in busiest[:shown]:
        total = count[0] or 1
        out.append(f"\n## {title}: {count[0]} CPU samples\n\nself   function [system call]")
        out.extend(f"{n / total:5.1%}  {name}" for name, n in self_c.most_common(top))
        out.append("\ntotal  function")
        out.extend(f"{n / total:5.1%}  {name}" for name, n in total_c.most_common(top))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=("check", "drain", "pipelined", "drain+dele"))
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scheme", default="SHA512-CRYPT")
    p.add_argument("--auth-cache", action="store_true", help="run popframe with --auth-cache-ttl 3600")
    p.add_argument("--server", default="popframe",
                   help="the server kind, as run.py names it: popframe (one process), or "
                        "sql-postgresql, sql-mariadb, sql-sqlite (the SQL store)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/popbench"))
    p.add_argument("--popframe-rev")
    p.add_argument("--out", type=Path, help="output prefix (default benchmarks/out/profile-SCENARIO)")
    p.add_argument("--analyse", type=Path, help="only analyse an existing raw file")
    p.add_argument("--perf", action="store_true",
                   help="CPU samples with perf and Python 3.13's perf_jit instead of py-spy")
    p.add_argument("--loadgen", choices=("c", "python"), default="c",
                   help="the load generator for check and drain, as run.py's --loadgen")
    a = p.parse_args(argv)
    if a.analyse:
        print(analyse_perf(a.analyse) if a.analyse.suffix == ".perf" else analyse(a.analyse))
        return
    if a.perf and sys.version_info < (3, 13):
        raise SystemExit("--perf: run this with Python 3.13 or later (perf_jit)")
    if a.perf and shutil.which("perf") is None:
        raise SystemExit("--perf: perf is missing (apt-get install linux-perf)")
    if not a.perf and shutil.which("py-spy") is None:
        raise SystemExit("py-spy is missing: bash benchmarks/setup.sh")
    out = a.out or HERE / "out" / f"profile-{a.scenario.replace('+', '-')}-c{a.concurrency}"
    out.parent.mkdir(parents=True, exist_ok=True)
    a.workdir.mkdir(parents=True, exist_ok=True)
    src = srv.export_popframe(a.popframe_rev, a.workdir) if a.popframe_rev else srv.REPO
    corpus_dir = a.workdir / f"corpus-s{a.seed}-u{a.users}-m{a.messages}-{a.scheme.lower()}-b0-h0"
    manifest = corpus_mod.load_or_generate(corpus_dir, users=a.users, messages=a.messages, seed=a.seed,
                                           scheme=a.scheme, big_mb=0, huge=0, lf_fraction=0.05)
    users = sorted(u for u in manifest["users"] if u.startswith("u"))
    kind = a.server + ("+cache" if a.auth_cache else "")
    server = srv.make_server(kind, a.workdir / "profile", corpus_dir, src)
    shutil.rmtree(server.dir, ignore_errors=True)
    if a.perf:
        os.environ["PYTHON_PERF_JIT_SUPPORT"] = "1"  # the server's: jitdump files for perf
    server.start()
    os.environ.pop("PYTHON_PERF_JIT_SUPPORT", None)
    try:
        server.copy_users(users)
        lg = [sys.executable, str(HERE / "loadgen.py"), "--port", str(server.port),
              "--manifest", str(corpus_dir / corpus_mod.MANIFEST)]
        subprocess.run(lg + ["--scenario", "check", "-c", "8", "--max-sessions", str(len(users)),
                             "--duration", "600"], check=True, capture_output=True)
        raw, svg = out.with_suffix(".txt"), out.with_suffix(".svg")
        gil = out.parent / (out.name + "-gil.txt")
        cpu0 = srv.tree_cpu(server.pid)
        if a.perf:
            raw = out.with_suffix(".perf")
            recorded = out.with_suffix(".data")
            pids = ",".join(str(pid) for pid in srv.tree_pids(server.pid))
            spies = [subprocess.Popen(
                ["perf", "record", "-k", "1", "--call-graph", "dwarf,32768", "-F", "149",
                 "-o", str(recorded), "-p", pids, "--", "sleep", str(int(a.duration) + 1)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
        else:
            spies = [subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--rate", str(a.rate),
                                   "--duration", str(int(a.duration) + 3), "--threads", "--nonblocking",
                                   *extra, "--format", fmt, "-o", str(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for fmt, path, extra in (("raw", raw, []), ("raw", gil, ["--gil"]),
                                          ("flamegraph", svg, []))]
        time.sleep(1)
        if a.scenario == "drain+dele":
            server.copy_users(users)
        engine = ["--engine", "c"] if a.loadgen == "c" and a.scenario in ("check", "drain") else []
        r = subprocess.run(lg + ["--scenario", a.scenario, "-c", str(a.concurrency),
                                 "--duration", str(a.duration), *engine],
                           check=True, capture_output=True, text=True)
        result = json.loads(r.stdout)
        cpu = srv.tree_cpu(server.pid) - cpu0
        for spy in spies:
            try:
                spy.wait(timeout=a.duration + 60)
            except subprocess.TimeoutExpired:
                spy.terminate()
                spy.wait(timeout=10)
            if spy.returncode:
                print(f"profiler: {spy.stderr.read().decode()[-500:]}", file=sys.stderr)
        if a.perf:
            jitted = out.with_suffix(".jit.data")
            subprocess.run(["perf", "inject", "--jit", "-i", str(recorded), "-o", str(jitted)],
                           check=True, capture_output=True)
            with open(raw, "w") as script:
                subprocess.run(["perf", "script", "-i", str(jitted)], check=True, stdout=script,
                               stderr=subprocess.DEVNULL)
    finally:
        server.stop()
    print(f"# popframe profile: {a.scenario}, c={a.concurrency}, {a.duration:g}s "
          f"({'git archive of ' + a.popframe_rev if a.popframe_rev else 'working tree'})\n")
    print(f"load: {result['sessions_per_s']:.1f} sessions/s, {result['messages_per_s']:.0f} msg/s, "
          f"{result['mb_per_s']:.1f} MB/s, errors {result['errors']}; server CPU {cpu:.2f}s "
          f"({cpu / result['wall_s']:.2f} cores) incl. the profiler's cost\n")
    if a.perf:
        print(analyse_perf(raw))
        print(f"\nperf script output: {raw}")
        return
    print("# A. every thread, sampled whether or not it holds the GIL (a thread waiting for the GIL\n"
          "#    shows where it stopped: inflates frames right after a blocking call)\n")
    print(analyse(raw))
    print("\n# B. only the thread holding the GIL (where Python-level CPU goes; C work that releases\n"
          "#    the GIL, such as crypt or socket send/recv, is not here)\n")
    print(analyse(gil))
    print(f"\nraw stacks: {raw}, {gil} (GIL holder only)\nflame graph: {svg}")


if __name__ == "__main__":
    main()
