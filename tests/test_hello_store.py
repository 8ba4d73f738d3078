"""The example third-party backend, ``examples/hello-store``, as a stranger
would use it: installed with pip into a fresh virtual environment next to
popframe, serving mail to ``poplib`` through ``twistd pop3``.  A plugin
module that raises on import sits in the same environment throughout: it
is named with its error, and the other plugins still load and serve.

Delivered mail, which the store serves through its asynchronous
``IMessageBody``, is checked in process against the example's source (a
twistd process has no way in for it yet), and so is the store contract.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import poplib
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import MailHome
from test_packaging import project_copy
from twisted.internet.task import Clock

from popframe.testing import MemoryChecker, ServerProcess, connect_in_memory, start_server

pytestmark = pytest.mark.process

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello-store"

GREETING = "Hello!\n.A line that starts with a dot"
USERS = "alice:wonderland,bob:builder:60"
BROKEN = 'raise ImportError("deliberately broken")\n'


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def twistd(self) -> Path:
        return self.root / "bin" / "twistd"

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.twistd), *args], cwd=cwd, capture_output=True,
                              text=True, timeout=120)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """popframe and the example, each built from a clean copy (pip builds
    in the source tree), in a venv without the system's site-packages;
    then a broken plugin module dropped beside theirs."""
    base = tmp_path_factory.mktemp("hello-venv")
    popframe_source = project_copy(base / "popframe")
    example = shutil.copytree(EXAMPLE, base / "hello-store", ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "dropin.cache"))
    venv.create(base / "venv", with_pip=True)
    env = Venv(base / "venv")
    install = [str(env.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
               str(popframe_source), str(example)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    where = subprocess.run(
        [str(env.python), "-c", "import sysconfig, popframe, hello_store; "
         "print(sysconfig.get_path('purelib')); print(popframe.__file__); print(hello_store.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=base, check=True).stdout.split("\n")
    site_packages = Path(where[0])
    assert all(Path(found).is_relative_to(site_packages) for found in where[1:3]), where
    assert not (site_packages / "twisted" / "plugins" / "hello_store_plugin.py").is_symlink()
    (site_packages / "twisted" / "plugins" / "broken_plugin.py").write_text(BROKEN)
    return env


@contextmanager
def served(env: Venv, cwd: Path, store: str, auth: str, *extra: str) -> Iterator[ServerProcess]:
    """``start_server``, with the venv's twistd instead of this
    interpreter's."""
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--workers", "1", "--store", store,
            "--auth", auth, "--mechanisms", "PLAIN,LOGIN,APOP",
            "--throttle-base", "0", "--throttle-max", "0", *extra]
    twistd = [str(env.twistd)]
    if "twistd" in inspect.signature(start_server).parameters:
        server = start_server(args, cwd, twistd=twistd)
    else:  # a start_server that always runs its module's TWISTD
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys.modules[start_server.__module__], "TWISTD", twistd)
            server = start_server(args, cwd)
    try:
        yield server
    finally:
        server.stop()


def login(server: ServerProcess, user: str, password: str, apop: bool = False) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port, timeout=30)
    try:
        if apop:
            client.apop(user, password)
        else:
            client.user(user)
            client.pass_(password)
    except BaseException:
        client.close()
        raise
    return client


