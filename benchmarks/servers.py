"""Start and stop the POP3 servers under test, each on a free 127.0.0.1 port
in a directory of its own, with its own copy of the corpus maildirs; and
measure a server's whole process tree (CPU seconds, RSS, PSS) from /proc.

- ``Popframe``: ``twistd -n pop3`` from this checkout (PYTHONPATH is the repo
  root, so the working tree is what runs), ``--workers N`` when
  ``twistd pop3 --help`` offers it.
- ``Dovecot``: Debian's dovecot (``benchmarks/setup.sh`` installs it), run as
  ``dovecot -F -c DIR/dovecot.conf``; the config is written by
  :func:`dovecot_config` and every setting is explained in benchmarks/README.md.
- ``probe_twisted_mail``: Twisted's own ``twistd mail`` POP3, tried once.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DOVECOT_USER = "popbench"


def corpus_for_dovecot(corpus: Path) -> None:
    """Give the corpus's message files to popbench (once), so the hard-linked
    copies Dovecot's mail processes read are theirs."""
    pw = pwd.getpwnam(DOVECOT_USER)
    marker = corpus / ".owned-by-popbench"
    if not marker.exists():
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(corpus / "maildirs")], check=True)
        marker.touch()


def twistd(python: str | None = None) -> list[str]:
    """The twistd of this Python, or of ``python`` (the pyenv shim could
    pick another)."""
    python = python or sys.executable
    sibling = Path(python).parent / "twistd"
    if sibling.exists():
        return [str(sibling)]
    return [python, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_greeting(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                greeting = s.recv(512).decode("latin-1").strip()
                s.sendall(b"QUIT\r\n")
                if greeting.startswith("+OK"):
                    return greeting
                last = RuntimeError(f"greeting {greeting!r}")
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"no POP3 greeting on 127.0.0.1:{port} within {timeout}s: {last}")


# -- /proc accounting -----------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin-1")
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()  # fields from 3 (state) on


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of the tree: utime+stime of each live process plus the
    cutime+cstime of children it reaped (Dovecot's mail processes exit after
    their session and are reaped by the master, so their CPU lands there).
    """
    total = 0
    for pid in tree_pids(root):
        f = _stat_fields(pid)
        if f:  # utime stime cutime cstime are fields 14-17, here 11-14
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def tree_rss(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def tree_pss(root: int) -> int:
    """Proportional set size: shared pages split between the processes that
    share them, so N forked processes are not counted N times."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            pass
    return total


class TreeSampler:
    """Samples a tree's RSS (every ``interval`` s) and PSS (every 4th) in a
    thread, keeping the peaks; ``stop()`` returns (peak RSS, peak PSS, samples)."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._sample(True)
        self._thread.start()
        return self

    def _sample(self, pss: bool) -> None:
        self.peak_rss = max(self.peak_rss, tree_rss(self.root))
        if pss:
            self.peak_pss = max(self.peak_pss, tree_pss(self.root))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(self.samples % 4 == 0)

    def stop(self) -> tuple[int, int, int]:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(True)
        return self.peak_rss, self.peak_pss, self.samples


# -- servers ------------------------------------------------------------------------


def make_certificate(directory: Path) -> None:
    """A self-signed ECDSA P-256 certificate for localhost (cert.pem, key.pem):
    the same one type for every server, as current deployments use."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=localhost", "-days", "30",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
                   check=True, capture_output=True)


