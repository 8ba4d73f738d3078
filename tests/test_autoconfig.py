"""``--autoconfig``: the documents clients set themselves up from.

Generators on bytes first; then a real ``twistd pop3`` serving them over
HTTP: each document is fetched, parsed with a real XML or plist parser,
checked field by field against the live server, and the host, port and
TLS mode it gives log in for real (poplib with SSL or STLS as the
document says, curl for implicit TLS)."""

from __future__ import annotations

import plistlib
import poplib
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from conftest import MailHome, server_args, start_server
from test_integration_clients import require
from test_watching import wait_for
from test_workers import start_pool
from twisted.python import usage

from popframe.autoconfig import (
    Auth,
    AutoconfigSettings,
    BadRequest,
    ClientEndpoint,
    NotServed,
    Security,
    client_endpoints,
)
from popframe.autoconfig.address import account_for
from popframe.autoconfig.autodiscover import (
    RESPONSE_SCHEMA,
    error_response,
    parse_request,
    response,
)
from popframe.autoconfig.endpoints import listener_security, offered_auth
from popframe.autoconfig.mobileconfig import payload_uuids, profile
from popframe.autoconfig.thunderbird import config_v11
from popframe.config.check import check_config
from popframe.options import Options

pytestmark = pytest.mark.core

HOST = "localhost"  # the test certificate's name
AUTODISCOVER_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    "<Request><EMailAddress>{address}</EMailAddress>"
    "<AcceptableResponseSchema>{schema}</AcceptableResponseSchema></Request></Autodiscover>"
)


def request_for(address: str, schema: str = RESPONSE_SCHEMA) -> bytes:
    return REQUEST.format(address=address, schema=schema).encode()


# -- the generators, on bytes ---------------------------------------------------------


CONFIG = AutoconfigSettings(endpoint="tcp:0", host="pop.example.org")
ENDPOINTS = [ClientEndpoint("pop.example.org", 995, Security.SSL, (Auth.CLEARTEXT,)),
             ClientEndpoint("pop.example.org", 110, Security.STARTTLS,
                            (Auth.CLEARTEXT, Auth.CHALLENGE))]
ALICE = account_for("Alice.Smith@Example.ORG", (), "address")


@pytest.mark.parametrize("address", [
    "", "alice", "@example.org", "alice@", "alice@@example.org", "al ice@example.org",
    "alice@exa_mple.org", "alice@-example.org", "alice@example.org.", ".alice@example.org",
    "alice..smith@example.org", "a" * 65 + "@example.org", "alice@" + "a" * 250 + ".org",
    "alice@example.org\n", "<alice@example.org>", "alice@ex ample.org", "ålice@example.org",
])
def test_malformed_addresses_are_bad_requests(address: str) -> None:
    with pytest.raises(BadRequest):
        account_for(address or None, (), "address")


def test_an_address_gives_its_account_and_login_name() -> None:
    assert ALICE.address == "Alice.Smith@example.org" and ALICE.domain == "example.org"
    assert ALICE.login_name == "Alice.Smith@example.org"
    local = account_for("o'brien+pop@example.org", ("example.org",), "local-part")
    assert local.login_name == "o'brien+pop"
    with pytest.raises(NotServed):
        account_for("alice@example.net", ("example.org",), "address")


@pytest.mark.parametrize("description, stls, expected", [
    ("tcp:110", True, Security.STARTTLS),
    ("tcp:110", False, Security.PLAIN),
    ("tcp6:110:interface=\\:\\:", True, Security.STARTTLS),
    ("ssl:995:privateKey=k.pem", False, Security.SSL),
    ("implicit-tls:tcp:995", True, Security.SSL),
    ("haproxy:ssl:995:privateKey=k.pem", True, Security.SSL),
    ("haproxy:tcp:110", True, Security.STARTTLS),
    ("systemd:domain=INET:index=0", True, Security.STARTTLS),
])
def test_the_tls_mode_of_each_listener(description: str, stls: bool, expected: Security) -> None:
    assert listener_security(description, stls) is expected