def example_package() -> ModuleType:
    """``hello_store`` from the example's source, imported without putting
    its directory on sys.path (where twisted.plugins would find the
    example's plugins, and write a dropin.cache into the source tree)."""
    if "hello_store" not in sys.modules:
        package = EXAMPLE / "hello_store"
        spec = importlib.util.spec_from_file_location(
            "hello_store", package / "__init__.py", submodule_search_locations=[str(package)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["hello_store"] = module
        spec.loader.exec_module(module)
    return sys.modules["hello_store"]


# -- installed, through twistd and poplib ----------------------------------------


def test_serves_the_greeting_and_deletes_it_for_good(env: Venv, tmp_path: Path) -> None:
    with served(env, tmp_path, f"hello:{GREETING}", f"hello:{USERS}") as server:
        client = login(server, "alice", "wonderland")
        wire = example_package().store.greeting("alice", GREETING).replace(b"\n", b"\r\n")
        assert client.stat() == (1, len(wire))
        assert client.list()[1] == [b"1 %d" % len(wire)]
        assert client.uidl()[1] == [b"1 greeting"]
        _, lines, octets = client.retr(1)  # poplib undoes the dot-stuffing
        assert b"\r\n".join(lines) + b"\r\n" == wire and octets == len(wire)

        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            login(server, "alice", "wonderland")

        client.dele(1)
        client.quit()
        again = login(server, "alice", "wonderland")
        assert again.stat() == (0, 0)
        again.quit()


def test_apop_uses_the_checkers_plaintext_secret(env: Venv, tmp_path: Path) -> None:
    with served(env, tmp_path, "hello:", f"hello:{USERS}") as server:
        client = login(server, "alice", "wonderland", apop=True)
        assert client.uidl()[1] == [b"1 greeting"]
        client.quit()
        with pytest.raises(poplib.error_proto) as wrong:
            login(server, "alice", "not wonderland", apop=True)
        with pytest.raises(poplib.error_proto) as unknown:
            login(server, "nobody", "wonderland", apop=True)
        assert wrong.value.args == unknown.value.args


def test_unknown_user_and_wrong_password_get_the_same_answer(env: Venv, tmp_path: Path) -> None:
    with served(env, tmp_path, "hello:", f"hello:{USERS}") as server:
        answers = []
        for user, password in (("alice", "builder"), ("carol", "wonderland")):
            with pytest.raises(poplib.error_proto) as refused:
                login(server, user, password)
            answers.append(refused.value.args)
        assert answers[0] == answers[1]
        assert b"[AUTH]" in answers[0][0]


def test_a_users_own_login_delay(env: Venv, tmp_path: Path) -> None:
    with served(env, tmp_path, "hello:", f"hello:{USERS}") as server:
        login(server, "bob", "builder").quit()
        with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
            login(server, "bob", "builder")
        for _ in range(2):  # alice has none
            login(server, "alice", "wonderland").quit()


def test_maildir_still_serves_beside_the_broken_plugin(env: Venv, tmp_path: Path) -> None:
    home = MailHome(tmp_path)
    home.add_user("alice", "unused")
    home.deliver("alice", b"Subject: from the maildir\n\nhi\n")
    with served(env, tmp_path, f"maildir:{home.template}", f"hello:{USERS}") as server:
        client = login(server, "alice", "wonderland")
        assert client.retr(1)[1] == [b"Subject: from the maildir", b"", b"hi"]
        client.quit()


def test_help_stores_names_the_broken_plugin_module(env: Venv, tmp_path: Path) -> None:
    result = env.run("pop3", "--help-stores", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hello:[GREETING]" in result.stdout and "maildir" in result.stdout
    assert ("Plugin module twisted.plugins.broken_plugin failed to load: "
            "ImportError: deliberately broken") in result.stdout


def test_help_auth_lists_the_hello_checker(env: Venv, tmp_path: Path) -> None:
    result = env.run("pop3", "--help-auth", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hello:USER:PASSWORD[:LOGIN_DELAY]" in result.stdout


@pytest.mark.parametrize("option", [["--store", "nosuch:"], ["--auth", "nosuch:"]],
                         ids=["store", "auth"])
def test_an_unknown_plugin_names_the_broken_module(env: Venv, tmp_path: Path,
                                                   option: list[str]) -> None:
    args = {"--store": "hello:", "--auth": "hello:alice:wonderland"}
    args[option[0]] = option[1]
    result = env.run("-n", "--pidfile=", "pop3", "--listen", "tcp:0:interface=127.0.0.1",
                     "--workers", "1", *(part for item in args.items() for part in item),
                     cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "nosuch" in output
    assert ("plugin module twisted.plugins.broken_plugin failed to load: "
            "ImportError: deliberately broken") in output


def test_the_memory_store_refuses_more_than_one_worker(env: Venv, tmp_path: Path) -> None:
    result = env.run("-n", "--pidfile=", "pop3", "--listen", "tcp:0:interface=127.0.0.1",
                     "--store", "hello:", "--auth", "hello:alice:wonderland", "--workers", "2",
                     cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "--workers: the 'hello' store keeps its maildrops in this process's memory" in output


# -- in process, from the example's source -----------------------------------------


@pytest.mark.adapter
def test_delivered_mail_streams_chunk_by_chunk() -> None:
    hello_store = example_package()
    store = hello_store.HelloStore("hi")
    delivered = b"Subject: later\n\n.dot\n" + b"x" * 10_000 + b"\nlast line without an end"
    store.deliver("alice", io.BytesIO(delivered))
    connection = connect_in_memory(store, MemoryChecker({"alice": "pw"}))
    store.reactor = connection.clock  # each chunk waits for a turn of this clock

    greeting_wire = hello_store.store.greeting("alice", "hi").replace(b"\n", b"\r\n")
    delivered_wire = delivered.replace(b"\n", b"\r\n").replace(b"\n.", b"\n..") + b"\r\n"
    delivered_size = len(delivered_wire) - 1  # sizes do not count dot-stuffing
    answer = connection.send(b"USER alice\r\nPASS pw\r\nUIDL\r\nLIST\r\nRETR 1\r\nRETR 2\r\n")
    assert b"\r\n1 greeting\r\n2 m1\r\n.\r\n" in answer
    assert b"\r\n1 %d\r\n2 %d\r\n.\r\n" % (len(greeting_wire), delivered_size) in answer
    assert answer.endswith(b" octets\r\n" + greeting_wire + b".\r\n"
                           + b"+OK %d octets\r\n" % delivered_size + delivered_wire + b".\r\n")

    assert connection.send(b"DELE 2\r\nQUIT\r\n").startswith(b"+OK")
    assert list(store.maildrops["alice"]) == ["greeting"]


@pytest.mark.adapter
def test_mail_delivered_during_a_session_waits_for_the_next() -> None:
    store = example_package().HelloStore("hi")
    connection = connect_in_memory(store, MemoryChecker({"alice": "pw"}))
    assert connection.send(b"USER alice\r\nPASS pw\r\n").count(b"+OK") == 2
    store.deliver("alice", io.BytesIO(b"Subject: new\n\nnew\n"))
    assert connection.send(b"STAT\r\nDELE 1\r\nQUIT\r\n").startswith(b"+OK 1 ")
    assert list(store.maildrops["alice"]) == ["m1"]


@pytest.mark.core
def test_the_body_reads_one_chunk_per_turn() -> None:
    clock = Clock()
    body = example_package().body.ChunkedBody(b"x" * 100, clock, chunk=64)
    chunks: list[bytes] = []
    for _ in range(3):
        d = body.read(1000).addCallback(chunks.append)
        assert not d.called  # answered on a later turn, never at once
        clock.advance(0)
        assert d.called
    assert chunks == [b"x" * 64, b"x" * 36, b""]
    body.close()


# The contract every store keeps, run against the example as its author
# would (without a greeting, a new user's maildrop is empty, as the
# contract expects).
try:
    from popframe.testing.contracts import StoreContract
except ImportError:  # a popframe without the contract suites
    StoreContract = None

if StoreContract is not None:

    class TestHelloStoreContract(StoreContract):  # type: ignore[misc, valid-type]
        def make_store(self, tmp_path: Path) -> Any:
            return example_package().HelloStore()
