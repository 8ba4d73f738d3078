"""The LDAP checker's parts that need no directory: escaping, the filter
parser, the templates, the settings file, the caches, the plugin, and the
client protocol on bytes (StartTLS, garbage, empty passwords)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("ldaptor")

from ldap_support import Clock  # noqa: E402
from ldaptor.protocols import pureldap  # noqa: E402

from popframe.auth.ldap import (  # noqa: E402
    DNTemplate,
    FilterSyntaxError,
    FilterTemplate,
    escape_dn_value,
    escape_filter_value,
    load_settings,
    parse_filter,
)
from popframe.auth.ldap.cache import Expiring, RecentFailures  # noqa: E402
from popframe.auth.ldap.settings import settings_from_mapping  # noqa: E402
from popframe.config import ConfigurationError  # noqa: E402
from popframe.testing import BufferedTransport, failure_of, result_of

pytestmark = pytest.mark.core

# -- escaping -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "escaped"), [
    ("alice", "alice"),
    ("*", "\\2a"),
    (")(uid=*", "\\29\\28uid=\\2a"),
    ("a\0b", "a\\00b"),
    ("back\\slash", "back\\5cslash"),
    ("jörg", "j\\c3\\b6rg"),
    ("tab\there", "tab\\09here"),
])
def test_filter_escaping(value: str, escaped: str) -> None:
    assert escape_filter_value(value) == escaped


@pytest.mark.parametrize("value", ["*", ")(uid=*", "a\0b", "back\\slash", "jörg", "\\2a", "(|(a=b)",
                                   "x*y*z", "%u"])
def test_an_escaped_value_is_one_literal_equality_match(value: str) -> None:
    parsed = FilterTemplate("(uid=%u)").expand(value)
    assert isinstance(parsed, pureldap.LDAPFilter_equalityMatch)
    assert parsed.assertionValue.value == value.encode("utf-8")


def test_template_variables_are_escaped_each() -> None:
    template = FilterTemplate("(&(objectClass=inetOrgPerson)(|(uid=%n)(mail=%u)(o=%Ld)))")
    parsed = template.expand("a*)(x@EXAMPLE.org")
    assert parsed.toWire() == parse_filter(
        "(&(objectClass=inetOrgPerson)(|(uid=a\\2a\\29\\28x)(mail=a\\2a\\29\\28x@EXAMPLE.org)"
        "(o=example.org)))").toWire()


@pytest.mark.parametrize(("value", "escaped"), [
    ("alice", "alice"),
    ("comma,plus+user", "comma\\,plus\\+user"),
    (' #lead', '\\ #lead'),
    ("#hash", "\\#hash"),
    ("trail ", "trail\\ "),
    ('q"<>;=\\', 'q\\"\\<\\>\\;\\=\\\\'),
    ("nul\0", "nul\\00"),
    ("jörg", "jörg"),
])
def test_dn_escaping(value: str, escaped: str) -> None:
    assert escape_dn_value(value) == escaped


def test_dn_template() -> None:
    template = DNTemplate("uid=%n,ou=%d,dc=example,dc=org")
    assert template.expand("a,b@x+y") == "uid=a\\,b,ou=x\\+y,dc=example,dc=org"


# -- the filter parser --------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "(uid=alice)",
    "(&(objectClass=inetOrgPerson)(uid=alice))",
    "(|(sAMAccountName=a)(userPrincipalName=a@b))",
    "(!(employeeType=disabled))",
    "(cn=*)",
    "(cn=a*b*c)",
    "(cn=*b*)",
    "(cn=a*)",
    "(uidNumber>=1000)",
    "(uidNumber<=1000)",
    "(cn~=alis)",
    "(cn:dn:2.5.13.5:=x)",
    "(cn;lang-de=x)",
    "(cn=a\\2ab)",
])
def test_parser_agrees_with_ldaptors_own(text: str) -> None:
    """ldaptor's pyparsing parser (slow, noisy, so not used at login) as
    the reference: both must give the same protocol bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ldaptor import ldapfilter

        reference = ldapfilter.parseFilter(text)
    assert parse_filter(text).toWire() == reference.toWire()


