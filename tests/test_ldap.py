"""The LDAP checker against a real OpenLDAP slapd (tests/ldap_support.py):
plain (loopback), StartTLS and ldaps; injection; TLS verification; a hung,
stopped, paused and restarted directory; failover; the caches; Active
Directory's attribute names; and logins through a real ``twistd pop3``.

One slapd serves the whole module.  Tests that stop or pause it put it
back before they end.
"""

from __future__ import annotations

import poplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ldaptor")

from ldap_support import (  # noqa: E402
    AD_USERS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Clock,
    ReactorRunner,
    Slapd,
    Unresponsive,
    reactor_runner,
    start_slapd,
)
from twisted.cred.credentials import UsernamePassword  # noqa: E402
from twisted.cred.error import UnauthorizedLogin  # noqa: E402

from popframe.auth.ldap import DirectoryUnavailable, LDAPChecker  # noqa: E402
from popframe.auth.ldap.settings import settings_from_mapping  # noqa: E402
from popframe.interfaces import UserSettings  # noqa: E402
from popframe.testing import (
    start_server,  # noqa: E402
    stop_reactor,  # noqa: E402
)
from popframe.tls import make_self_signed  # noqa: E402

pytestmark = pytest.mark.external

MODES = ["plain", "starttls", "ldaps"]
FILTER = "(&(objectClass=inetOrgPerson)(uid=%u))"


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    yield from start_slapd()


@pytest.fixture(scope="session")
def reactor() -> Iterator[ReactorRunner]:
    yield reactor_runner()
    stop_reactor()  # its resolver's threads would keep the run from exiting


class Checkers:
    """Makes checkers for one test and closes their connections after it."""

    def __init__(self, slapd: Slapd, reactor: ReactorRunner) -> None:
        self.slapd = slapd
        self.reactor = reactor
        self.made: list[LDAPChecker] = []

    def settings(self, mode: str = "plain", **keys: Any) -> dict[str, Any]:
        url = self.slapd.ldaps_url if mode == "ldaps" else self.slapd.url
        document: dict[str, Any] = {
            "url": url, "starttls": mode == "starttls", "ca_file": str(self.slapd.ca_file),
            "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD, "base": SUFFIX,
            "filter": FILTER, "maildrop_attribute": "mailMessageStore",
            "login_delay_attribute": "popframeLoginDelay",
            "disabled_filter": "(employeeType=disabled)", "timeout": 2,
        }
        document.update(keys)
        return {key: value for key, value in document.items() if value is not None}

    def make(self, mode: str = "plain", clock: Any = time.monotonic, **keys: Any) -> LDAPChecker:
        settings = settings_from_mapping(self.settings(mode, **keys), "test.toml")
        checker = LDAPChecker(settings, reactor=self.reactor.reactor, clock=clock)
        self.made.append(checker)
        return checker

    def login(self, checker: LDAPChecker, user: str, password: str) -> Any:
        """The avatar id (str), or the exception's class."""
        try:
            avatar = self.reactor.call(checker.requestAvatarId,
                                       UsernamePassword(user.encode(), password.encode()))
        except (UnauthorizedLogin, DirectoryUnavailable) as error:
            return type(error)
        return avatar.decode()

    def settings_of(self, checker: LDAPChecker, user: str) -> UserSettings | None:
        return self.reactor.call(checker.user_settings, user)

    def close(self) -> None:
        for checker in self.made:
            self.reactor.call(checker.close)


@pytest.fixture
def checkers(slapd: Slapd, reactor: ReactorRunner) -> Iterator[Checkers]:
    made = Checkers(slapd, reactor)
    yield made
    made.close()


