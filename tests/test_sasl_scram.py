"""SCRAM-SHA-256 and -PLUS (RFC 7677, RFC 5802): bytes against the core,
driven by scramp's client (an independent implementation); in memory
through the adapter with a passwd-file; and over a real socket, plain and
with channel binding (tls-server-end-point, tls-unique, tls-exporter)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import select
import shlex
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import scramp
from conftest import MailHome, ServerProcess, server_args, start_server
from OpenSSL import SSL
from support.clients import LineClient

from popframe.auth.passwdfile import PasswdFileChecker
from popframe.auth.schemes import make_hash, scram_record
from popframe.protocol import (
    Authenticate,
    LookupSecret,
    Session,
    SessionConfig,
    sasl,
)
from popframe.protocol.sasl import scram
from popframe.protocol.sasl.scram import ScramRecord
from popframe.server import ServerConfig
from popframe.stores import run_synchronously
from popframe.testing import MemoryStore, connect_in_memory
from popframe.testing.session import b64, encoded, replies

pytestmark = pytest.mark.core

PASSWORD = "correct horse"
# doveadm pw -s SCRAM-SHA-256 -p 'correct horse'
DOVECOT_RECORD = (
    "{SCRAM-SHA-256}4096,aLNl000TvfgTbpcHID9B9A==,GnWHSAIzK4kqynk05/Mr2L/u1JbTd+hZBBsLdlxPakk=,"
    "s8yd3UslJx59YPOJx8eokaaV8wILjLedZmDSAwDiUMY="
)
RECORD = scram_record(DOVECOT_RECORD)
FAILED = b"-ERR [AUTH] authentication failed\r\n"
BINDINGS = {
    "tls-exporter": b"exporter" * 4,
    "tls-unique": b"finished" * 2,
    "tls-server-end-point": b"cert-hash" * 3,
}



def challenge(reply: object) -> str:
    """The decoded data of a ``+ base64`` continuation."""
    assert isinstance(reply, bytes) and reply.startswith(b"+ ") and reply.endswith(b"\r\n"), reply
    return base64.b64decode(reply[2:-2]).decode()


def session(**config: object) -> Session:
    config.setdefault("mechanisms", ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"))
    return Session(SessionConfig(**config))  # type: ignore[arg-type]


def tls_session(**config: object) -> Session:
    config.setdefault("channel_binding", BINDINGS.get)
    return session(tls_active=True, **config)


def secret_for(s: Session, data: bytes, secret: object | None) -> object:
    """Send ``data``, answer the LookupSecret it causes with ``secret``."""
    [event] = replies(s, data)
    assert isinstance(event, LookupSecret), event
    return encoded(s, s.secret_found(secret))


def scramp_login(
    s: Session,
    client: scramp.ScramClient,
    secret: object | None = RECORD,
    mechanism: str = "SCRAM-SHA-256",
) -> list[object]:
    """Run scramp's client against the session up to the last reply."""
    first = client.get_client_first().encode()
    [event] = replies(s, b"AUTH %s %s\r\n" % (mechanism.encode(), b64(first)))
    if event == FAILED:  # refused before any lookup (nothing about the user)
        return [event]
    assert isinstance(event, LookupSecret), event
    server_first = encoded(s, s.secret_found(secret))
    client.set_server_first(challenge(server_first))
    [reply] = replies(s, b64(client.get_client_final().encode()) + b"\r\n")
    if reply == FAILED:
        return [reply]
    client.set_server_final(challenge(reply))  # raises unless the server proved itself
    return replies(s, b"\r\n")


def client(password: str = PASSWORD, user: str = "alice", **kwargs: object) -> scramp.ScramClient:
    kwargs.setdefault("mechanisms", ["SCRAM-SHA-256"])
    return scramp.ScramClient(username=user, password=password, **kwargs)  # type: ignore[arg-type]


