"""The backend kit's boundaries: the core without Twisted, the events the
core reports, declared secret types, user settings reaching the store,
broken plugins named."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_message_body import RemoteStore
from twisted.internet.defer import Deferred, succeed
from twisted.logger import globalLogPublisher
from zope.interface import implementer

import popframe
from popframe.interfaces import (
    IMaildropStoreFactory,
    ISecretLookup,
    IUserSettings,
    SecretKind,
    UserSettings,
)
from popframe.plugins import find_plugins
from popframe.protocol import LoginRefused, Session, SessionConfig
from popframe.server import ServerConfig
from popframe.testing import MemoryChecker, MemoryStore, connect_in_memory
from popframe.testing.session import b64, replies

pytestmark = pytest.mark.core

CORE_IMPORT = """
import importlib, pkgutil, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("twisted", "zope"):
            raise ImportError(f"{name} is blocked: the core must not import it")
        return None

sys.meta_path.insert(0, Blocked())
import popframe.protocol
for info in pkgutil.walk_packages(popframe.protocol.__path__, "popframe.protocol."):
    importlib.import_module(info.name)
import popframe.errors
print(sorted(m for m in sys.modules if m.startswith("popframe")))
"""


@pytest.mark.process
def test_the_core_imports_without_twisted_or_zope() -> None:
    root = Path(popframe.__file__).parent.parent
    result = subprocess.run([sys.executable, "-c", CORE_IMPORT], capture_output=True,
                            text=True, cwd=root, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "popframe.protocol.session" in result.stdout
    assert "popframe.protocol.sasl.scram" in result.stdout



def test_the_core_reports_a_refused_login_with_mechanism_and_user() -> None:
    s = Session(SessionConfig(mechanisms=("CRAM-MD5", "PLAIN")))
    [event] = replies(s, b"AUTH PLAIN " + b64(b"alice\0") + b"\r\n")  # no password: malformed
    assert event == b"-ERR [AUTH] authentication failed\r\n"
    s = Session(SessionConfig(mechanisms=("CRAM-MD5", "PLAIN")))
    s.receive_data(b"AUTH PLAIN " + b64(b"alice\0") + b"\r\n")
    assert s.next_event() == LoginRefused("PLAIN", None)  # no user named yet
    s = Session(SessionConfig(mechanisms=("CRAM-MD5",)))
    s.receive_data(b"AUTH CRAM-MD5\r\n")
    s.next_event()
    s.receive_data(b64(b"alice " + b"0" * 32) + b"\r\n")
    lookup = s.next_event()
    refused = s.secret_found(None)  # unknown user: fails at the proof, like a wrong password
    assert (lookup.user, refused) == ("alice", LoginRefused("CRAM-MD5", "alice"))  # type: ignore[union-attr]


@implementer(ISecretLookup)
class SloppySecrets(MemoryChecker):
    """A backend bug: it hands out the password as bare bytes."""

    secret_kinds = (SecretKind.PLAINTEXT,)

    def lookup_secret(self, user: str, kind: SecretKind) -> Deferred[Any]:
        return succeed(b"secret")


@pytest.mark.adapter
def test_a_secret_of_another_type_than_declared_is_a_logged_temporary_failure() -> None:
    failures: list[BaseException] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"].value)

    globalLogPublisher.addObserver(observe)
    try:
        conn = connect_in_memory(MemoryStore(), SloppySecrets({"alice": "secret"}),
                                 ServerConfig(mechanisms=("APOP",)))
        timestamp = conn.client.received.split(b" ")[-1].strip()
        digest = hashlib.md5(timestamp + b"secret").hexdigest().encode()
        reply = conn.send(b"APOP alice " + digest + b"\r\n")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert reply == b"-ERR [SYS/TEMP] temporary system failure, try again later\r\n"
    assert [str(f) for f in failures] == [
        "a plaintext secret lookup returned bytes, not PlaintextSecret or None"]


@implementer(IUserSettings)
class DirectoryChecker(MemoryChecker):
    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        return succeed(UserSettings(maildrop=f"/srv/mail/{user}") if user in self.users else None)


@pytest.mark.adapter
def test_user_settings_reach_the_store() -> None:
    store = RemoteStore()
    conn = connect_in_memory(store, DirectoryChecker({"alice": "secret"}))  # type: ignore[arg-type]
    assert conn.send(b"USER alice\r\nPASS secret\r\n").startswith(b"+OK")
    assert store.settings == [UserSettings(maildrop="/srv/mail/alice")]


def test_a_broken_plugin_module_is_named_and_the_others_still_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import twisted.plugins

    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "popframe_test_broken.py").write_text('raise ImportError("deliberately broken")\n')
    (plugins / "popframe_test_fine.py").write_text(textwrap.dedent("""
        from zope.interface import implementer
        from twisted.plugin import IPlugin
        from popframe.interfaces import IMaildropStoreFactory

        @implementer(IMaildropStoreFactory, IPlugin)
        class Fine:
            storeName = "fine"
            storeHelp = argStringFormat = "fine:"
            def storeFromString(self, argstring):
                raise NotImplementedError

        fine = Fine()
    """))
    monkeypatch.setattr(twisted.plugins, "__path__", [*twisted.plugins.__path__, str(plugins)])
    search = find_plugins(IMaildropStoreFactory)
    assert {f.storeName for f in search.found} >= {"maildir", "fine"}
    assert search.broken == {
        "twisted.plugins.popframe_test_broken": "ImportError: deliberately broken"}

    from popframe.config import ConfigurationError
    from popframe.stores import store_from_description

    with pytest.raises(ConfigurationError, match="popframe_test_broken failed to load: "
                                                 "ImportError: deliberately broken"):
        store_from_description("nosuch:")