# -- logins in each mode ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_logins(checkers: Checkers, mode: str) -> None:
    checker = checkers.make(mode)
    login = checkers.login
    assert login(checker, "alice", "alice-pw") == "alice"
    assert login(checker, "bob", "bob-pw") == "bob"
    assert login(checker, "alice", "bob-pw") is UnauthorizedLogin
    assert login(checker, "nobody", "alice-pw") is UnauthorizedLogin
    assert login(checker, "twin", "twin-pw") is UnauthorizedLogin  # two entries match
    assert login(checker, "carol", "carol-pw") is UnauthorizedLogin  # disabled_filter
    assert login(checker, "alice", "") is UnauthorizedLogin
    assert checkers.settings_of(checker, "alice") == UserSettings(
        login_delay=120, maildrop="/srv/mail/alice-from-ldap")
    assert checkers.settings_of(checker, "bob") == UserSettings()
    assert checkers.settings_of(checker, "nobody") is None
    assert checkers.settings_of(checker, "twin") is None
    # Disabled users exist (mail may be delivered); they only may not log in.
    assert checkers.settings_of(checker, "carol") == UserSettings()


@pytest.mark.parametrize("mode", ["plain", "ldaps"])
def test_direct_bind(checkers: Checkers, mode: str) -> None:
    checker = checkers.make(mode, filter=None, dn_template=f"uid=%u,{PEOPLE}")
    login = checkers.login
    assert login(checker, "alice", "alice-pw") == "alice"
    assert login(checker, "alice", "wrong") is UnauthorizedLogin
    assert login(checker, "nobody", "wrong") is UnauthorizedLogin
    assert login(checker, "carol", "carol-pw") is UnauthorizedLogin
    assert login(checker, "comma,plus+user", "comma-pw") == "comma,plus+user"
    assert login(checker, "alice,ou=people", "alice-pw") is UnauthorizedLogin
    assert checkers.settings_of(checker, "alice") == UserSettings(
        login_delay=120, maildrop="/srv/mail/alice-from-ldap")
    assert checkers.settings_of(checker, "nobody") is None


def test_direct_bind_without_attributes_or_service_account(checkers: Checkers) -> None:
    checker = checkers.make(filter=None, dn_template=f"uid=%u,{PEOPLE}", bind_dn=None,
                            bind_password=None, maildrop_attribute=None,
                            login_delay_attribute=None, disabled_filter=None)
    assert checkers.login(checker, "alice", "alice-pw") == "alice"
    assert checkers.login(checker, "alice", "x") is UnauthorizedLogin