def test_parser_beyond_ldaptors() -> None:
    """What ldaptor's parser cannot read (numeric OIDs, empty values) or
    encodes otherwise (it spells out dnAttributes FALSE, a DEFAULT)."""
    assert parse_filter("(2.5.4.3=x)").attributeDesc.value == "2.5.4.3"
    assert parse_filter("(cn=)").assertionValue.value == b""
    rule = parse_filter("(userAccountControl:1.2.840.113556.1.4.803:=2)")
    assert (rule.type.value, rule.matchingRule.value, rule.matchValue.value, rule.dnAttributes) == (
        "userAccountControl", "1.2.840.113556.1.4.803", b"2", None)
    rule = parse_filter("(:caseExactMatch:=x)")
    assert (rule.type, rule.matchingRule.value) == (None, "caseExactMatch")


def test_parser_builds_the_right_objects() -> None:
    parsed = parse_filter("(&(cn=a*b*c)(!(x=*))(y:1.2.3:=\\28z\\29))")
    cn, negation, extensible = list(parsed)
    assert [type(s).__name__ for s in cn.substrings] == [
        "LDAPFilter_substrings_initial", "LDAPFilter_substrings_any", "LDAPFilter_substrings_final"]
    assert isinstance(negation.value, pureldap.LDAPFilter_present)
    assert extensible.matchValue.value == b"(z)"
    assert extensible.matchingRule.value == "1.2.3"


