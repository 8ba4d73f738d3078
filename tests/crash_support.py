"""Machinery for tests/test_crash_safety.py: servers to SIGKILL, mail whose
bytes can be checked from its name alone, a delivering process, a minimal
POP3 client, inotify, tmpfs.

Imports nothing but the standard library at module level: the delivering
process and the fork server import this module too.

The fork server ("zygote"): a kill point needs a fresh ``twistd pop3`` each
time, and starting Python with Twisted, cryptography and the plugins costs
1-3 s of wall time on a loaded 2-core machine.  So one process imports all
that once, without installing a reactor or starting a thread, and forks a
child per server; the child runs ``twisted.scripts.twistd.run()`` with the
same argv as ``twistd -n pop3 ...`` (reactor, plugins, options, service and
all), so every server killed is a real, whole, single-process ``twistd
pop3`` (``--workers 1``).
"""

from __future__ import annotations

import base64
import ctypes
import errno
import functools
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

TESTS = os.path.dirname(os.path.abspath(__file__))
LISTENING = re.compile(rb"POP3Factory(?: \(TLS\))? starting on (\d+)")
CRLF = b"\r\n"
_IMPORT_SELF = f"import sys; sys.path.insert(0, {TESTS!r}); import crash_support; "

# -- mail whose bytes follow from its name --------------------------------------------------------
#
# ``1700000123.M123TL4567.crash`` (or ``...crash,W=4567``): tag T (the test)
# or D (the delivering process), a counter unique per tag, the size.  The
# content is a function of the name, so any file in cur/ or new/ can be
# checked byte for byte, and a half-written or altered one is caught.

_NAME = re.compile(r"^(\d+)\.M(\d+)([TD])L(\d+)\.crash(?:,W=(\d+))?$")
_HEADER = b"Subject: %s\r\n\r\n"


def message_name(tag: str, counter: int, size: int) -> str:
    size = max(size, 80)
    name = f"{1700000000 + counter}.M{counter}{tag}L{size}.crash"
    return name + (f",W={size}" if counter % 2 else "")


def parse_name(base: str) -> tuple[str, int, int] | None:
    """(tag, counter, size) of one of our names, else None."""
    match = _NAME.match(base)
    if not match or (match.group(5) is not None and match.group(5) != match.group(4)):
        return None
    return match.group(3), int(match.group(2)), int(match.group(4))


@functools.lru_cache(maxsize=2048)
def message_bytes(base: str) -> bytes:
    """The one content ``base`` may have: CRLF lines (so the wire form is
    the stored form), some starting with a dot (dot-stuffing), exactly the
    size in the name (which is also the ``,W=`` size)."""
    parsed = parse_name(base)
    assert parsed is not None, base
    size = parsed[2]
    rng = random.Random(base)
    out = bytearray(_HEADER % base.encode())
    alphabet = base64.b64encode(rng.randbytes(size)).replace(b"=", b"x")
    used = 0
    while size - len(out) > 2:
        room = size - len(out) - 2
        length = min(rng.randint(1, 100), room)
        if room - length == 1:  # leave 0 or at least 3: a line is >= 1 char + CRLF
            length = room
        chunk = alphabet[used : used + length]
        used += length
        if rng.random() < 0.08:
            chunk = b"." + chunk[1:]
        out += chunk + CRLF
    out += CRLF[: size - len(out)]
    assert len(out) == size, (base, len(out), size)
    return bytes(out)


def random_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.70:
        return rng.randint(300, 3000)
    if roll < 0.96:
        return rng.randint(3000, 30000)
    return rng.randint(100_000, 200_000)  # large enough to be mid-RETR at the kill


def deliver(maildir: str | Path, base: str, chunks: int = 1, pause: float = 0.0) -> None:
    """Deliver as an MTA does: write tmp/BASE, then rename it into new/."""
    data = message_bytes(base)
    tmp = os.path.join(maildir, "tmp", base)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        step = max(1, len(data) // chunks)
        for start in range(0, len(data), step):
            os.write(fd, data[start : start + step])
            if pause:
                time.sleep(pause)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(maildir, "new", base))