def test_unknown_users_cost_the_round_trips_of_wrong_passwords(
        checkers: Checkers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same directory operations, same reply: nothing tells them apart."""
    from popframe.auth.ldap.connection import Connection

    operations: list[str] = []
    for name in ("bind", "search"):
        original = getattr(Connection, name)

        def recording(self: Connection, *args: Any, _name: str = name, _original: Any = original,
                      **kwargs: Any) -> Any:
            operations.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Connection, name, recording)
    checker = checkers.make(negative_cache_ttl=0)
    assert checkers.login(checker, "alice", "alice-pw") == "alice"  # pools warm now
    seen = {}
    for user, password in (("alice", "wrong"), ("nobody", "wrong"), ("twin", "twin-pw"),
                           ("carol", "carol-pw")):
        operations.clear()
        assert checkers.login(checker, user, password) is UnauthorizedLogin
        seen[user] = list(operations)
    assert seen["alice"] == seen["nobody"] == seen["twin"] == seen["carol"] == ["search", "bind"]


# -- injection and odd names ----------------------------------------------------------------


@pytest.mark.parametrize("user", [
    "*", "a*", "*)(uid=*", ")(uid=*", "alice)(uid=*", "alice)(|(uid=*", "alice\0", "alice\0*",
    "\\", "alic\\65", "alic\\2a", "al*ce", "ALICE*", "jörg*", "j*rg", "uid=alice", "star*",
])
def test_injection_attempts_are_refused(checkers: Checkers, user: str) -> None:
    checker = checkers.make()
    for password in ("alice-pw", "star-pw", "paren-pw", "jörg-pw", "twin-pw"):
        assert checkers.login(checker, user, password) is UnauthorizedLogin
    assert checkers.settings_of(checker, user) is None


@pytest.mark.parametrize(("user", "password"), [
    ("star*user", "star-pw"), ("paren)(uid=*", "paren-pw"), ("back\\slash", "backslash-pw"),
    ("jörg", "jörg-pw"), ("comma,plus+user", "comma-pw"),
])
def test_names_with_filter_syntax_match_only_themselves(checkers: Checkers, user: str,
                                                        password: str) -> None:
    checker = checkers.make()
    assert checkers.login(checker, user, password) == user
    assert checkers.login(checker, user, "alice-pw") is UnauthorizedLogin


def test_empty_password_never_reaches_the_directory(checkers: Checkers) -> None:
    hung = Unresponsive()
    try:
        checker = checkers.make(url=f"ldap://127.0.0.1:{hung.port}", timeout=0.5)
        assert checkers.login(checker, "alice", "") is UnauthorizedLogin
        assert checker._pools == {}  # no connection was even made
        assert checkers.login(checker, "", "alice-pw") is UnauthorizedLogin
        assert checker._pools == {}
        # A password does go to the (hung) directory.
        assert checkers.login(checker, "alice", "x") is DirectoryUnavailable
    finally:
        hung.close()


# -- TLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_a_certificate_from_another_ca_is_refused(checkers: Checkers, mode: str,
                                                  tmp_path: Path) -> None:
    make_self_signed(tmp_path / "other.pem", tmp_path / "other.key")
    checker = checkers.make(mode, ca_file=str(tmp_path / "other.pem"))
    assert checkers.login(checker, "alice", "alice-pw") is DirectoryUnavailable


def test_a_certificate_for_another_name_is_refused(checkers: Checkers, tmp_path: Path) -> None:
    """The certificate chains to ca_file but names another host."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from twisted.internet import ssl
    from twisted.internet.protocol import Factory, Protocol

    make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", hostnames=["ldap.example.org"],
                     ip_addresses=[])
    options = ssl.CertificateOptions(
        privateKey=serialization.load_pem_private_key((tmp_path / "k.pem").read_bytes(), None),
        certificate=x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes()))
    port = checkers.reactor.call(lambda: checkers.reactor.reactor.listenSSL(
        0, Factory.forProtocol(Protocol), options, interface="127.0.0.1"))
    try:
        checker = checkers.make("ldaps", url=f"ldaps://127.0.0.1:{port.getHost().port}",
                                ca_file=str(tmp_path / "c.pem"))
        assert checkers.login(checker, "alice", "alice-pw") is DirectoryUnavailable
    finally:
        checkers.reactor.call(port.stopListening)


def test_localhost_by_name(checkers: Checkers) -> None:
    checker = checkers.make("ldaps", url=f"ldaps://localhost:{checkers.slapd.tls_port}")
    assert checkers.login(checker, "alice", "alice-pw") == "alice"


# -- Active Directory's names -------------------------------------------------------------


def test_active_directory_preset(checkers: Checkers) -> None:
    checker = checkers.make("ldaps", preset="active-directory", filter=None, disabled_filter=None,
                            base=f"ou=ad,{SUFFIX}", maildrop_attribute="mail",
                            login_delay_attribute=None)
    login = checkers.login
    assert login(checker, "dave", "Dave-pw1") == "dave"
    assert login(checker, "dave@example.test", "Dave-pw1") == "dave"  # UPN: same maildrop
    assert login(checker, "DAVE", "Dave-pw1") == "dave"  # AD names ignore case
    assert login(checker, "dave", "dave-pw1") is UnauthorizedLogin
    assert login(checker, "erin", "Erin-pw1") is UnauthorizedLogin  # ACCOUNTDISABLE
    assert login(checker, "erin@example.test", "Erin-pw1") is UnauthorizedLogin
    assert login(checker, "*", "Dave-pw1") is UnauthorizedLogin
    assert checkers.settings_of(checker, "dave") == UserSettings(maildrop="dave@example.test")
    assert checkers.settings_of(checker, "erin") == UserSettings(maildrop="erin@example.test")
    assert checkers.settings_of(checker, "frank") is None
    assert AD_USERS.endswith(SUFFIX)


# -- caches ---------------------------------------------------------------------------------