class ManualClient:
    """A SCRAM-SHA-256 client written from RFC 5802 section 3, for what
    scramp's client cannot send: an authzid, tls-exporter, tampering."""

    def __init__(self, user: str = "alice", password: str = PASSWORD, gs2: str = "n,,",
                 cb_data: bytes = b"", nonce: str = "fyko+d2lbbFgONRv9qkxdawL") -> None:
        self.gs2, self.cb_data, self.password = gs2, cb_data, password.encode()
        self.bare = f"n={user},r={nonce}"

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: str, *, tamper: Callable[[str], str] = lambda m: m) -> bytes:
        attributes = dict(a.split("=", 1) for a in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attributes["s"]),
                                     int(attributes["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        binding = base64.b64encode(self.gs2.encode() + self.cb_data).decode()
        without_proof = tamper(f"c={binding},r={attributes['r']}")
        auth_message = f"{self.bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def login(self, s: Session, mechanism: str = "SCRAM-SHA-256", secret: object | None = RECORD,
              **final: object) -> list[object]:
        [event] = replies(s, b"AUTH %s %s\r\n" % (mechanism.encode(), b64(self.first())))
        if event == FAILED:  # refused before any lookup (nothing about the user)
            return [event]
        assert isinstance(event, LookupSecret), event
        server_first = challenge(encoded(s, s.secret_found(secret)))  # type: ignore[arg-type]
        [reply] = replies(s, b64(self.final(server_first, **final)) + b"\r\n")  # type: ignore[arg-type]
        if reply == FAILED:
            return [reply]
        assert challenge(reply) == "v=" + base64.b64encode(self.server_signature).decode()
        return replies(s, b"\r\n")


def _session_passes_offered_mechanisms() -> bool:
    """Whether session.py tells SASLContext which mechanisms it offers."""
    s = tls_session(mechanisms=("SCRAM-SHA-256",))
    s.receive_data(b"AUTH SCRAM-SHA-256 " + b64(b"y,,n=a,r=x") + b"\r\n")
    return isinstance(s.next_event(), LookupSecret)


needs_offered_mechanisms = pytest.mark.skipif(
    not _session_passes_offered_mechanisms(),
    reason="session.py does not pass mechanisms=tuple(self.sasl_mechanisms()) to SASLContext yet",
)


# -- records --------------------------------------------------------------------------


def test_dovecot_record_is_read() -> None:
    assert ScramRecord.from_password(PASSWORD.encode(), RECORD.salt, 4096) == RECORD
    assert RECORD.iterations == 4096 and len(RECORD.salt) == 16
    assert "aLNl" not in repr(RECORD) and "GnWH" not in repr(RECORD)


def test_scramp_makes_the_same_keys() -> None:
    salt, stored_key, server_key, iterations = scramp.ScramMechanism().make_auth_info(
        PASSWORD, salt=RECORD.salt
    )
    assert ScramRecord(salt, stored_key, server_key, iterations) == RECORD


# -- the exchange, bytes against the core -----------------------------------------------


def test_capa_offers_scram_and_plus_only_over_tls() -> None:
    [capa] = replies(session(), b"CAPA\r\n")
    assert b"\r\nSASL SCRAM-SHA-256 PLAIN\r\n" in capa
    [capa] = replies(tls_session(), b"CAPA\r\n")
    assert b"\r\nSASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN\r\n" in capa
    assert replies(session(), b"AUTH SCRAM-SHA-256-PLUS\r\n") == [b"-ERR unsupported SASL mechanism\r\n"]


def test_login_with_initial_response() -> None:
    [event] = scramp_login(session(), client())
    assert event == Authenticate(sasl.Verified("alice"), "SCRAM-SHA-256")


def test_login_without_initial_response() -> None:
    s, c = session(), client()
    assert replies(s, b"AUTH SCRAM-SHA-256\r\n") == [b"+ \r\n"]
    server_first = secret_for(s, b64(c.get_client_first().encode()) + b"\r\n", RECORD)
    c.set_server_first(challenge(server_first))
    [reply] = replies(s, b64(c.get_client_final().encode()) + b"\r\n")
    c.set_server_final(challenge(reply))
    assert replies(s, b"\r\n") == [Authenticate(sasl.Verified("alice"), "SCRAM-SHA-256")]


def test_the_lookup_asks_for_scram_keys() -> None:
    [event] = replies(session(), b"AUTH SCRAM-SHA-256 " + b64(ManualClient("J=2Cr=3Dg").first()) + b"\r\n")
    assert event == LookupSecret("J,r=g", "scram-sha-256")


def test_rfc7677_example() -> None:
    """RFC 7677 section 3, byte for byte (its server nonce is not base64,
    so it is put in place of the random one)."""

    class Example(scram.ScramSHA256):
        def secret(self, secret: object | None) -> sasl.Step:
            step = super().secret(secret)
            self._nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
            self._server_first = f"r={self._nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
            return step

    record = ScramRecord.from_password(b"pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    mechanism = Example(sasl.SASLContext())
    assert mechanism.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == sasl.NeedSecret("user", "scram-sha-256")
    mechanism.secret(record)
    outcome = mechanism.respond(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert outcome == sasl.Outcome(sasl.Verified("user"), final=b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_wrong_password_fails_at_the_proof() -> None:
    assert scramp_login(session(), client("Correct horse")) == [FAILED]


def test_authorization_identity() -> None:
    [event] = ManualClient(gs2="n,a=b=2Cob,").login(session())
    assert event == Authenticate(sasl.Verified("alice", "b,ob"), "SCRAM-SHA-256")


def test_server_final_must_be_answered_with_an_empty_line() -> None:
    s = session()
    c = ManualClient()
    server_first = challenge(secret_for(s, b"AUTH SCRAM-SHA-256 " + b64(c.first()) + b"\r\n", RECORD))
    [reply] = replies(s, b64(c.final(server_first)) + b"\r\n")
    assert reply.startswith(b"+ ")
    assert replies(s, b64(b"v=something") + b"\r\n") == [FAILED]
    assert replies(s, b"CAPA\r\n")[0].startswith(b"+OK")  # the exchange is over


def server_first_of(user: str, secret: object | None, **config: object) -> dict[str, str]:
    s = session(**config)
    text = challenge(secret_for(s, b"AUTH SCRAM-SHA-256 " + b64(ManualClient(user).first()) + b"\r\n", secret))
    return dict(a.split("=", 1) for a in text.split(","))


def test_unknown_users_fail_at_the_proof_step_like_wrong_passwords() -> None:
    known = server_first_of("alice", RECORD)
    unknown = server_first_of("nobody", None)
    assert unknown.keys() == known.keys() == {"r", "s", "i"}
    assert unknown["i"] == known["i"] == "4096"
    assert len(base64.b64decode(unknown["s"])) == len(RECORD.salt)
    assert len(unknown["r"]) == len(known["r"])
    # The same salt on every attempt for one name, another for another name.
    assert server_first_of("nobody", None)["s"] == unknown["s"]
    assert server_first_of("somebody", None)["s"] != unknown["s"]
    assert ManualClient("nobody").login(session(), secret=None) == [FAILED]
    # Only SCRAM records count: anything else is an unknown user.
    assert ManualClient().login(session(), secret=b"correct horse") == [FAILED]


def test_processes_that_share_a_key_show_the_same_fake_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scram, "_fake_key", scram._fake_key)  # restored afterwards
    before = scram.fake_record("nobody")
    scram.set_fake_record_key(b"k" * 32)
    shared = scram.fake_record("nobody")
    assert shared != before and shared.iterations == scram.DEFAULT_ITERATIONS
    assert shared.salt == hmac.new(b"k" * 32, b"salt\0nobody", "sha256").digest()[:16]
    with pytest.raises(ValueError):
        scram.set_fake_record_key(b"short")


def test_fake_salt_is_not_the_users_real_one() -> None:
    assert server_first_of("alice", None)["s"] != base64.b64encode(RECORD.salt).decode()


def test_server_nonce_is_random_and_follows_the_clients() -> None:
    first, second = server_first_of("alice", RECORD), server_first_of("alice", RECORD)
    assert first["r"].startswith("fyko+d2lbbFgONRv9qkxdawL") and first["r"] != second["r"]
    fixed = server_first_of("alice", RECORD, random=lambda n: b"\1" * n)
    assert fixed["r"] == "fyko+d2lbbFgONRv9qkxdawL" + base64.b64encode(b"\1" * 24).decode()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace("c=biws", "c=eSws"),  # another gs2 header
        lambda m: m.replace("c=biws", "c=biw"),  # bad base64
        lambda m: m + "x",  # another nonce
        lambda m: m.replace(",r=fyko", ",r=fykO"),  # another client nonce
        lambda m: m.split(",r=")[0] + ",r=fyko+d2lbbFgONRv9qkxdawL",  # no server nonce
        lambda m: m.replace("c=", "x="),
        lambda m: m.split(",")[1],  # no channel binding
    ],
)
def test_tampered_client_final_fails(tamper: Callable[[str], str]) -> None:
    assert ManualClient().login(session(), tamper=tamper) == [FAILED]


def flip_a_proof_bit(final: bytes) -> bytes:
    head, proof = final.split(b",p=")
    raw = bytearray(base64.b64decode(proof))
    raw[-1] ^= 1
    return head + b",p=" + base64.b64encode(bytes(raw))


@pytest.mark.parametrize(
    "tamper",
    [
        flip_a_proof_bit,
        lambda f: f[:-4],  # short
        lambda f: f + b"AAAA",  # long
        lambda f: f.replace(b",p=", b",x="),  # no proof
        lambda f: f + b",e=1",  # something after the proof
    ],
)
def test_tampered_proof_fails(tamper: Callable[[bytes], bytes]) -> None:
    s, c = session(), ManualClient()
    server_first = challenge(secret_for(s, b"AUTH SCRAM-SHA-256 " + b64(c.first()) + b"\r\n", RECORD))
    assert replies(s, b64(tamper(c.final(server_first))) + b"\r\n") == [FAILED]


@pytest.mark.parametrize(
    "first",
    [
        b"",
        b"n,,",
        b"x,,n=alice,r=abc",
        b"n,x=bob,n=alice,r=abc",  # an authzid must be a=
        b"n,a=,n=alice,r=abc",
        b"n,,r=abc,n=alice",
        b"n,,m=ext,n=alice,r=abc",  # reserved mandatory extension
        b"n,,n=,r=abc",
        b"n,,n=al=ice,r=abc",  # bad escape
        b"n,,n=alice,r=",
        b"n,,n=alice,r=a\x7fb",
        b"n,,n=alice",
        b"n,,n=alice,r=abc,junk",
        b"n,,n=\xff,r=abc",  # not UTF-8
        b"p=tls-unique,,n=alice,r=abc",  # channel binding on the non-PLUS mechanism
        b"y",
    ],
)
def test_malformed_client_first_fails(first: bytes) -> None:
    data = b"AUTH SCRAM-SHA-256 " + (b64(first) if first else b"=") + b"\r\n"
    assert replies(session(), data) == [FAILED]


def test_cancel_with_star_at_every_step() -> None:
    s = session()
    replies(s, b"AUTH SCRAM-SHA-256\r\n")
    assert replies(s, b"*\r\n") == [b"-ERR authentication cancelled\r\n"]

    s, c = session(), ManualClient()
    secret_for(s, b"AUTH SCRAM-SHA-256 " + b64(c.first()) + b"\r\n", RECORD)
    assert replies(s, b"*\r\n") == [b"-ERR authentication cancelled\r\n"]

    s = session()
    server_first = challenge(secret_for(s, b"AUTH SCRAM-SHA-256 " + b64(c.first()) + b"\r\n", RECORD))
    replies(s, b64(c.final(server_first)) + b"\r\n")
    assert replies(s, b"*\r\n") == [b"-ERR authentication cancelled\r\n"]
    assert replies(s, b"CAPA\r\n")[0].startswith(b"+OK")


def test_nothing_after_the_exchange() -> None:
    mechanism = scram.ScramSHA256(sasl.SASLContext())
    c = ManualClient()
    mechanism.start(c.first())
    step = mechanism.secret(RECORD)
    assert isinstance(step, sasl.Challenge)
    with pytest.raises(sasl.SASLFailed):
        mechanism.secret(RECORD)  # one lookup only
    assert isinstance(mechanism.respond(c.final(step.data.decode())), sasl.Outcome)
    with pytest.raises(sasl.SASLFailed):
        mechanism.respond(b"")


# -- channel binding ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tls-server-end-point", "tls-unique"])
def test_plus_with_scramp(kind: str) -> None:
    c = client(mechanisms=["SCRAM-SHA-256-PLUS"], channel_binding=(kind, BINDINGS[kind]))
    [event] = scramp_login(tls_session(), c, mechanism="SCRAM-SHA-256-PLUS")
    assert event == Authenticate(sasl.Verified("alice"), "SCRAM-SHA-256-PLUS")


@pytest.mark.parametrize("kind", sorted(BINDINGS))
def test_plus_with_each_binding_type(kind: str) -> None:
    c = ManualClient(gs2=f"p={kind},a=bob,", cb_data=BINDINGS[kind])
    [event] = c.login(tls_session(), "SCRAM-SHA-256-PLUS")
    assert event == Authenticate(sasl.Verified("alice", "bob"), "SCRAM-SHA-256-PLUS")


def test_plus_asks_the_adapter_for_the_type_the_client_names() -> None:
    asked: list[str] = []

    def binding(kind: str) -> bytes | None:
        asked.append(kind)
        return BINDINGS[kind]

    ManualClient(gs2="p=tls-exporter,,", cb_data=BINDINGS["tls-exporter"]).login(
        tls_session(channel_binding=binding), "SCRAM-SHA-256-PLUS"
    )
    assert asked == ["tls-exporter"]


@pytest.mark.parametrize(
    ("gs2", "cb_data", "bindings"),
    [
        ("p=tls-unique,,", b"another connection", BINDINGS),  # a man in the middle
        ("p=tls-exporter,,", BINDINGS["tls-unique"], BINDINGS),  # another type's data
        ("p=tls-unique,,", BINDINGS["tls-unique"], {}),  # the adapter has none
        ("p=tls-unknown,,", b"x", {"tls-unknown": b"x"}),  # a type popframe does not take
        ("p=tls_unique,,", b"x", {"tls_unique": b"x"}),  # not a cb-name
        ("n,,", b"", BINDINGS),  # -PLUS without binding
        ("y,,", b"", BINDINGS),
    ],
)
def test_plus_refuses_bad_binding(gs2: str, cb_data: bytes, bindings: dict[str, bytes]) -> None:
    s = tls_session(channel_binding=bindings.get)
    assert ManualClient(gs2=gs2, cb_data=cb_data).login(s, "SCRAM-SHA-256-PLUS") == [FAILED]


def test_binding_in_client_final_must_match_the_header() -> None:
    c = ManualClient(gs2="p=tls-unique,,", cb_data=BINDINGS["tls-unique"])

    def tamper(m: str) -> str:
        return m.replace(m.split(",")[0], "c=" + base64.b64encode(b"n,,").decode())

    assert c.login(tls_session(), "SCRAM-SHA-256-PLUS", tamper=tamper) == [FAILED]


def test_downgrade_is_refused() -> None:
    """scramp with channel binding, told only SCRAM-SHA-256 exists, sends
    "y": on a connection that offers -PLUS someone removed it."""
    c = client(channel_binding=("tls-server-end-point", BINDINGS["tls-server-end-point"]))
    assert c.get_client_first().startswith("y,,")
    c = client(channel_binding=("tls-server-end-point", BINDINGS["tls-server-end-point"]))
    assert scramp_login(tls_session(), c) == [FAILED]


def test_y_is_fine_where_no_plus_could_be_offered() -> None:
    c = client(channel_binding=("tls-server-end-point", BINDINGS["tls-server-end-point"]))
    [event] = scramp_login(session(), c)  # no TLS: no -PLUS
    assert event == Authenticate(sasl.Verified("alice"), "SCRAM-SHA-256")
    # Not told what the session offers, the mechanism assumes -PLUS exists
    # wherever it could work: TLS with channel-binding data.
    context = sasl.SASLContext(tls_active=True, channel_binding=lambda kind: None)
    assert scram.ScramSHA256(context).start(b"y,,n=alice,r=abc") == sasl.NeedSecret("alice", "scram-sha-256")


@pytest.mark.parametrize(
    ("offered", "accepted"),
    [(("SCRAM-SHA-256",), True), (("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"), False)],
)
def test_y_follows_what_the_connection_offers(offered: tuple[str, ...], accepted: bool) -> None:
    context = sasl.SASLContext(tls_active=True, channel_binding=BINDINGS.get, mechanisms=offered)
    mechanism = scram.ScramSHA256(context)
    if accepted:
        assert mechanism.start(b"y,,n=alice,r=abc") == sasl.NeedSecret("alice", "scram-sha-256")
    else:
        with pytest.raises(sasl.SASLFailed):
            mechanism.start(b"y,,n=alice,r=abc")


@needs_offered_mechanisms
def test_y_is_fine_when_the_session_offers_no_plus() -> None:
    [event] = ManualClient(gs2="y,,").login(tls_session(mechanisms=("SCRAM-SHA-256",)))
    assert event == Authenticate(sasl.Verified("alice"), "SCRAM-SHA-256")


# -- in memory, through the adapter, with a passwd-file -----------------------------------------


@pytest.fixture
def passwd_checker(tmp_path: Path) -> PasswdFileChecker:
    path = tmp_path / "users"
    path.write_text(
        f"alice:{DOVECOT_RECORD}\n"
        f"bob:{make_hash('SHA512-CRYPT', b'bob password')}\n"
    )
    return PasswdFileChecker(path, run_blocking=run_synchronously)


@pytest.mark.adapter
def test_scram_login_through_the_adapter(passwd_checker: PasswdFileChecker) -> None:
    store = MemoryStore({"alice": [b"Subject: hi\n\nhello\n"]})
    conn = connect_in_memory(store, passwd_checker, ServerConfig(mechanisms=("SCRAM-SHA-256", "PLAIN")))
    assert b"\r\nSASL SCRAM-SHA-256 PLAIN\r\n" in conn.send(b"CAPA\r\n")
    c = client()
    server_first = conn.send(b"AUTH SCRAM-SHA-256 " + b64(c.get_client_first().encode()) + b"\r\n")
    c.set_server_first(challenge(server_first))
    server_final = conn.send(b64(c.get_client_final().encode()) + b"\r\n")
    c.set_server_final(challenge(server_final))
    assert conn.send(b"\r\n") == b"+OK maildrop has 1 messages (22 octets)\r\n"
    # The record also verifies the plain password (USER/PASS, PLAIN).
    again = connect_in_memory(MemoryStore({}), passwd_checker, ServerConfig(mechanisms=("PLAIN",)))
    assert again.send(b"AUTH PLAIN " + b64(b"\0alice\0correct horse") + b"\r\n").startswith(b"+OK maildrop")


@pytest.mark.adapter
@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("bob", "bob password"), ("carol", "x")])
def test_scram_failures_through_the_adapter(passwd_checker: PasswdFileChecker, user: str, password: str) -> None:
    conn = connect_in_memory(MemoryStore({}), passwd_checker, ServerConfig(mechanisms=("SCRAM-SHA-256",)))
    c = client(password, user)
    server_first = conn.send(b"AUTH SCRAM-SHA-256 " + b64(c.get_client_first().encode()) + b"\r\n")
    assert challenge(server_first).count(",") == 2  # alice, bob (crypt) and carol (unknown) alike
    c.set_server_first(challenge(server_first))
    assert conn.send(b64(c.get_client_final().encode()) + b"\r\n") == FAILED