class Server:
    """One server under test.  ``name`` is what the tables show."""

    name = "server"

    def __init__(self, workdir: Path, corpus: Path) -> None:
        self.dir = workdir / self.name
        self.corpus = corpus
        self.maildirs = self.dir / "maildirs"
        self.port = 0
        #: Also listen with implicit TLS (``tls_port``), with the certificate
        #: ``make_certificate`` writes into the server's directory.
        self.tls = False
        self.tls_port = 0
        self.proc: subprocess.Popen | None = None
        self.log: Path = self.dir / "server.log"

    # maildir copies
    def owner(self) -> tuple[int, int] | None:
        return None

    def copy_users(self, users: list[str]) -> float:
        """Give this server a fresh copy of these users' maildirs (outside
        any timed run); returns the seconds it took.

        The copy is of the directories; the message files are hard links to
        the corpus's (``cp -al``): 100,000 messages copy in seconds, not
        minutes.  Safe because neither server writes into a message file:
        DELE unlinks this copy's link, a rename renames this copy's link.
        The corpus's files belong to popbench (see :func:`corpus_for_dovecot`)
        so Dovecot can read them; popframe runs as root and reads anything.
        """
        t0 = time.monotonic()
        self.maildirs.mkdir(parents=True, exist_ok=True)
        for u in users:
            if (self.maildirs / u).exists():
                shutil.rmtree(self.maildirs / u)
        src = self.corpus / "maildirs"
        for i in range(0, len(users), 200):
            batch = [str(src / u) for u in users[i:i + 200]]
            subprocess.run(["cp", "-al", *batch, str(self.maildirs)], check=True)
        owner = self.owner()
        if owner:  # the directories are new: make them the mail user's
            subprocess.run(["find", *[str(self.maildirs / u) for u in users], "-type", "d",
                            "-exec", "chown", f"{owner[0]}:{owner[1]}", "{}", "+"], check=True)
        return time.monotonic() - t0

    def remaining_messages(self, users: list[str]) -> int:
        n = 0
        for u in users:
            for sub in ("cur", "new"):
                try:
                    n += sum(1 for e in os.scandir(self.maildirs / u / "Maildir" / sub) if e.is_file())
                except FileNotFoundError:
                    pass
        return n

    # process
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.maildirs.mkdir(exist_ok=True)
        self.maildirs.chmod(0o755)
        self.port = free_port()
        if self.tls:
            self.tls_port = free_port()
            make_certificate(self.dir)
        self.prepare()
        with open(self.dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(self.command(), cwd=self.dir, env=self.env(), stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            self.greeting = wait_for_greeting(self.port, proc=self.proc)
        except Exception as error:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.dir}/stdout.log and {self.log}") from error

    def prepare(self) -> None:
        pass

    def database_cpu(self) -> float:
        """CPU seconds of a database server this one depends on (0: none)."""
        return 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session's group
            self.proc.wait(timeout=5)


def export_popframe(rev: str, dest: Path) -> Path:
    """A snapshot of commit ``rev`` of this repository (``git archive``), so
    a benchmark runs a fixed popframe while others edit the working tree.
    ``rev="worktree"``: a copy of the working tree's popframe/ and twisted/
    as they are now (uncommitted changes included, and the C part as last
    built).  A commit's C part is built for the benchmarks' interpreter."""
    if rev == "worktree":
        target = dest / f"popframe-worktree-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__", "dropin.cache")
        for part in ("popframe", "twisted"):
            shutil.copytree(REPO / part, target / part, ignore=ignore)
        return target
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", rev + "^{commit}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    target = dest / f"popframe-{commit[:12]}"
    if not (target / "popframe").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {commit} failed")
        if (target / "setup.py").exists():  # its C part (SHA512-CRYPT), as pip builds it
            subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                           cwd=target, check=True, capture_output=True)
    return target


@functools.cache
def _popframe_help(src: Path) -> str:
    return subprocess.run([*twistd(), "pop3", "--help"], cwd=src,
                          env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True,
                          text=True, timeout=60).stdout


def popframe_has_option(name: str, src: Path = REPO) -> bool:
    """Whether this checkout's ``twistd pop3`` knows ``name`` (older
    revisions, as --popframe-rev may run, do not)."""
    return name in _popframe_help(src)


def popframe_has_workers(src: Path = REPO) -> bool:
    return popframe_has_option("--workers", src)