def deliverer_main(argv: list[str]) -> None:
    """``python -c ... deliverer_main ROOT LOG SEED USER...``: deliver to
    ROOT/USER/Maildir round-robin, a few ms apart, writing each message in
    three pieces so a half-written tmp/ file exists for a while; log
    ``USER BASE`` only after the rename.  Bounded, and exits with its parent.
    """
    root, log, seed, *users = argv
    die_with_parent()
    rng = random.Random(int(seed))
    parent = os.getppid()
    users = users * 2 + users[:1]  # the first user gets more: uneven load
    logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for counter in range(1, 200_000):
        if os.getppid() != parent:
            return
        user = users[counter % len(users)]
        base = message_name("D", counter, random_size(rng))
        deliver(os.path.join(root, user, "Maildir"), base, chunks=3, pause=0.0002)
        os.write(logfd, f"{user} {base}\n".encode())
        time.sleep(rng.uniform(0.003, 0.012))


class Deliverer:
    """The delivering process: SIGCONT while sessions run, SIGSTOP (frozen
    wherever it is, maybe mid-write) while the test inspects the maildirs."""

    def __init__(self, root: Path, users: list[str], seed: int) -> None:
        self.log = root / "delivered.log"
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             _IMPORT_SELF + "crash_support.deliverer_main(sys.argv[1:])",
             str(root / "mail"), str(self.log), str(seed), *users],
        )
        self.pause()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def delivered(self) -> dict[str, set[str]]:
        """user -> base names whose rename into new/ has completed."""
        found: dict[str, set[str]] = {}
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return found
        for line in text.splitlines():
            user, _, base = line.partition(" ")
            found.setdefault(user, set()).add(base)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


# -- the fork server -------------------------------------------------------------------------------


def _preload() -> None:
    import importlib

    from twisted.application.service import IServiceMaker
    from twisted.cred.strcred import ICheckerFactory
    from twisted.plugin import getPlugins

    from popframe.interfaces import IMaildropStoreFactory

    for module in ("twisted.application.app", "twisted.scripts.twistd",
                   "twisted.internet.epollreactor",  # the module only: not installed
                   "popframe.auth.passwdfile", "popframe.server", "popframe.service",
                   "popframe.stores.maildir", "popframe.tap"):
        importlib.import_module(module)

    for interface in (IServiceMaker, ICheckerFactory, IMaildropStoreFactory):
        list(getPlugins(interface))
    # A reactor or a thread made here would be shared by every child.
    assert "twisted.internet.reactor" not in sys.modules
    import threading

    assert threading.active_count() == 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (even while SIGSTOPped), so
    a killed test run leaves no server or delivering process behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(1)