# -- over a real socket ---------------------------------------------------------------------


def unthrottled_server_args(home: MailHome, *extra: str) -> list[str]:
    """Failed logins answered at once (where the throttling options exist),
    so the failures these tests make do not slow the ones after them."""
    from popframe.tap import Options

    names = {option[0] for option in Options.optParameters}
    if "throttle-base" in names:
        extra += ("--throttle-base", "0")
    if "max-auth-failures" in names:
        extra += ("--max-auth-failures", "0")
    return server_args(home, *extra)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MailHome, ServerProcess]]:
    home = MailHome(tmp_path_factory.mktemp("scram"))
    home.passwd_file.touch()
    from popframe.tls import make_self_signed

    make_self_signed(home.cert, home.key)
    home.add_user("sarah", "sarah's pw", scheme="SCRAM-SHA-256")
    home.add_user("paul", "paul's pw", scheme="PLAIN")
    home.deliver("sarah", b"Subject: hi\n\nhello\n")
    args = unthrottled_server_args(home, "--mechanisms", "SCRAM-SHA-256-PLUS,SCRAM-SHA-256,CRAM-MD5,APOP,PLAIN")
    server = start_server(args, home.root, listeners=2)
    yield home, server
    server.stop()


def socket_login(conn: LineClient, mechanism: bytes, first: bytes, final: Callable[[str], bytes]) -> bytes:
    reply = conn.command(b"AUTH " + mechanism + b" " + b64(first))
    reply = conn.command(b64(final(challenge(reply + b"\r\n"))))
    if not reply.startswith(b"+ "):
        return reply
    conn.signature = challenge(reply + b"\r\n")  # type: ignore[attr-defined]
    return conn.command(b"")