class Popframe(Server):
    """``src``: the directory popframe runs from (default: this checkout)."""

    def __init__(self, workdir: Path, corpus: Path, workers: int | None = None,
                 src: Path = REPO, auth_cache: bool = False, reactor: str | None = None,
                 revision: str | None = None, python: str | None = None) -> None:
        self.workers = workers
        self.reactor = reactor
        self.python = python  # another interpreter's venv (with popframe's dependencies)
        self.src = src
        self.auth_cache = auth_cache
        self.backlog: int | None = None  # None: Twisted's default (50)
        self.name = (("popframe" if not workers else f"popframe-w{workers}") + ("+cache" if auth_cache else "")
                     + (f"+{reactor}" if reactor else "") + (f"+py={python}" if python else "")
                     + (f"@{revision}" if revision else ""))
        super().__init__(workdir, corpus)

    def command(self) -> list[str]:
        reactor = ["-r", self.reactor] if self.reactor else []
        cmd = [*twistd(self.python), "-n", "--pidfile=", f"--logfile={self.log}", *reactor, "pop3",
               "--listen", f"tcp:{self.port}:interface=127.0.0.1"
               + (f":backlog={self.backlog}" if self.backlog else ""),
               "--store", f"maildir:{self.maildirs}/%u/Maildir",
               "--auth", f"passwd-file:{self.corpus / 'passwd'}"]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        elif popframe_has_workers(self.src):
            cmd += ["--workers", "1"]  # "popframe" is one process, whatever the default
        if popframe_has_option("--max-connections-per-ip", self.src):
            # The load generator is one address with up to 256 sessions.
            cmd += ["--max-connections-per-ip", "0"]
        if self.tls:
            cmd += ["--tls-cert", str(self.dir / "cert.pem"), "--tls-key", str(self.dir / "key.pem"),
                    "--listen", f"implicit-tls:tcp:{self.tls_port}:interface=127.0.0.1"]
        if self.auth_cache:
            if not popframe_has_option("--auth-cache-ttl", self.src):
                raise RuntimeError(f"{self.src}: this popframe has no --auth-cache-ttl")
            cmd += ["--auth-cache-ttl", "3600"]
        return cmd

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src)}


def dovecot_config(base: Path, port: int, maildirs: Path, passwd: Path, log: Path,
                   user: str = DOVECOT_USER, hash_in_workers: bool = False, tls_port: int = 0, *,
                   group: str | None = None, uidl_format: str = "%f", extra: str = "") -> str:
    """Dovecot 2.3 settings, tuned as a sysadmin would for a 2-core POP3-only
    box; each choice is explained in benchmarks/README.md.  ``group``,
    ``uidl_format`` and ``extra`` (settings appended) serve the tests that
    run Dovecot as the server popframe takes over (tests/dovecot_support.py)."""
    return f"""\
# Written by benchmarks/servers.py; see benchmarks/README.md for each choice.
protocols = pop3
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {log}
info_log_path = {log}
instance_name = popbench-{port}
{f"ssl = yes{chr(10)}ssl_cert = <{base}/cert.pem{chr(10)}ssl_key = <{base}/key.pem{chr(10)}"
 f"ssl_min_protocol = TLSv1.2" if tls_port else "ssl = no"}
disable_plaintext_auth = no
auth_mechanisms = plain
default_client_limit = 4096
default_process_limit = 1024
default_vsz_limit = 1G

passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={user} gid={group or user} home={maildirs}/%u
}}
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
auth_cache_verify_password_with_worker = {"yes" if hash_in_workers else "no"}

mail_location = maildir:{maildirs}/%u/Maildir
mail_uid = {user}
mail_gid = {user}
first_valid_uid = 1
maildir_very_dirty_syncs = yes
mail_fsync = optimized

pop3_uidl_format = {uidl_format}
pop3_no_flag_updates = yes
pop3_lock_session = yes

service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {tls_port}
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1024
}}
service pop3 {{
  process_limit = 1024
  service_count = 100
  process_min_avail = 2
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{extra}"""