def test_endpoints_most_secure_first_and_only_where_a_password_is_taken() -> None:
    listeners = {"tcp:110": 110, "ssl:995:privateKey=k": 995, "unix:/run/pop3": None}
    cleartext = offered_auth(["USER", "PLAIN", "SCRAM-SHA-256"])
    assert cleartext == {Auth.CLEARTEXT}
    found = client_endpoints(CONFIG, listeners, False, cleartext, plaintext_anywhere=False)
    assert [(e.port, e.security) for e in found] == [(995, Security.SSL)]  # plain 110: no login
    found = client_endpoints(CONFIG, listeners, True, offered_auth(["USER", "APOP"]), False)
    assert [(e.port, e.security, e.auth) for e in found] == [
        (995, Security.SSL, (Auth.CLEARTEXT, Auth.CHALLENGE)),
        (110, Security.STARTTLS, (Auth.CLEARTEXT, Auth.CHALLENGE))]
    found = client_endpoints(CONFIG, listeners, False, offered_auth(["USER", "CRAM-MD5"]), True)
    assert found[1].security is Security.PLAIN and found[1].auth == (Auth.CHALLENGE, Auth.CLEARTEXT)


def test_autoconfig_port_replaces_the_listeners() -> None:
    from popframe.autoconfig.settings import parse_server

    config = AutoconfigSettings(endpoint="tcp:0", host="pop.example.org",
                                ports=(parse_server("starttls:110", "k", False),
                                       parse_server("SSL:995", "k", False)))
    found = client_endpoints(config, {"haproxy:tcp:10110": 10110}, True,
                             frozenset({Auth.CLEARTEXT}), False)
    assert [(e.port, e.security) for e in found] == [(995, Security.SSL), (110, Security.STARTTLS)]


def test_thunderbird_document() -> None:
    smtp = ClientEndpoint("smtp.example.org", 587, Security.STARTTLS, (Auth.CLEARTEXT,))
    root = ElementTree.fromstring(config_v11(ALICE, CONFIG, ENDPOINTS, smtp))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider.get("id") == "example.org" and provider.findtext("domain") == "example.org"
    servers = provider.findall("incomingServer")
    assert [(s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"),
             s.findtext("username"), [a.text for a in s.findall("authentication")])
            for s in servers] == [
        ("pop3", "pop.example.org", "995", "SSL", "%EMAILADDRESS%", ["password-cleartext"]),
        ("pop3", "pop.example.org", "110", "STARTTLS", "%EMAILADDRESS%",
         ["password-cleartext", "password-encrypted"])]
    assert servers[0].findtext("pop3/leaveMessagesOnServer") == "false"
    assert servers[0].findtext("pop3/downloadOnBiff") == "true"
    outgoing = provider.find("outgoingServer")
    assert outgoing.get("type") == "smtp" and outgoing.findtext("port") == "587"


def test_autodiscover_request_parsing() -> None:
    assert parse_request(request_for("alice@example.org")) == ("alice@example.org", RESPONSE_SCHEMA)
    for body in (b"", b"<Autodiscover", b"<Other/>", b"\xff\xfe<a/>", b"x" * 20000,
                 b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "xxxx">]><Autodiscover>&e;'
                 b"</Autodiscover>",
                 b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><Autodiscover/>'):
        with pytest.raises(BadRequest):
            parse_request(body)


def test_autodiscover_response() -> None:
    root = ElementTree.fromstring(response(ALICE, ENDPOINTS, None))
    ns = AUTODISCOVER_NS
    assert root.tag == "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}Autodiscover"
    account = root.find(f"{ns}Response/{ns}Account")
    assert account.findtext(f"{ns}AccountType") == "email"
    assert account.findtext(f"{ns}Action") == "settings"
    blocks = [{child.tag.removeprefix(ns): child.text for child in protocol}
              for protocol in account.findall(f"{ns}Protocol")]
    common = {"Type": "POP3", "Server": "pop.example.org", "DomainRequired": "off",
              "LoginName": "Alice.Smith@example.org", "SPA": "off", "SSL": "on",
              "AuthRequired": "on"}
    assert blocks == [{**common, "Port": "995", "Encryption": "SSL"},
                      {**common, "Port": "110", "Encryption": "TLS"}]
    error = ElementTree.fromstring(error_response(601, "no"))
    assert error.findtext(".//{*}ErrorCode") == "601"