def scramp_final(c: scramp.ScramClient) -> Callable[[str], bytes]:
    def final(server_first: str) -> bytes:
        c.set_server_first(server_first)
        return c.get_client_final().encode()

    return final


@pytest.mark.process
@pytest.mark.parametrize(
    ("password", "expected"), [("sarah's pw", b"+OK maildrop has 1 messages"), ("wrong", FAILED[:-2])]
)
def test_scram_over_a_socket(auth_server: tuple[MailHome, ServerProcess], password: str, expected: bytes) -> None:
    _, server = auth_server
    c = client(password, "sarah")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        conn = LineClient(sock)
        assert conn.line().startswith(b"+OK")
        reply = socket_login(conn, b"SCRAM-SHA-256", c.get_client_first().encode(), scramp_final(c))
        assert reply.startswith(expected)
        if expected.startswith(b"+OK"):
            c.set_server_final(conn.signature)  # type: ignore[attr-defined]
            assert conn.command(b"QUIT").startswith(b"+OK")


def mpop(home: MailHome, port: int, user: str, password: str, auth: str, tls: bool = False) -> tuple[int, str]:
    """Log in with mpop (GNU SASL), leave the mail; (exit code, its dialogue)."""
    command = [
        "mpop", "--host=127.0.0.1", f"--port={port}", f"--user={user}", f"--auth={auth}",
        f"--passwordeval=printf %s {shlex.quote(password)}", "--only-new=off", "--keep=on",
        "--delivery=mbox,/dev/null", "--debug", "--quiet", "--tls-starttls=off",
        *(["--tls=on", f"--tls-trust-file={home.cert}", "--tls-certcheck=off"] if tls else ["--tls=off"]),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, "HOME": str(home.root)})
    return result.returncode, result.stdout + result.stderr