class Dovecot(Server):
    """``hash_in_workers``: verify passwords in auth-worker processes
    (``auth_cache_verify_password_with_worker = yes``) rather than in the
    one auth process: the ``dovecot+workers`` server."""

    def __init__(self, workdir: Path, corpus: Path, hash_in_workers: bool = False) -> None:
        self.hash_in_workers = hash_in_workers
        self.name = "dovecot+workers" if hash_in_workers else "dovecot"
        super().__init__(workdir, corpus)

    def owner(self) -> tuple[int, int]:
        pw = pwd.getpwnam(DOVECOT_USER)
        return pw.pw_uid, pw.pw_gid

    def prepare(self) -> None:
        (self.dir / "run").mkdir(exist_ok=True)
        (self.dir / "state").mkdir(exist_ok=True)
        conf = dovecot_config(self.dir, self.port, self.maildirs, self.corpus / "passwd", self.log,
                              hash_in_workers=self.hash_in_workers, tls_port=self.tls_port)
        (self.dir / "dovecot.conf").write_text(conf)
        # The mail processes (popbench) and the auth process (dovecot) must
        # reach the maildirs and the passwd-file: open up what we created,
        # refuse to touch anyone else's directories.
        for p in (self.dir, self.maildirs, self.corpus, self.corpus / "maildirs"):
            p.chmod((p.stat().st_mode & 0o777) | 0o055)
        for p in (*self.dir.parents, *self.corpus.parents):
            if p.stat().st_mode & 0o001 == 0:
                raise RuntimeError(f"{p} is not searchable by others: Dovecot's processes (user "
                                   f"{DOVECOT_USER}) cannot reach the maildirs; use --workdir under /tmp")
        (self.corpus / "passwd").chmod(0o644)
        corpus_for_dovecot(self.corpus)

    def command(self) -> list[str]:
        return ["dovecot", "-F", "-c", str(self.dir / "dovecot.conf")]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(["dovecot", "-c", str(self.dir / "dovecot.conf"), "stop"],
                           capture_output=True, timeout=30)
        super().stop()


class Ceiling(Server):
    """``benchmarks/ceiling/pop3_ceiling.c``, compiled into the server's
    directory: the same corpus from memory, the same password check, no
    disk, no locks: what this machine allows (issue 18's floor proof)."""

    name = "ceiling"

    def __init__(self, workdir: Path, corpus: Path, workers: int = 2) -> None:
        self.workers = workers
        super().__init__(workdir, corpus)

    def prepare(self) -> None:
        if self.tls:
            raise RuntimeError("the ceiling server speaks no TLS")
        source = REPO / "benchmarks" / "ceiling" / "pop3_ceiling.c"
        subprocess.run(["gcc", "-O2", "-o", str(self.dir / "pop3_ceiling"), str(source),
                        "-lcrypto", "-lcrypt"], check=True)

    def command(self) -> list[str]:
        # The corpus itself: it is read once into memory, and never written.
        return [str(self.dir / "pop3_ceiling"), str(self.port), str(self.corpus / "maildirs"),
                str(self.corpus / "passwd"), str(self.workers)]


class _Prototype(Server):
    """A launcher in ``benchmarks/ceiling/`` that forks ``workers``
    processes of popframe's own factory on one listening socket, given
    ``twistd pop3``'s options after ``--``.  Plain TCP only."""

    script = ""
    python = sys.executable

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO)}

    def prepare(self) -> None:
        if self.tls:
            raise RuntimeError(f"the {self.name} prototype speaks no TLS")

    def launcher_args(self) -> list[str]:
        raise NotImplementedError

    def command(self) -> list[str]:
        return [self.python, str(REPO / "benchmarks" / "ceiling" / self.script),
                *self.launcher_args(), "--",
                "--store", f"maildir:{self.maildirs}/%u/Maildir",
                "--auth", f"passwd-file:{self.corpus / 'passwd'}",
                "--max-connections-per-ip", "0"]


class PopframeOnUvloop(_Prototype):
    """``benchmarks/ceiling/popframe_on_uvloop.py``: popframe's factory (the
    same options, store, checkers, core and login line) with uvloop's own
    transports under ``POP3ServerProtocol`` instead of Twisted's reactor
    and ``tcp.Connection``: issue 18's prototype of another connection loop."""

    script = "popframe_on_uvloop.py"

    def __init__(self, workdir: Path, corpus: Path, workers: int = 2, fast_retr: bool = False) -> None:
        self.workers = workers
        self.fast_retr = fast_retr
        self.name = f"uvbridge-w{workers}" + ("+fastretr" if fast_retr else "")
        super().__init__(workdir, corpus)

    def launcher_args(self) -> list[str]:
        return [str(self.port), str(self.workers), str(self.log),
                *(["--fast-retr"] if self.fast_retr else [])]