def test_apple_profile_is_stable_per_address() -> None:
    document = plistlib.loads(profile(ALICE, CONFIG, ENDPOINTS, None))
    assert document["PayloadType"] == "Configuration"
    (mail,) = document["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypePOP"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"], mail["IncomingMailServerAuthentication"],
            mail["IncomingMailServerUsername"]) == (
        "pop.example.org", 995, True, "EmailAuthPassword", "Alice.Smith@example.org")
    assert (document["PayloadUUID"], mail["PayloadUUID"]) == payload_uuids(
        "pop.example.org", "Alice.Smith@example.org")
    again = plistlib.loads(profile(ALICE, CONFIG, ENDPOINTS, None))
    assert again["PayloadUUID"] == document["PayloadUUID"]
    other = plistlib.loads(profile(account_for("bob@example.org", (), "address"), CONFIG,
                                   ENDPOINTS, None))
    assert other["PayloadUUID"] != document["PayloadUUID"]


# -- options and check-config ---------------------------------------------------------


def base_args(home: MailHome) -> list[str]:
    return ["--listen", "tcp:0:interface=127.0.0.1", "--store", f"maildir:{home.template}",
            "--auth", f"passwd-file:{home.passwd_file}", "--workers", "1"]


@pytest.mark.parametrize("args, message", [
    (["--autoconfig", " "], "--autoconfig: give an endpoint"),
    (["--autoconfig", "nope:80"], "--autoconfig: 'nope:80': unknown endpoint type"),
    (["--autoconfig-smtp", "smtp.example.org:587"], "--autoconfig-smtp: .* write it as"),
    (["--autoconfig-smtp", "smtp.example.org:587:tls"], "the TLS mode is one of"),
    (["--autoconfig-port", "ssl:99999"], "--autoconfig-port: .* port must be a number"),
    (["--autoconfig-username", "uid"], "--autoconfig-username: 'uid': use address or local-part"),
    (["--autoconfig-domains", "example.org,bad_domain"], "'bad_domain' is not a domain name"),
    (["--autoconfig-host", "pop example"], "--autoconfig-host: 'pop example' is not a host name"),
    (["--autoconfig-sign-key", "key.pem"], "--autoconfig-sign-key: needs --autoconfig-sign-cert"),
    (["--autoconfig-sign-cert", "/nonexistent.pem"], "--autoconfig-sign-cert: cannot read"),
])
def test_option_mistakes_name_the_option(mail_home: MailHome, args: list[str], message: str
                                         ) -> None:
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(base_args(mail_home) + args)


@pytest.mark.process
def test_check_config_reports_autoconfig_keys(mail_home: MailHome) -> None:
    config = mail_home.root / "popframe.toml"
    config.write_text(f'listen = ["tcp:0"]\nstore = "maildir:{mail_home.template}"\n'
                      f'auth = ["passwd-file:{mail_home.passwd_file}"]\n'
                      'autoconfig = "tcp:8080:interface=127.0.0.1"\n'
                      'autoconfig-port = ["ssl:995", "tls:110"]\n'
                      'autoconfig-smtp = "smtp.example.org:587:ssl"\n')
    problems = check_config(config)
    assert [(p.key, p.value) for p in problems] == [("autoconfig-port", "tls:110")]
    config.write_text(config.read_text().replace('"tls:110"', '"starttls:110"'))
    assert check_config(config) == []


# -- a real server --------------------------------------------------------------------


def autoconfig_port(log: Path) -> int:
    found = wait_for(lambda: re.search(r"popframe autoconfig(?: \(TLS\))? starting on (\d+)",
                                       log.read_text(errors="replace")), "the autoconfig port")
    return int(found.group(1))


class Web:
    """The autoconfig service of a running server."""

    def __init__(self, port: int, scheme: str = "http", cafile: Path | None = None) -> None:
        self.base = f"{scheme}://{HOST}:{port}"
        self.context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    def get(self, path: str) -> tuple[int, str, bytes]:
        return self.fetch(urllib.request.Request(self.base + path))

    def post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        return self.fetch(urllib.request.Request(
            self.base + path, data=body, headers={"Content-Type": "text/xml"}))

    def fetch(self, request: urllib.request.Request) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()