needs_mpop = pytest.mark.skipif(shutil.which("mpop") is None, reason="mpop is installed by tests/run.sh")


@pytest.mark.process
@needs_mpop
@pytest.mark.parametrize(("password", "tls", "ok"), [("sarah's pw", False, True), ("sarah's pw", True, True),
                                                     ("wrong", False, False)])
def test_mpop_scram(auth_server: tuple[MailHome, ServerProcess], password: str, tls: bool, ok: bool) -> None:
    home, server = auth_server
    code, dialogue = mpop(home, server.tls_port if tls else server.port, "sarah", password, "scram-sha-256", tls)
    assert "--> AUTH SCRAM-SHA-256" in dialogue
    if ok:
        assert code == 0 and "<-- +OK maildrop has 1 messages" in dialogue, dialogue
    else:
        assert code == 77 and "<-- -ERR [AUTH] authentication failed" in dialogue, dialogue


def tls_client_context(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.maximum_version = maximum
    return context


@pytest.mark.process
@pytest.mark.parametrize(
    ("kind", "maximum"),
    [("tls-server-end-point", None), ("tls-unique", ssl.TLSVersion.TLSv1_2)],
)
def test_scram_plus_over_tls_with_scramp(
    auth_server: tuple[MailHome, ServerProcess], kind: str, maximum: ssl.TLSVersion | None
) -> None:
    _, server = auth_server
    context = tls_client_context(maximum)
    with (
        socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as raw,
        context.wrap_socket(raw) as sock,
    ):
        conn = LineClient(sock)
        assert conn.line().startswith(b"+OK")
        c = client("sarah's pw", "sarah", mechanisms=["SCRAM-SHA-256-PLUS"], channel_binding=(kind, sock))
        first = c.get_client_first().encode()
        assert first.startswith(b"p=" + kind.encode())
        assert socket_login(conn, b"SCRAM-SHA-256-PLUS", first, scramp_final(c)).startswith(b"+OK maildrop")
        c.set_server_final(conn.signature)  # type: ignore[attr-defined]


@pytest.mark.process
@pytest.mark.parametrize("right_connection", [True, False])
def test_scram_plus_over_tls_13_with_tls_exporter(
    auth_server: tuple[MailHome, ServerProcess], right_connection: bool
) -> None:
    """RFC 9266: pyOpenSSL exports the keying material on the client side;
    another connection's keying material is refused."""
    _, server = auth_server
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as raw:
        sock = SSL.Connection(context, raw)
        sock.set_connect_state()
        while True:
            try:
                sock.do_handshake()
                break
            except SSL.WantReadError:
                assert select.select([raw], [], [], 10)[0], "timed out"
        assert sock.get_protocol_version_name() == "TLSv1.3"
        exported = sock.export_keying_material(b"EXPORTER-Channel-Binding", 32)
        conn = LineClient(sock)
        assert conn.line().startswith(b"+OK")
        cb_data = exported if right_connection else bytes(32)
        c = ManualClient("sarah", "sarah's pw", gs2="p=tls-exporter,,", cb_data=cb_data)
        reply = socket_login(conn, b"SCRAM-SHA-256-PLUS", c.first(), c.final)
        if right_connection:
            assert reply.startswith(b"+OK maildrop"), reply
            assert conn.signature == "v=" + base64.b64encode(c.server_signature).decode()  # type: ignore[attr-defined]
        else:
            assert reply == FAILED[:-2]
