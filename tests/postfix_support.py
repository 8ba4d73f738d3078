"""A throwaway Postfix for tests, configured in a temporary directory on a
loopback port (see the measured recipe the project keeps), started with
``postfix -c DIR/etc start`` and stopped at the end.  Root only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from support.ports import free_port

from popframe.testing import wait_until

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
error     unix  - - n - - error
proxymap  unix  - - n - - proxymap
anvil     unix  - - n - 1 anvil
showq     unix  n - n - - showq
lmtp      unix  - - n - - lmtp
local     unix  - n n - - local
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_available() -> str | None:
    """Why a Postfix cannot run here, or None."""
    if not os.path.exists(POSTFIX):
        return "postfix is not installed (tests/run.sh installs it)"
    if os.geteuid() != 0:
        return "postfix runs only as root"
    return None



class Postfix:
    """One instance; ``root`` is a fresh directory every user can search
    (Postfix's daemons and ``mailbox_command`` run as other users)."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="popframe-postfix-"))
        os.chmod(self.root, 0o711)
        self.etc = self.root / "etc"
        self.etc.mkdir()
        (self.root / "queue").mkdir()
        self.port = free_port()
        self.banner = f"popframe-test-{os.getpid()}-{self.port}"
        main = {
            "compatibility_level": "3.6",
            "queue_directory": f"{self.root}/queue",
            "data_directory": f"{self.root}/data",
            "maillog_file": f"{self.root}/maillog",
            "maillog_file_prefixes": str(self.root),
            "myhostname": "mx.example.test",
            "mydestination": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "",
            "default_transport": "error:no outbound mail",
            "local_header_rewrite_clients": "",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtpd_banner": f"$myhostname ESMTP {self.banner}",
            **settings,
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.etc / "master.cf").write_text(_MASTER.format(port=self.port))

    def start(self, timeout: float = 60) -> None:
        started = subprocess.run([POSTFIX, "-c", str(self.etc), "start"], capture_output=True,
                                 text=True, timeout=timeout)
        if started.returncode != 0:
            raise RuntimeError(f"postfix start: {started.stdout}{started.stderr}{self.log()}")
        def banner() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                return self.banner.encode() in s.recv(1024)

        try:
            wait_until(banner, f"the Postfix banner on {self.port}", timeout, retry_on=(OSError,))
        except AssertionError as error:
            raise RuntimeError(f"{error}:\n{self.log()}") from None

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _runs_as(user: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
    settings = [f"{k}={v}" for k, v in (env or {}).items()]
    try:
        return subprocess.run(["runuser", "-u", user, "--", "env", *settings, *argv],
                              capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _distributions(name: str, seen: set[str]) -> None:
    """``name`` and what it requires, recursively (installed ones only)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    key = name.lower().replace("_", "-")
    if key in seen:
        return
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return
    seen.add(key)
    for text in dist.requires or ():
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "tls"}):
            _distributions(requirement.name, seen)


def python_for(user: str, root: Path) -> str:
    """A command line prefix that runs this popframe as ``user``: this
    interpreter if ``user`` may run it, else the system's ``python3`` (the
    same minor version) with copies of popframe and its dependencies in
    ``root`` (an interpreter under ``/root`` is out of other users' reach)."""
    import shlex
    import sys
    from importlib import metadata

    import popframe

    if _runs_as(user, [sys.executable, "-c", "import popframe.cli.deliver"]):
        return shlex.quote(sys.executable)
    system = "/usr/bin/python3"
    version = f"import sys; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])!r})"
    if not _runs_as(user, [system, "-c", version]):
        raise RuntimeError(f"{user} can run neither {sys.executable} nor a {system} of the same version")
    library = root / "pylib"
    seen: set[str] = set()
    _distributions("popframe", seen)
    for name in sorted(seen - {"popframe"}):
        dist = metadata.distribution(name)
        for file in dist.files or ():
            source = Path(dist.locate_file(file))
            if ".dist-info" in str(file) or not source.is_file() or str(file).startswith(".."):
                continue
            target = library / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    tree = Path(popframe.__file__).resolve().parents[1]
    shutil.copytree(tree / "popframe", library / "popframe", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for plugin in (tree / "twisted" / "plugins").glob("popframe_*.py"):
        shutil.copy2(plugin, library / "twisted" / "plugins" / plugin.name)
    subprocess.run(["chmod", "-R", "a+rX", str(library)], check=True)
    env = {"PYTHONPATH": str(library), "PATH": "/usr/bin:/bin"}
    if not _runs_as(user, [system, "-c", "import popframe.cli.deliver"], env=env):
        raise RuntimeError(f"{user} cannot import popframe from {library}")
    return f"env PYTHONPATH={shlex.quote(str(library))} {system}"