def log_in(cafile: Path, host: str, port: int, mode: str, user: str, password: str) -> int:
    """Log in as a client told ``mode`` (Thunderbird's socketType) would;
    the number of messages."""
    context = ssl.create_default_context(cafile=str(cafile))
    if mode == "SSL":
        client: poplib.POP3 = poplib.POP3_SSL(host, port, context=context, timeout=10)
    else:
        client = poplib.POP3(host, port, timeout=10)
        if mode == "STARTTLS":
            client.stls(context)
        else:
            assert mode == "plain"
    try:
        client.user(user)
        client.pass_(password)
        return client.stat()[0]
    finally:
        client.quit()


def curl_list(cafile: Path, host: str, port: int, user: str, password: str) -> str:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(cafile), "--user", f"{user}:{password}",
         f"pop3s://{host}:{port}/"], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


@pytest.fixture
def users(mail_home: MailHome) -> MailHome:
    mail_home.add_user("alice", "alice password")
    mail_home.add_user("bob@example.org", "bob's p4ss")
    mail_home.deliver("alice", b"Subject: one\r\n\r\nhello\r\n")
    for n in range(2):
        mail_home.deliver("bob@example.org", b"Subject: %d\r\n\r\nbob\r\n" % n)
    return mail_home


def serve(home: MailHome, *extra: str) -> Iterator[tuple[object, Web]]:
    server = start_server(server_args(home, "--autoconfig", "tcp:0:interface=127.0.0.1",
                                      "--autoconfig-host", HOST, *extra), home.root, listeners=2)
    try:
        yield server, Web(autoconfig_port(server.log))
    finally:
        server.stop()


@pytest.fixture
def served(users: MailHome) -> Iterator[tuple[object, Web]]:
    yield from serve(users)


@pytest.mark.process
def test_thunderbird_fetches_its_document_and_logs_in(users: MailHome, served) -> None:
    server, web = served
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        status, kind, body = web.get(f"{path}?emailaddress=bob%40example.org")
        assert status == 200 and kind == "text/xml; charset=utf-8"
        provider = ElementTree.fromstring(body).find("emailProvider")
        assert provider.findtext("domain") == "example.org"
        servers = provider.findall("incomingServer")
        assert [(s.get("type"), s.findtext("hostname"), int(s.findtext("port")),
                 s.findtext("socketType"), s.findtext("username"),
                 s.findtext("authentication")) for s in servers] == [
            ("pop3", HOST, server.tls_port, "SSL", "%EMAILADDRESS%", "password-cleartext"),
            ("pop3", HOST, server.port, "STARTTLS", "%EMAILADDRESS%", "password-cleartext")]
    for s in servers:
        user = s.findtext("username").replace("%EMAILADDRESS%", "bob@example.org")
        assert log_in(users.cert, s.findtext("hostname"), int(s.findtext("port")),
                      s.findtext("socketType"), user, "bob's p4ss") == 2
    require("curl")
    ssl_server = servers[0]
    assert curl_list(users.cert, HOST, int(ssl_server.findtext("port")), "bob@example.org",
                     "bob's p4ss").splitlines() == ["1 19", "2 19"]


@pytest.mark.process
def test_outlook_autodiscover_and_log_in(users: MailHome, served) -> None:
    server, web = served
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        status, kind, body = web.post(path, request_for("bob@example.org"))
        assert status == 200 and kind == "text/xml; charset=utf-8", body
        ns = AUTODISCOVER_NS
        account = ElementTree.fromstring(body).find(f"{ns}Response/{ns}Account")
        assert account.findtext(f"{ns}AccountType") == "email"
        protocols = account.findall(f"{ns}Protocol")
        assert [(p.findtext(f"{ns}Type"), p.findtext(f"{ns}Server"), int(p.findtext(f"{ns}Port")),
                 p.findtext(f"{ns}SSL"), p.findtext(f"{ns}Encryption"), p.findtext(f"{ns}SPA"),
                 p.findtext(f"{ns}AuthRequired"), p.findtext(f"{ns}LoginName"))
                for p in protocols] == [
            ("POP3", HOST, server.tls_port, "on", "SSL", "off", "on", "bob@example.org"),
            ("POP3", HOST, server.port, "on", "TLS", "off", "on", "bob@example.org")]
    for p in protocols:
        mode = {"SSL": "SSL", "TLS": "STARTTLS"}[p.findtext(f"{ns}Encryption")]
        assert log_in(users.cert, p.findtext(f"{ns}Server"), int(p.findtext(f"{ns}Port")), mode,
                      p.findtext(f"{ns}LoginName"), "bob's p4ss") == 2
    status, _, body = web.post("/autodiscover/autodiscover.xml",
                               request_for("bob@example.org", "http://example.org/other"))
    assert status == 200 and ElementTree.fromstring(body).findtext(".//{*}ErrorCode") == "601"