def zygote_main() -> None:
    """Read one JSON request per line; fork a ``twistd pop3`` per request;
    answer with the child's pid.  Children are reaped by the kernel."""
    die_with_parent()
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    requests = sys.stdin.buffer
    while True:
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _run_child(request: dict) -> None:
    code = 1
    try:
        die_with_parent()
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        os.chdir(request["cwd"])
        if request.get("drop_dac"):
            drop_dac_capabilities()
        sys.argv = ["twistd", "-n", "--pidfile=", "--logfile=-", "pop3", *request["args"]]
        from twisted.scripts.twistd import run

        run()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must reach os._exit
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def drop_dac_capabilities() -> None:
    """Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: file modes
    apply to it, so ``chmod 000`` makes a root-owned file unreadable."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = ctypes.create_string_buffer(24)  # two {effective, permitted, inheritable}
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    words = list(struct.unpack("6I", data.raw))
    mask = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    words[0] &= mask  # effective
    words[1] &= mask  # permitted
    words[2] &= mask  # inheritable
    if libc.capset(header, struct.pack("6I", *words)) != 0:
        raise OSError(ctypes.get_errno(), "capset")


@dataclass
class Server:
    """One forked ``twistd pop3``, held by a pidfd (no pid-reuse races)."""

    pid: int
    pidfd: int
    log: Path
    ports: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.ports[0]

    def alive(self) -> bool:
        return not select.select([self.pidfd], [], [], 0)[0]

    def wait_listening(self, listeners: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_bytes() if self.log.exists() else b""
            self.ports = [int(m.group(1)) for m in LISTENING.finditer(text)]
            if len(self.ports) >= listeners:
                return
            if not self.alive():
                break
            time.sleep(0.003)
        self.kill()
        raise AssertionError(f"server did not start: {self.log_text()}")

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone (its flocks with it)."""
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait_dead(10)

    def stop(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
            self.wait_dead(10)
        except (ProcessLookupError, AssertionError):
            self.kill()

    def wait_dead(self, timeout: float) -> None:
        if not select.select([self.pidfd], [], [], timeout)[0]:
            raise AssertionError(f"server {self.pid} still alive after {timeout} s")

    def close(self) -> None:
        if self.pidfd >= 0:
            if self.alive():
                self.kill()
            os.close(self.pidfd)
            self.pidfd = -1

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


class Zygote:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             _IMPORT_SELF + "crash_support.zygote_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.servers: list[Server] = []
        self._lock = threading.Lock()

    def spawn(self, args: list[str], cwd: Path, log: Path, *, drop_dac: bool = False,
              listeners: int = 1, wait: bool = True) -> Server:
        """Fork a server; unless ``wait`` is false, wait until it listens."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"args": args, "cwd": str(cwd), "log": str(log), "drop_dac": drop_dac}
        with self._lock:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            # The zygote imports Twisted first: allow for a slow machine.
            if not select.select([self.process.stdout], [], [], 120)[0]:
                raise AssertionError("the fork server did not answer")
            pid = int(self.process.stdout.readline())
            server = Server(pid, os.pidfd_open(pid), log)
            self.servers.append(server)
        if wait:
            server.wait_listening(listeners)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- a minimal POP3 client ---------------------------------------------------------------------------


class Killed(Exception):
    """The connection died (the server was killed)."""


class Client:
    """Just enough POP3 to control exactly when each byte goes out."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except OSError as e:
            raise Killed(str(e)) from e
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def send(self, command: str) -> None:
        try:
            self.sock.sendall(command.encode() + CRLF)
        except OSError as e:
            raise Killed(str(e)) from e

    def line(self) -> bytes:
        try:
            line = self.file.readline(1 << 16)
        except OSError as e:
            raise Killed(str(e)) from e
        if not line.endswith(b"\n"):
            raise Killed(f"connection closed ({line!r})")
        return line.rstrip(b"\r\n")

    def command(self, command: str) -> bytes:
        self.send(command)
        return self.line()

    def lines(self, into: bytearray | None = None) -> list[bytes]:
        """The body of a multi-line reply, dot-unstuffed; with ``into``,
        each line is also appended there (CRLF-terminated) as it arrives."""
        body = []
        while True:
            line = self.line()
            if line == b".":
                return body
            if line.startswith(b"."):
                line = line[1:]
            body.append(line)
            if into is not None:
                into += line + CRLF

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


# -- the maildir as it is on disk -----------------------------------------------------------------------


JOURNAL = "popframe.journal"


@dataclass
class DiskState:
    files: dict[str, list[str]]  # base -> ["cur/NAME", ...]
    journal: set[str] | None  # base names in popframe.journal, if one exists
    journal_temporary: bool  # a half-written journal (.popframe.journal.*.tmp)
    bad: list[str]  # altered, half-written or foreign files


def base_of(name: str) -> str:
    return name.partition(":")[0]


def scan(maildir: Path) -> DiskState:
    files: dict[str, list[str]] = {}
    bad = []
    for sub in ("cur", "new"):
        for name in sorted(os.listdir(maildir / sub)):
            if name.startswith("."):
                continue
            base = base_of(name)
            files.setdefault(base, []).append(f"{sub}/{name}")
            if parse_name(base) is None:
                bad.append(f"{sub}/{name}: not a message this test wrote")
                continue
            data = (maildir / sub / name).read_bytes()
            if data != message_bytes(base):
                bad.append(f"{sub}/{name}: {len(data)} bytes differ from the "
                           f"{len(message_bytes(base))} delivered")
    journal = None
    try:
        entries = json.loads((maildir / JOURNAL).read_text())["delete"]
        journal = {base_of(entry.partition("/")[2]) for entry in entries}
    except FileNotFoundError:
        pass
    temporary = any(n.startswith(f".{JOURNAL}.") for n in os.listdir(maildir))
    return DiskState(files, journal, temporary, bad)


# -- inotify ---------------------------------------------------------------------------------------------


IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
_EVENT = struct.Struct("iIII")


class Inotify:
    """Watch a maildir from outside the server: the kill lands at a point
    of the commit seen on disk, with no hook in the server."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.paths: dict[int, str] = {}

    def watch(self, path: str | Path, mask: int) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(path)), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch", str(path))
        self.paths[wd] = str(path)

    def events(self, timeout: float) -> list[tuple[str, int, str]]:
        """(watched path, mask, name) of what happened, waiting up to ``timeout``."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out = []
        offset = 0
        while offset < len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].rstrip(b"\0").decode()
            offset += length
            out.append((self.paths.get(wd, "?"), mask, name))
        return out

    def close(self) -> None:
        os.close(self.fd)