def test_positive_cache(checkers: Checkers) -> None:
    clock = Clock()
    checker = checkers.make(cache_ttl=60, timeout=0.5, clock=clock)
    login = checkers.login
    assert login(checker, "alice", "alice-pw") == "alice"
    checkers.slapd.pause()
    try:
        assert login(checker, "alice", "alice-pw") == "alice"  # not asked
        assert checkers.settings_of(checker, "alice").maildrop == "/srv/mail/alice-from-ldap"
        # Another password (a changed one, or a guess) goes to the directory.
        assert login(checker, "alice", "new-pw") is DirectoryUnavailable
        clock.now += 61
        assert login(checker, "alice", "alice-pw") is DirectoryUnavailable
    finally:
        checkers.slapd.resume()
    assert login(checker, "alice", "alice-pw") == "alice"


def test_cache_off_asks_every_time(checkers: Checkers) -> None:
    checker = checkers.make(cache_ttl=0, negative_cache_ttl=0, timeout=0.5)
    assert checkers.login(checker, "alice", "alice-pw") == "alice"
    checkers.slapd.pause()
    try:
        assert checkers.login(checker, "alice", "alice-pw") is DirectoryUnavailable
        assert checkers.login(checker, "alice", "wrong") is DirectoryUnavailable
    finally:
        checkers.slapd.resume()


def test_negative_cache_treats_unknown_users_and_wrong_passwords_alike(checkers: Checkers) -> None:
    clock = Clock()
    checker = checkers.make(negative_cache_ttl=10, timeout=0.5, clock=clock)
    login = checkers.login
    assert login(checker, "alice", "wrong") is UnauthorizedLogin
    assert login(checker, "nobody", "wrong") is UnauthorizedLogin
    assert checkers.settings_of(checker, "nobody") is None
    checkers.slapd.pause()
    try:
        assert login(checker, "alice", "wrong") is UnauthorizedLogin  # not asked
        assert login(checker, "nobody", "wrong") is UnauthorizedLogin
        assert checkers.settings_of(checker, "nobody") is None
        assert login(checker, "alice", "alice-pw") is DirectoryUnavailable  # asked
        assert login(checker, "nobody", "other") is DirectoryUnavailable
        clock.now += 10
        assert login(checker, "alice", "wrong") is DirectoryUnavailable
    finally:
        checkers.slapd.resume()


def test_a_changed_password(checkers: Checkers, slapd: Slapd) -> None:
    checker = checkers.make(cache_ttl=60)
    dn = f"uid=bob,{PEOPLE}"

    def set_password(password: str) -> None:
        subprocess.run(["ldappasswd", "-x", "-H", slapd.url, "-D", f"cn=admin,{SUFFIX}",
                        "-w", "admin-secret", "-s", password, dn], check=True, capture_output=True)

    assert checkers.login(checker, "bob", "bob-pw") == "bob"
    set_password("bob-new")
    try:
        assert checkers.login(checker, "bob", "bob-new") == "bob"  # not the cached password
        assert checkers.login(checker, "bob", "bob-wrong") is UnauthorizedLogin
    finally:
        set_password("bob-pw")


# -- a directory that does not answer ------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "ldaps"])
def test_a_hung_directory_is_a_temporary_failure(checkers: Checkers, mode: str) -> None:
    hung = Unresponsive()
    try:
        checker = checkers.make(mode, url=f"{'ldaps' if mode == 'ldaps' else 'ldap'}://127.0.0.1:{hung.port}",
                                timeout=0.5)
        started = time.monotonic()
        assert checkers.login(checker, "alice", "alice-pw") is DirectoryUnavailable
        with pytest.raises(DirectoryUnavailable):
            checkers.settings_of(checker, "alice")
        assert time.monotonic() - started < 5
    finally:
        hung.close()