@pytest.mark.parametrize("body", [
    b"<Autodiscover><Request>", b"not xml at all",
    b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<Autodiscover><Request><EMailAddress>&b;</EMailAddress></Request></Autodiscover>",
])
@pytest.mark.process
def test_malformed_autodiscover_is_400_never_a_traceback(served, body: bytes) -> None:
    server, web = served
    status, kind, answer = web.post("/autodiscover/autodiscover.xml", body)
    assert (status, kind) == (400, "text/plain; charset=utf-8")
    assert b"Traceback" not in answer and len(answer) < 100
    assert "Traceback" not in server.log.read_text()


@pytest.mark.process
def test_a_huge_autodiscover_body_is_refused_unkept(served) -> None:
    server, web = served
    status, _, answer = web.post("/autodiscover/autodiscover.xml",
                                 request_for("bob@example.org") + b" " * 4_000_000)
    assert (status, answer) == (400, b"the request is too long\n")
    assert web.post("/autodiscover/autodiscover.xml", request_for("bob@example.org"))[0] == 200


@pytest.mark.process
def test_apple_profile_logs_in(users: MailHome, served) -> None:
    server, web = served
    status, kind, body = web.get("/apple/popframe.mobileconfig?emailaddress=bob%40example.org")
    assert status == 200 and kind == "application/x-apple-aspen-config"
    document = plistlib.loads(body)
    (mail,) = document["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypePOP"
    assert mail["EmailAddress"] == "bob@example.org"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"], mail["IncomingMailServerAuthentication"]) == (
        HOST, server.tls_port, True, "EmailAuthPassword")
    assert log_in(users.cert, HOST, mail["IncomingMailServerPortNumber"], "SSL",
                  mail["IncomingMailServerUsername"], "bob's p4ss") == 2
    again = plistlib.loads(web.get("/apple/popframe.mobileconfig?emailaddress=bob@example.org")[2])
    assert again == document


@pytest.mark.process
def test_bad_requests(served) -> None:
    _, web = served
    for path in ("/mail/config-v1.1.xml", "/mail/config-v1.1.xml?emailaddress=bob",
                 "/mail/config-v1.1.xml?emailaddress=%ff%40example.org",
                 "/apple/popframe.mobileconfig?emailaddress=a%20b%40example.org"):
        status, kind, body = web.get(path)
        assert (status, kind) == (400, "text/plain; charset=utf-8"), path
        assert len(body) < 100
    assert web.get("/autodiscover/autodiscover.xml")[0] == 405
    assert web.post("/mail/config-v1.1.xml", b"")[0] == 405
    assert web.get("/nothing")[0] == 404
    assert web.get("/MAIL/config-v1.1.xml?emailaddress=bob@example.org")[0] == 404


@pytest.mark.process
def test_no_user_enumeration_and_served_domains(users: MailHome) -> None:
    for _, web in serve(users, "--autoconfig-domains", "example.org",
                        "--autoconfig-username", "local-part"):
        known = web.get("/mail/config-v1.1.xml?emailaddress=bob%40example.org")
        unknown = web.get("/mail/config-v1.1.xml?emailaddress=nobody%40example.org")
        assert known == unknown and known[0] == 200
        assert b"%EMAILLOCALPART%" in known[2]
        assert web.get("/mail/config-v1.1.xml?emailaddress=bob%40example.net")[0] == 404
        status, _, body = web.post("/autodiscover/autodiscover.xml", request_for("alice@example.org"))
        assert status == 200 and b"<LoginName>alice</LoginName>" in body