class PopframeCompiled(_Prototype):
    """``benchmarks/ceiling/popframe_compiled.py``: popframe's factory on
    the epoll reactor, with a session's transaction loop (STAT, LIST, UIDL,
    RETR of wire-ready files) served in C from its first RETR on
    (``pop3_transaction.c``, compiled here for the interpreter that runs
    it): issue 18's prototype of a compiled hot path.  ``handoff=False``
    (``+python``): the same launcher without the C, its baseline."""

    script = "popframe_compiled.py"

    def __init__(self, workdir: Path, corpus: Path, workers: int = 2, handoff: bool = True,
                 python: str | None = None) -> None:
        self.workers = workers
        self.handoff = handoff
        self.python = python or sys.executable
        self.name = (f"compiled-w{workers}" + ("" if handoff else "+python")
                     + (f"+py={python}" if python else ""))
        super().__init__(workdir, corpus)

    def prepare(self) -> None:
        super().prepare()
        include, suffix = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']);"
             " print(sysconfig.get_config_var('EXT_SUFFIX'))"],
            check=True, capture_output=True, text=True).stdout.split()
        source = REPO / "benchmarks" / "ceiling" / "pop3_transaction.c"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{include}",
                        "-o", str(self.dir / f"_pop3_transaction{suffix}"), str(source)],
                       check=True)

    def launcher_args(self) -> list[str]:
        return [str(self.dir), str(self.port), str(self.workers), str(self.log),
                *([] if self.handoff else ["--python"])]


def make_server(kind: str, workdir: Path, corpus: Path, popframe_src: Path = REPO) -> Server:
    """``dovecot``, ``popframe``, ``popframe-wN`` (--workers N); a popframe
    name may end in ``+cache`` (--auth-cache-ttl 3600), ``+uvloop``, ``+asyncio``,
    ``+poll`` (``twistd -r``) and ``+py=PYTHON`` (another interpreter, from a venv with
    popframe's dependencies: ``+py=/tmp/v313/bin/python``); ``ceiling`` (the
    minimal C server, two processes); ``uvbridge-wN`` (popframe on uvloop's
    own transports, N processes, ``+fastretr``: with RETR's short path:
    benchmarks/ceiling/popframe_on_uvloop.py); ``compiled-wN`` (popframe
    with its transaction loop served in C from the first RETR, ``+python``: the same launcher
    without it, ``+py=PYTHON``: benchmarks/ceiling/popframe_compiled.py); ``sql-*`` (sql_servers.py) and
    ``ldap-wN[+ldapcache]`` (ldap_servers.py).  A popframe or sql-* name may end in ``@REV``:
    that commit (``git archive``), so two revisions run side by side in one
    run (``popframe-w2@0f59750,popframe-w2,dovecot``: before and after)."""
    kind, at, rev = kind.partition("@")
    if at and not kind.startswith(("popframe", "sql-")):
        raise ValueError(f"@REV is for popframe servers, not {kind!r}")
    if kind == "ceiling":
        return Ceiling(workdir, corpus)
    if kind.startswith("uvbridge-w"):
        base, plus, option = kind.partition("+")
        if plus and option != "fastretr":
            raise ValueError(f"unknown server {kind!r}")
        return PopframeOnUvloop(workdir, corpus, int(base[len("uvbridge-w"):]), fast_retr=bool(plus))
    if kind.startswith("compiled-w"):
        base, *extra = kind.split("+")
        pythons = [o[3:] for o in extra if o.startswith("py=")]
        if set(extra) - {"python", *(f"py={p}" for p in pythons)} or len(pythons) > 1:
            raise ValueError(f"unknown server {kind!r}")
        return PopframeCompiled(workdir, corpus, int(base[len("compiled-w"):]),
                                handoff="python" not in extra, python=pythons[0] if pythons else None)
    if kind.startswith("sql-"):  # popframe's SQL store: benchmarks/sql_servers.py
        from sql_servers import make_sql_server

        return make_sql_server(kind, workdir, corpus,
                               export_popframe(rev, workdir) if at else popframe_src,
                               rev if at else None)
    if kind.startswith("ldap"):  # popframe with LDAP users: benchmarks/ldap_servers.py
        from ldap_servers import make_ldap_server

        return make_ldap_server(kind, workdir, corpus, popframe_src)
    if kind in ("dovecot", "dovecot+workers"):
        return Dovecot(workdir, corpus, hash_in_workers=kind == "dovecot+workers")
    base, *options = kind.split("+")
    reactors = [o for o in options if o in ("uvloop", "asyncio", "epoll", "poll")]
    pythons = [o for o in options if o.startswith("py=")]
    if (set(options) - {"cache", *reactors, *pythons} or len(reactors) > 1 or len(pythons) > 1
            or not base.startswith("popframe")):
        raise ValueError(f"unknown server {kind!r}")
    workers = int(base[len("popframe-w"):]) if base.startswith("popframe-w") else None
    if base != "popframe" and workers is None:
        raise ValueError(f"unknown server {kind!r}")
    return Popframe(workdir, corpus, workers=workers,
                    src=export_popframe(rev, workdir) if at else popframe_src,
                    auth_cache="cache" in options, reactor=reactors[0] if reactors else None,
                    revision=rev if at else None, python=pythons[0][3:] if pythons else None)