def test_a_paused_directory_then_resumed(checkers: Checkers, slapd: Slapd) -> None:
    checker = checkers.make("starttls", timeout=0.5, negative_cache_ttl=0)
    assert checkers.login(checker, "alice", "alice-pw") == "alice"  # a pooled connection now
    fresh = checkers.make("ldaps", timeout=0.5)  # connects while paused
    slapd.pause()
    try:
        started = time.monotonic()
        assert checkers.login(checker, "alice", "alice-pw") is DirectoryUnavailable
        assert checkers.login(fresh, "alice", "alice-pw") is DirectoryUnavailable
        with pytest.raises(DirectoryUnavailable):
            checkers.settings_of(fresh, "bob")
        assert time.monotonic() - started < 10
    finally:
        slapd.resume()
    assert checkers.login(checker, "alice", "alice-pw") == "alice"
    assert checkers.login(fresh, "alice", "alice-pw") == "alice"


def test_stopped_and_restarted_directory(checkers: Checkers, slapd: Slapd) -> None:
    checker = checkers.make(negative_cache_ttl=0)
    assert checkers.login(checker, "alice", "alice-pw") == "alice"
    slapd.stop()
    try:
        assert checkers.login(checker, "alice", "alice-pw") is DirectoryUnavailable
        assert checkers.login(checker, "alice", "wrong") is DirectoryUnavailable
    finally:
        slapd.start()
    assert checkers.login(checker, "alice", "alice-pw") == "alice"
    assert checkers.login(checker, "alice", "wrong") is UnauthorizedLogin
    # A restart between two logins: the pooled connections are dead, and
    # the next login succeeds on new ones.
    slapd.stop()
    slapd.start()
    assert checkers.login(checker, "bob", "bob-pw") == "bob"


def test_failover_to_the_next_url(checkers: Checkers, slapd: Slapd) -> None:
    hung = Unresponsive()
    refused = Unresponsive()
    refused.close()  # nothing listens there any more: connection refused
    try:
        checker = checkers.make(url=[f"ldap://127.0.0.1:{refused.port}", f"ldap://127.0.0.1:{hung.port}",
                                     slapd.url], timeout=0.5)
        assert checkers.login(checker, "alice", "alice-pw") == "alice"
        assert checkers.login(checker, "bob", "bob-pw") == "bob"
        assert checkers.login(checker, "bob", "x") is UnauthorizedLogin
    finally:
        hung.close()


# -- through a real twistd pop3 --------------------------------------------------------------


def test_pop3_logins_through_twistd(slapd: Slapd, tmp_path: Path) -> None:
    config = tmp_path / "ldap.toml"
    secret = tmp_path / "ldap.secret"
    secret.write_text(SERVICE_PASSWORD + "\n")
    config.write_text(
        f'url = ["ldap://127.0.0.1:1", "{slapd.url}"]\nstarttls = true\nca_file = "{slapd.ca_file}"\n'
        f'bind_dn = "{SERVICE_DN}"\nbind_password_file = "{secret}"\nbase = "{SUFFIX}"\n'
        f'filter = "{FILTER}"\ndisabled_filter = "(employeeType=disabled)"\ntimeout = 1\n'
        f'negative_cache_ttl = 0\n')
    server = start_server(["--listen", "tcp:0:interface=127.0.0.1", "--workers", "1",
                           "--store", f"maildir:{tmp_path}/mail/%u/Maildir",
                           "--auth", f"ldap:{config}", "--throttle-base", "0"], tmp_path)

    def login(user: str, password: str) -> bytes:
        client = poplib.POP3("127.0.0.1", server.ports[0], timeout=30)
        try:
            client.user(user)
            return client.pass_(password)
        except poplib.error_proto as error:
            return error.args[0]
        finally:
            client.close()

    try:
        assert login("alice", "alice-pw").startswith(b"+OK")
        assert login("alice", "wrong") == login("nobody", "wrong") == login("twin", "twin-pw") \
            == login("carol", "carol-pw") == login("*", "alice-pw") == b"-ERR [AUTH] authentication failed"
        slapd.pause()
        try:
            assert login("bob", "bob-pw").startswith(b"-ERR [SYS/TEMP]")
        finally:
            slapd.resume()
        assert login("bob", "bob-pw").startswith(b"+OK")
        slapd.stop()
        try:
            assert login("bob", "bob-pw").startswith(b"-ERR [SYS/TEMP]")
        finally:
            slapd.start()
        assert login("bob", "bob-pw").startswith(b"+OK")
    finally:
        server.stop()