# -- fanotify: hold the server at an open() ---------------------------------------------------

FAN_CLOEXEC = 0x1
FAN_CLASS_CONTENT = 0x4
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_OPEN_PERM = 0x10000
FAN_ONDIR = 0x40000000
FAN_ALLOW = 0x1
_AT_FDCWD = -100
_METADATA = struct.Struct("IBBHQii")


class OpenGate:
    """Every open() on a mount waits for this process's answer
    (fanotify ``FAN_OPEN_PERM``, root only).  ``arm(pid, path, action)``:
    the next open of ``path`` by ``pid`` first runs ``action`` (say, a
    read-only remount), then proceeds: the server is held at an exact point
    of its commit with no hook in its code.  Every open is allowed."""

    def __init__(self, mount: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                       ctypes.c_int, ctypes.c_char_p]
        self.fd = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC,
                                     os.O_RDONLY | os.O_CLOEXEC | os.O_LARGEFILE)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init")
        if libc.fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_PERM | FAN_ONDIR,
                              _AT_FDCWD, os.fsencode(str(mount))) != 0:
            code = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(code, "fanotify_mark", str(mount))
        self._rule: tuple[int, Callable[[str], bool], Callable[[], object]] | None = None
        self.fired = threading.Event()
        self.errors: list[BaseException] = []
        self._closing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def arm(self, pid: int, match: Callable[[str], bool], action: Callable[[], object]) -> None:
        """The next open by ``pid`` of a path ``match`` accepts runs
        ``action`` first, on the gate's thread: it must open nothing on the
        mount itself (that open would wait for this very thread)."""
        self.fired.clear()
        self._rule = (pid, match, action)

    def _serve(self) -> None:
        while not self._closing:
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            data = os.read(self.fd, 4096)
            for offset in range(0, len(data), _METADATA.size):
                _, _, _, _, _, fd, pid = _METADATA.unpack_from(data, offset)
                try:
                    rule = self._rule
                    path = os.readlink(f"/proc/self/fd/{fd}") if rule is not None else ""
                    if rule is not None and pid == rule[0] and rule[1](path):
                        self._rule = None
                        try:
                            rule[2]()
                        except BaseException as e:  # noqa: BLE001 - reported by the test
                            self.errors.append(e)
                        self.fired.set()
                finally:
                    os.write(self.fd, struct.pack("iI", fd, FAN_ALLOW))
                    os.close(fd)

    def close(self) -> None:
        self._closing = True
        self._thread.join(5)
        os.close(self.fd)  # anything still waiting is allowed


# -- mounts ---------------------------------------------------------------------------------------------

MS_RDONLY = 1
MS_REMOUNT = 32


def mount_tmpfs(target: Path, options: str) -> str | None:
    """Mount a tmpfs; None on success, else why not."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
    return None


def remount(target: Path, read_only: bool, options: str = "") -> None:
    """remount(2) straight through libc: no fork, so it lands quickly."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = MS_REMOUNT | (MS_RDONLY if read_only else 0)
    data = options.encode() if options else None
    if libc.mount(b"tmpfs", os.fsencode(str(target)), b"tmpfs", flags, data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def fill_file(f: BinaryIO) -> None:
    """Write to an open file until the filesystem is full (bounded: at
    most 1 GiB; the tmpfs is far smaller)."""
    fd = f.fileno()
    for size in (65536, 4096, 512, 1):
        for _ in range(1 << 14):
            try:
                if os.write(fd, b"\0" * size) == 0:
                    break
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break


def fill(directory: Path, what: str) -> list[Path]:
    """Use up the filesystem's blocks (``blocks``) or inodes (``inodes``)
    with files in ``directory``; bounded by the tmpfs size."""
    made = []
    if what == "blocks":
        path = directory / "filler"
        made.append(path)
        with open(path, "wb", buffering=0) as f:
            fill_file(f)
    else:
        for n in range(1 << 16):
            path = directory / f"filler{n}"
            try:
                path.touch()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            made.append(path)
    return made


def retry(function: Callable[[], object], attempts: int = 50, pause: float = 0.05) -> object:
    for attempt in range(attempts):
        try:
            return function()
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)
    return None


if __name__ == "__main__":
    sys.exit("import this module")