def probe_twisted_mail(workdir: Path, timeout: float = 20.0) -> str:
    """Try Twisted's own ``twistd mail`` POP3 with one maildir user; return
    a one-line verdict."""
    import poplib

    base = workdir / "twisted-mail"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    port = free_port()
    # 1. The documented way: --user=joe=secret.
    r = subprocess.run([*twistd(), "-n", "--pidfile=", "mail", "--no-smtp",
                        "--pop3", f"tcp:{port}:interface=127.0.0.1",
                        "-d", f"example.com={base / 'ex'}", "-u", "joe=secret"],
                       capture_output=True, text=True, timeout=timeout, cwd=base)
    tail = (r.stderr or r.stdout).strip().splitlines()
    first = f"`--user` fails at start-up: {tail[-1] if tail else r.returncode}"
    # 2. A user written into the domain's DirDBM by hand, then USER/PASS.
    code = ("from twisted.persisted import dirdbm; import os, sys\n"
            "d = dirdbm.open(sys.argv[1] + '/passwd'); d[b'joe'] = b'secret'\n"
            "[os.makedirs(sys.argv[1] + '/joe/' + s, exist_ok=True) for s in ('cur', 'new', 'tmp')]\n"
            "open(sys.argv[1] + '/joe/cur/1700000000.V1I1M1.host:2,', 'wb').write(b'Subject: x\\r\\n\\r\\nhi\\r\\n')\n")
    (base / "ex").mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(base / "ex")], check=True)
    proc = subprocess.Popen([*twistd(), "-n", "--pidfile=", "mail", "--no-smtp",
                             "--pop3", f"tcp:{port}:interface=127.0.0.1", "-d", f"example.com={base / 'ex'}"],
                            cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_greeting(port, timeout=timeout, proc=proc)
        results = []
        for user in ("joe@example.com", "joe"):
            try:
                c = poplib.POP3("127.0.0.1", port, timeout=5)
                c.user(user)
                c.pass_("secret")
                results.append(f"{user}: login ok, STAT {c.stat()}")
                c.quit()
            except Exception as e:  # noqa: BLE001 - we report whatever happens
                results.append(f"{user}: {e}")
        second = "with a hand-made DirDBM user: " + "; ".join(results)
    except Exception as e:  # noqa: BLE001
        second = f"with a hand-made DirDBM user it did not start: {e}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return f"{first}; {second}"