@pytest.mark.parametrize("text", [
    "uid=alice", "(uid=alice", "(uid=alice))", "(uid=a(b)", "(uid=a\\2)", "(uid=a\\zz)",
    "(&)", "(!)", "(=x)", "(uid~x)", "(uid=a**b)", "(uid=a\0b)", "(:=x)", "(uid=x)(uid=y)",
])
def test_parser_refuses(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        parse_filter(text)


# -- the settings file ---------------------------------------------------------------

BASE = {"url": "ldap://127.0.0.1:389", "base": "dc=example,dc=org", "filter": "(uid=%u)"}


def problem(document: dict, tmp_path: Path | None = None) -> str:
    with pytest.raises(ConfigurationError) as raised:
        settings_from_mapping(document, "/etc/ldap.toml")
    assert raised.value.key == "--auth"
    return raised.value.problem


def test_minimal_settings_and_defaults() -> None:
    settings = settings_from_mapping(BASE, "/etc/ldap.toml")
    [url] = settings.urls
    assert (url.host, url.port, url.ldaps, url.loopback) == ("127.0.0.1", 389, False, True)
    assert settings.timeout == 5 and settings.cache_ttl == 0 and settings.negative_cache_ttl == 10
    assert settings.attributes == ()


def test_several_urls_and_default_ports() -> None:
    settings = settings_from_mapping({**BASE, "url": ["ldaps://ldap1.example.org",
                                                      "ldaps://[::1]:1636/"]}, "x")
    assert [(u.host, u.port, u.ldaps) for u in settings.urls] == [
        ("ldap1.example.org", 636, True), ("::1", 1636, True)]


@pytest.mark.parametrize(("change", "expected"), [
    ({"urll": "x"}, "key 'urll': unknown key (did you mean 'url'?)"),
    ({"colour": "x"}, "key 'colour': unknown key (known keys: allow_plaintext, base,"),
    ({"timeout": "soon"}, "key 'timeout': expected a positive number of seconds, got 'soon'"),
    ({"timeout": 0}, "key 'timeout': expected a positive number of seconds, got 0"),
    ({"cache_ttl": -1}, "key 'cache_ttl': expected a number of seconds, 0 or more, got -1"),
    ({"starttls": "yes"}, "key 'starttls': expected true or false, got 'yes'"),
    ({"url": "http://x"}, "key 'url': expected an ldap:// or ldaps:// URL, got 'http://x'"),
    ({"url": []}, "key 'url': expected a URL or a list of URLs"),
    ({"url": "ldap://h/dc=x"}, "key 'url': 'ldap://h/dc=x': give only scheme, host and port"),
    ({"url": "ldap://ldap.example.org"}, "key 'url': ldap://ldap.example.org would send passwords "
                                         "unencrypted: use ldaps://, starttls = true, or"),
    ({"url": "ldaps://h", "starttls": True}, "key 'starttls': ldaps://h is ldaps://"),
    ({"filter": "(uid=%x)"}, "key 'filter': unknown variable '%x'"),
    ({"filter": "(uid=alice)"}, "key 'filter': '(uid=alice)' needs %u or %n"),
    ({"filter": "(uid=%u"}, "key 'filter': expected ')' at offset"),
    ({"disabled_filter": "(x=y"}, "key 'disabled_filter': expected ')'"),
    ({"dn_template": "uid=%u,dc=x"}, "key 'dn_template': give filter (search, then bind) or "
                                     "dn_template (bind at once), not both"),
    ({"preset": "novell"}, "key 'preset': expected one of 'active-directory', got 'novell'"),
    ({"scope": "deep"}, "key 'scope': expected one of base, one, sub, got 'deep'"),
    ({"bind_dn": "cn=x"}, "key 'bind_password': bind_dn and bind_password"),
    ({"bind_password": "x"}, "key 'bind_dn': bind_dn and bind_password"),
    ({"ca_file": "/nonexistent/ca.pem"}, "key 'ca_file': cannot read /nonexistent/ca.pem"),
    ({"maildrop_attribute": "a b"}, "key 'maildrop_attribute': expected an attribute name"),
    ({"pool_size": 0}, "key 'pool_size': expected a whole number from 1 to 1000, got 0"),
])
def test_wrong_keys_are_named_with_what_was_expected(change: dict, expected: str) -> None:
    assert problem({**BASE, **change}).startswith("ldap: /etc/ldap.toml: " + expected)


def test_required_keys() -> None:
    assert "key 'url': required" in problem({"base": "x", "filter": "(uid=%u)"})
    assert "key 'filter': required" in problem({"url": "ldap://127.0.0.1"})
    assert "key 'base': required with filter" in problem({"url": "ldap://127.0.0.1", "filter": "(uid=%u)"})


def test_plaintext_to_a_remote_directory_needs_allow_plaintext() -> None:
    settings = settings_from_mapping(
        {**BASE, "url": "ldap://ldap.example.org", "allow_plaintext": True}, "x")
    assert settings.allow_plaintext
    for url in ("ldaps://ldap.example.org", "ldap://localhost", "ldap://[::1]"):
        settings_from_mapping({**BASE, "url": url}, "x")
    settings_from_mapping({**BASE, "url": "ldap://ldap.example.org", "starttls": True}, "x")


def test_ca_file_is_read_at_start_up(tmp_path: Path) -> None:
    from popframe.tls import make_self_signed

    ca = tmp_path / "ca.pem"
    make_self_signed(ca, tmp_path / "key.pem")
    settings = settings_from_mapping({**BASE, "ca_file": str(ca)}, "x")
    assert len(settings.ca_certificates) == 1
    ca.write_text("not a certificate\n")
    assert f"key 'ca_file': {ca} holds no PEM certificate" in problem({**BASE, "ca_file": str(ca)})


def test_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    settings = settings_from_mapping({**BASE, "bind_dn": "cn=x", "bind_password_file": str(secret)}, "x")
    assert settings.bind_password == b"s3cret"
    assert "s3cret" not in repr(settings)
    assert "not both" in problem({**BASE, "bind_dn": "cn=x", "bind_password": "a",
                                  "bind_password_file": str(secret)})


def test_active_directory_preset() -> None:
    settings = settings_from_mapping({"url": "ldaps://dc1.example.test", "base": "dc=example,dc=test",
                                      "preset": "active-directory"}, "x")
    assert settings.user_attribute == "sAMAccountName"
    assert "sAMAccountName=alice" in settings.filter.text("alice")
    assert settings.disabled_filter is not None
    # What the file says wins over the preset.
    settings = settings_from_mapping({"url": "ldaps://dc1", "base": "dc=x", "preset": "active-directory",
                                      "filter": "(sAMAccountName=%n)"}, "x")
    assert settings.filter.template == "(sAMAccountName=%n)"
    settings = settings_from_mapping({"url": "ldaps://dc1", "preset": "active-directory",
                                      "dn_template": "%u@example.test"}, "x")
    assert settings.filter is None and settings.dn_template is not None


def test_load_settings_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "ldap.toml"
    path.write_text('url = "ldap://127.0.0.1"\nbase = "dc=example,dc=org"\nfilter = "(uid=%u)"\n'
                    'maildrop_attribute = "mailMessageStore"\n')
    assert load_settings(str(path)).maildrop_attribute == "mailMessageStore"
    path.write_text("url = \n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_settings(str(path))
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_settings(str(tmp_path / "missing.toml"))


# -- caches ---------------------------------------------------------------------------


def test_expiring_map() -> None:
    clock = Clock()
    seen: Expiring[str, int] = Expiring(10, max_entries=2, clock=clock)
    seen.put("a", 1)
    seen.put("b", 2)
    seen.put("c", 3)
    assert (seen.get("a"), seen.get("b"), seen.get("c")) == (None, 2, 3)
    clock.now += 10
    assert seen.get("b") is None and len(seen) == 1


def test_recent_failures_are_per_password() -> None:
    clock = Clock()
    failures = RecentFailures(5, clock=clock)
    failures.remember("alice", b"wrong")
    assert failures.failed("alice", b"wrong")
    assert not failures.failed("alice", b"right")
    assert not failures.failed("bob", b"wrong")
    clock.now += 5
    assert not failures.failed("alice", b"wrong")


# -- the plugin ------------------------------------------------------------------------


@pytest.mark.process
def test_plugin_is_found_and_loads_no_reactor() -> None:
    code = (
        "import sys\n"
        "from twisted.cred.strcred import findCheckerFactory\n"
        "factory = findCheckerFactory('ldap')\n"
        "assert factory.authType == 'ldap', factory\n"
        "assert 'twisted.internet.reactor' not in sys.modules\n"
        "assert 'ldaptor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.process
def test_twistd_names_a_wrong_key(tmp_path: Path) -> None:
    from popframe.testing import POP3, run_twistd

    path = tmp_path / "ldap.toml"
    path.write_text('url = "ldap://127.0.0.1"\nbase = "dc=x"\nfilter = "(uid=%u)"\ntimout = 3\n')
    result = run_twistd(*POP3, "--listen", "tcp:0:interface=127.0.0.1",
                        "--store", f"maildir:{tmp_path}/%u", "--auth", f"ldap:{path}", cwd=tmp_path)
    assert result.returncode != 0
    assert f"--auth: ldap: {path}: key 'timout': unknown key (did you mean 'timeout'?)" in (
        result.stdout + result.stderr)


# -- the client protocol, on bytes ----------------------------------------------------------


def _connection():  # type: ignore[no-untyped-def]
    from twisted.internet.task import Clock as ReactorClock

    from popframe.auth.ldap.connection import Connection, _Client
    from popframe.auth.ldap.settings import DirectoryURL

    client = _Client()
    transport = BufferedTransport()
    client.makeConnection(transport)
    url = DirectoryURL("ldap://127.0.0.1", "127.0.0.1", 389, False)
    return client, transport, Connection(client, url, 5, ReactorClock())


@pytest.mark.adapter
def test_starttls_drops_what_came_in_plaintext_after_the_answer() -> None:
    """Behind StartTLS's answer, a man in the middle sends (in plaintext)
    the start of a bind "success" whose last field the real answer, sent
    inside TLS, would complete: it must be dropped, not joined."""
    from popframe.auth.ldap.connection import BindRefused

    client, transport, connection = _connection()
    started = connection.start_tls(object())
    up: list[object] = []
    started.addCallback(up.append)
    answer = pureldap.LDAPMessage(pureldap.LDAPExtendedResponse(resultCode=0), id=1).toWire()
    real = pureldap.LDAPMessage(pureldap.LDAPBindResponse(resultCode=49), id=2).toWire()
    forged = pureldap.LDAPMessage(pureldap.LDAPBindResponse(resultCode=0, errorMessage=real),
                                  id=2).toWire()
    assert forged.endswith(real)
    client.dataReceived(answer + forged[: -len(real)])
    assert transport.tls_options is not None and not up
    client.handshakeCompleted()
    assert up
    bound = connection.bind("uid=alice,dc=example,dc=org", b"guess")
    client.dataReceived(real)  # decrypted from TLS
    failure_of(bound, BindRefused)


@pytest.mark.adapter
def test_garbage_from_the_server_drops_the_connection() -> None:
    client, transport, connection = _connection()
    d = connection.bind("uid=alice,dc=example,dc=org", b"pw")
    client.dataReceived(b"\x30\x03\x02\x01")  # incomplete: wait
    assert not transport.aborted
    client.dataReceived(b"\xff" * 10)
    assert transport.aborted
    d.addErrback(lambda _: None)  # no answer will come: the test ends here


@pytest.mark.adapter
def test_a_bind_never_sends_an_empty_password() -> None:
    _, transport, connection = _connection()
    with pytest.raises(ValueError):
        connection.bind("uid=alice,dc=example,dc=org", b"")
    assert transport.value() == b""


# -- the pool, with stand-in connections -------------------------------------------------------


class StandIn:
    """What the pool uses of a Connection."""

    def __init__(self, url: object) -> None:
        self.url = url
        self.broken: str | None = None
        self.uses = 0
        self.closed = False

    @property
    def usable(self) -> bool:
        return self.broken is None

    def close(self) -> None:
        self.closed = True

    def search(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import succeed

        return succeed([])  # the pool's probe of a fresh anonymous connection


def _pool(urls: list[str], refuse: set[str] = frozenset(), pool_size: int = 2):  # type: ignore[no-untyped-def]
    from twisted.internet.defer import fail, succeed
    from twisted.internet.task import Clock as ReactorClock

    from popframe.auth.ldap.connection import DirectoryUnavailable
    from popframe.auth.ldap.pool import ConnectionPool

    settings = settings_from_mapping({**BASE, "url": urls, "pool_size": pool_size, "timeout": 2}, "x")
    made: list[StandIn] = []

    def connector(reactor: object, settings: object, url):  # type: ignore[no-untyped-def]
        if url.url in refuse:
            return fail(DirectoryUnavailable(f"{url.url}: refused"))
        made.append(StandIn(url))
        return succeed(made[-1])

    clock = ReactorClock()
    return ConnectionPool(settings, clock, "test", connector=connector), made, clock


def test_pool_reuses_and_retries_a_lost_connection_once() -> None:
    from twisted.internet.defer import fail, succeed

    from popframe.auth.ldap.connection import DirectoryUnavailable

    pool, made, _ = _pool(["ldap://127.0.0.1"])
    assert result_of(pool.run(lambda c: succeed("one"))) == "one"
    assert result_of(pool.run(lambda c: succeed("two"))) == "two"
    assert len(made) == 1  # reused

    def lost_on_first(connection: StandIn):  # type: ignore[no-untyped-def]
        if connection is made[0]:
            connection.broken = "connection lost: the directory restarted"
            return fail(DirectoryUnavailable("lost"))
        return succeed("three")

    assert result_of(pool.run(lost_on_first)) == "three"
    assert len(made) == 2 and made[0].closed

    def always_lost(connection: StandIn):  # type: ignore[no-untyped-def]
        connection.broken = "connection lost: again"
        return fail(DirectoryUnavailable("lost"))

    d = pool.run(always_lost)  # reused, lost, retried once on a new one: lost again
    failure_of(d, DirectoryUnavailable)
    assert len(made) == 3


def test_pool_fails_over_and_tries_a_failed_url_last() -> None:
    from twisted.internet.defer import succeed

    pool, made, clock = _pool(["ldap://127.0.0.1:1", "ldap://127.0.0.1:2"], refuse={"ldap://127.0.0.1:1"})
    assert result_of(pool.run(lambda c: succeed(c.url.port))) == 2
    assert [c.url.port for c in made] == [2]


def test_pool_waits_a_bounded_time_for_a_free_connection() -> None:
    from twisted.internet.defer import Deferred, succeed

    from popframe.auth.ldap.connection import DirectoryUnavailable

    pool, made, clock = _pool(["ldap://127.0.0.1"], pool_size=1)
    busy: Deferred[str] = Deferred()
    first = pool.run(lambda c: busy)
    second = pool.run(lambda c: succeed("second"))
    third = pool.run(lambda c: succeed("third"))
    busy.callback("first")
    assert (result_of(first), result_of(second)) == ("first", "second")
    assert result_of(third) == "third"
    blocker: Deferred[str] = Deferred()
    pool.run(lambda c: blocker)
    late = pool.run(lambda c: succeed("late"))
    clock.advance(2)
    failure_of(late, DirectoryUnavailable)
    assert len(made) == 1