@pytest.mark.process
def test_signed_apple_profile_verifies_with_openssl(users: MailHome, tmp_path: Path) -> None:
    require("openssl")
    for _, web in serve(users, "--autoconfig-sign-cert", str(users.cert),
                        "--autoconfig-sign-key", str(users.key)):
        status, kind, signed = web.get("/apple/popframe.mobileconfig?emailaddress=bob@example.org")
        assert status == 200 and kind == "application/x-apple-aspen-config"
        assert not signed.startswith(b"<?xml")
        path = tmp_path / "profile.der"
        path.write_bytes(signed)
        result = subprocess.run(["openssl", "smime", "-verify", "-inform", "DER", "-noverify",
                                 "-in", str(path)], capture_output=True, timeout=30)
        assert result.returncode == 0 and b"Verification successful" in result.stderr
        mail = plistlib.loads(result.stdout)["PayloadContent"][0]
        assert mail["IncomingMailServerUsername"] == "bob@example.org"
        signer = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-in", str(path),
                                 "-print_certs"], capture_output=True, timeout=30)
        assert users.cert.read_text().strip().splitlines()[1] in signer.stdout.decode()


@pytest.mark.process
def test_a_plain_only_server_says_plain_and_its_login_works(users: MailHome) -> None:
    """No TLS at all, passwords allowed in the clear: socketType plain,
    SSL off, UseSSL false."""
    server = start_server(["--listen", "tcp:0:interface=127.0.0.1", "--store",
                           f"maildir:{users.template}", "--auth", f"passwd-file:{users.passwd_file}",
                           "--workers", "1", "--allow-plaintext-auth", "--autoconfig",
                           "tcp:0:interface=127.0.0.1", "--autoconfig-host", HOST], users.root)
    try:
        web = Web(autoconfig_port(server.log))
        body = web.get("/mail/config-v1.1.xml?emailaddress=bob@example.org")[2]
        (incoming,) = ElementTree.fromstring(body).findall("emailProvider/incomingServer")
        assert (int(incoming.findtext("port")), incoming.findtext("socketType")) == (server.port,
                                                                                    "plain")
        assert log_in(users.cert, HOST, server.port, "plain", "bob@example.org", "bob's p4ss") == 2
        body = web.post("/autodiscover/autodiscover.xml", request_for("bob@example.org"))[2]
        assert b"<SSL>off</SSL>" in body and b"<Encryption>" not in body
        status, _, body = web.get("/apple/popframe.mobileconfig?emailaddress=bob@example.org")
        mail = plistlib.loads(body)["PayloadContent"][0]
        assert (status, mail["IncomingMailServerPortNumber"], mail["IncomingMailServerUseSSL"]) == (
            200, server.port, False)
    finally:
        server.stop()


@pytest.mark.process
@pytest.mark.parametrize("kind", ["ssl", "implicit-tls"])
def test_autoconfig_over_https(users: MailHome, kind: str) -> None:
    """Clients ask over HTTPS: an ssl: endpoint with its own certificate,
    or implicit-tls: with --tls-cert's."""
    endpoint = (f"ssl:0:interface=127.0.0.1:privateKey={users.key}:certKey={users.cert}"
                if kind == "ssl" else "implicit-tls:tcp:0:interface=127.0.0.1")
    server = start_server(server_args(users, "--autoconfig", endpoint, "--autoconfig-host", HOST),
                          users.root, listeners=2)
    try:
        web = Web(autoconfig_port(server.log), "https", users.cert)
        status, _, body = web.get("/mail/config-v1.1.xml?emailaddress=bob%40example.org")
        assert status == 200
        ports = [int(p.text) for p in ElementTree.fromstring(body).iter("port")]
        assert ports == [server.tls_port, server.port]
    finally:
        server.stop()


@pytest.mark.process
def test_workers_parent_serves_the_bound_ports(users: MailHome) -> None:
    pool = start_pool(server_args(users, "--autoconfig", "tcp:0:interface=127.0.0.1",
                                  "--autoconfig-host", HOST)[:-2], users.root, 2)
    try:
        web = Web(autoconfig_port(pool.log))
        body = web.get("/mail/config-v1.1.xml?emailaddress=bob@example.org")[2]
        servers = ElementTree.fromstring(body).findall("emailProvider/incomingServer")
        ports = sorted(pool.port(i) for i in range(2))
        assert sorted(int(s.findtext("port")) for s in servers) == ports
        for s in servers:
            assert log_in(users.cert, HOST, int(s.findtext("port")), s.findtext("socketType"),
                          "bob@example.org", "bob's p4ss") == 2
    finally:
        pool.stop()


