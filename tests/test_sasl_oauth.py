"""OAUTHBEARER (RFC 7628) and XOAUTH2: the core's parsing and failure
round, the JWT validator and checker, the ``jwt`` plugin, the whole server
in memory, and curl over a real socket."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey
from twisted.internet.defer import Deferred

from popframe.auth.credentials import OAuthBearerToken
from popframe.auth.oauth import (
    InvalidToken,
    JWKSFile,
    JWTCheckerFactory,
    JWTValidator,
    OAuthBearerChecker,
    parse_jwks,
)
from popframe.config import ConfigurationError
from popframe.errors import AuthenticationFailed, TemporaryFailure
from popframe.protocol import Authenticate, Session, SessionConfig, sasl
from popframe.protocol.sasl.oauth import (
    OAuthBearer,
    OAuthTokenRefused,
    XOAuth2,
    parse_oauthbearer,
    parse_xoauth2,
)
from popframe.server import ServerConfig
from popframe.testing import MemoryStore, connect_in_memory, failure_of, result_of
from popframe.testing.session import b64, replies

pytestmark = pytest.mark.core

ISSUER = "https://idp.example.org/realms/mail"
AUDIENCE = "pop3"
ALICE = "alice@example.org"
FAILED = b"-ERR [AUTH] authentication failed\r\n"



def bearer(token: str, user: str | None = ALICE) -> bytes:
    authzid = b"a=" + user.encode() if user is not None else b""
    return b"n," + authzid + b",\x01host=localhost\x01port=110\x01auth=Bearer " + token.encode() + b"\x01\x01"


def xoauth2(token: str, user: str = ALICE) -> bytes:
    return b"user=" + user.encode() + b"\x01auth=Bearer " + token.encode() + b"\x01\x01"


def session() -> Session:
    return Session(SessionConfig(mechanisms=("OAUTHBEARER", "XOAUTH2")))


# -- the core: parsing ------------------------------------------------------------


def test_oauthbearer_with_initial_response() -> None:
    [event] = replies(session(), b"AUTH OAUTHBEARER " + b64(bearer("abc.def_g-h")) + b"\r\n")
    assert event == Authenticate(sasl.BearerToken("abc.def_g-h", ALICE), "OAUTHBEARER")


def test_oauthbearer_after_an_empty_challenge() -> None:
    s = session()
    assert replies(s, b"AUTH OAUTHBEARER\r\n") == [b"+ \r\n"]
    [event] = replies(s, b64(bearer("tok", None)) + b"\r\n")
    assert event == Authenticate(sasl.BearerToken("tok", None), "OAUTHBEARER")


def test_xoauth2() -> None:
    s = session()
    assert replies(s, b"AUTH XOAUTH2\r\n") == [b"+ \r\n"]
    [event] = replies(s, b64(xoauth2("ya29.a0Af-_~+/x==")) + b"\r\n")
    assert event == Authenticate(sasl.BearerToken("ya29.a0Af-_~+/x==", ALICE), "XOAUTH2")


def test_tokens_are_not_in_reprs() -> None:
    assert "secret" not in repr(sasl.BearerToken("secret-token", ALICE))


@pytest.mark.parametrize(
    ("message", "token", "user"),
    [
        (b"n,,\x01auth=Bearer t\x01\x01", "t", None),
        (b"y,,\x01auth=Bearer t\x01\x01", "t", None),  # client could bind; we cannot
        (b"n,a=a=2Cb=3Dc,\x01auth=bearer  t=\x01\x01", "t=", "a,b=c"),
        (b"n,,\x01auth=Bearer t\x01future=x y\x01\x01", "t", None),  # unknown keys ignored
        ("n,a=j\u00fcrgen,\x01auth=Bearer t\x01\x01".encode(), "t", "j\u00fcrgen"),
    ],
)
def test_oauthbearer_forms(message: bytes, token: str, user: str | None) -> None:
    assert parse_oauthbearer(message) == sasl.BearerToken(token, user)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x01",
        b"n,,auth=Bearer t\x01\x01",  # no kvsep after the gs2 header
        b"n,,\x01auth=Bearer t\x01",  # not terminated
        b"n,,\x01auth=Bearer t",
        b"n,,\x01\x01",  # no auth
        b"n,,\x01host=x\x01\x01",
        b"p=tls-unique,,\x01auth=Bearer t\x01\x01",  # channel binding
        b"x,,\x01auth=Bearer t\x01\x01",
        b"n,b=alice,\x01auth=Bearer t\x01\x01",
        b"n,a=,\x01auth=Bearer t\x01\x01",
        b"n,a=al=ice,\x01auth=Bearer t\x01\x01",  # bare "=" in a saslname
        b"n,a=\xff,\x01auth=Bearer t\x01\x01",
        b"n,,\x01auth=Basic dDp0\x01\x01",
        b"n,,\x01auth=Bearer\x01\x01",
        b"n,,\x01auth=Bearer t u\x01\x01",
        b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",  # twice
        b"n,,\x01au-th=x\x01auth=Bearer t\x01\x01",  # bad key
        b"n,,\x01noequals\x01auth=Bearer t\x01\x01",
        b"n,,\x01auth=Bearer t\x01\x01\x01",
        b"n,,\x01auth=Bearer t\x00\x01\x01",
    ],
)
def test_malformed_oauthbearer_fails(message: bytes) -> None:
    with pytest.raises(sasl.SASLFailed):
        parse_oauthbearer(message)
    assert replies(session(), b"AUTH OAUTHBEARER " + b64(message) + b"\r\n" if message
                   else b"AUTH OAUTHBEARER =\r\n") == [FAILED]


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"user=a\x01auth=Bearer t\x01",
        b"user=a\x01auth=Bearer t",
        b"auth=Bearer t\x01\x01",  # no user
        b"user=\x01auth=Bearer t\x01\x01",
        b"user=a\x01\x01",
        b"user=a\x01auth=Basic x\x01\x01",
        b"user=a\x01user=b\x01auth=Bearer t\x01\x01",
        b"user=a\x01host=x\x01auth=Bearer t\x01\x01",
        b"user=\xff\x01auth=Bearer t\x01\x01",
        b"user=a\x00b\x01auth=Bearer t\x01\x01",
    ],
)
def test_malformed_xoauth2_fails(message: bytes) -> None:
    with pytest.raises(sasl.SASLFailed):
        parse_xoauth2(message)


def test_offered_like_plaintext_mechanisms() -> None:
    s = Session(SessionConfig(mechanisms=("OAUTHBEARER", "XOAUTH2"), plaintext_auth_allowed=False,
                              stls_available=True))
    [capa] = replies(s, b"CAPA\r\n")
    assert b"OAUTHBEARER" not in capa
    s = Session(SessionConfig(mechanisms=("OAUTHBEARER", "XOAUTH2"), plaintext_auth_allowed=False,
                              tls_active=True))
    [capa] = replies(s, b"CAPA\r\n")
    assert b"SASL OAUTHBEARER XOAUTH2\r\n" in capa


# -- the core: the failure round (RFC 7628 section 3.2.2) ----------------------------


def test_failure_documents() -> None:
    context = sasl.SASLContext()
    assert json.loads(OAuthBearer(context).failure_challenge(AuthenticationFailed())) == {
        "status": "invalid_token", "schemes": "bearer",
    }
    refused = OAuthTokenRefused("https://mail.example.org/pop", f"{ISSUER}/.well-known/openid-configuration")
    assert json.loads(OAuthBearer(context).failure_challenge(refused)) == {
        "status": "invalid_token", "schemes": "bearer", "scope": "https://mail.example.org/pop",
        "openid-configuration": f"{ISSUER}/.well-known/openid-configuration",
    }
    assert json.loads(XOAuth2(context).failure_challenge(refused))["status"] == "401"


def test_oauthbearer_failure_sends_the_error_json_then_fails() -> None:
    s = session()
    replies(s, b"AUTH OAUTHBEARER " + b64(bearer("t")) + b"\r\n")
    challenge = s.request_failed(OAuthTokenRefused("pop")).encode()
    assert challenge.startswith(b"+ ")
    assert json.loads(base64.b64decode(challenge[2:])) == {
        "status": "invalid_token", "schemes": "bearer", "scope": "pop",
    }
    assert replies(s, b64(b"\x01") + b"\r\n") == [FAILED]
    assert replies(s, b"NOOP\r\n") == [b"-ERR command not valid in this state\r\n"]


def test_xoauth2_failure_takes_an_empty_response() -> None:
    s = session()
    replies(s, b"AUTH XOAUTH2 " + b64(xoauth2("t")) + b"\r\n")
    assert s.request_failed(AuthenticationFailed()).encode().startswith(b"+ ")
    assert replies(s, b"\r\n") == [FAILED]


def test_other_failures_are_not_token_errors() -> None:
    s = session()
    replies(s, b"AUTH OAUTHBEARER " + b64(bearer("t")) + b"\r\n")
    assert s.request_failed(TemporaryFailure()).encode().startswith(b"-ERR [SYS/TEMP]")
    [event] = replies(s, b"AUTH OAUTHBEARER " + b64(bearer("t")) + b"\r\n")
    assert isinstance(event, Authenticate)


# -- tokens -----------------------------------------------------------------------


class Keys:
    """An identity provider: signing keys and their JWKS file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
        self.ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
        self.publish(self.rsa, self.ec, self.ed)

    def publish(self, *keys: object) -> None:
        document = {"keys": [key.as_dict(private=False) for key in keys]}  # type: ignore[attr-defined]
        self.path.write_text(json.dumps(document))

    def token(self, key: object = None, alg: str = "RS256", header: dict | None = None,
              **claims: object) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now,
                "sub": "4f1d-uuid", "email": ALICE, "email_verified": True, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        key = key or self.rsa
        with warnings.catch_warnings():  # joserfc: RFC 9864 deprecates "EdDSA"
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.encode({"alg": alg, "kid": key.kid, **(header or {})}, body,  # type: ignore[attr-defined]
                              key, algorithms=[alg])


def _part(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _claims() -> dict:
    return {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "email": ALICE}


def unsigned() -> str:
    return f"{_part({'alg': 'none', 'typ': 'JWT'})}.{_part(_claims())}."


def raw_token(header: dict, key: RSAKey) -> str:
    """RS256 over any header, signed without joserfc's checks."""
    signing_input = f"{_part(header)}.{_part(_claims())}"
    signature = key.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "jwks.json")


def validator(keys: Keys, **options: object) -> JWTValidator:
    return JWTValidator(JWKSFile(keys.path), ISSUER, AUDIENCE, **options)  # type: ignore[arg-type]



def refusal(d: Deferred) -> str:
    return str(failure_of(d, InvalidToken).value)


def test_valid_tokens_of_each_algorithm(keys: Keys) -> None:
    v = validator(keys)
    assert result_of(v.validate(keys.token(keys.rsa, "RS256"))) == ALICE
    assert result_of(v.validate(keys.token(keys.ec, "ES256"))) == ALICE
    assert result_of(v.validate(keys.token(keys.ed, "EdDSA"))) == ALICE
    assert result_of(v.validate(keys.token(keys.ed, "Ed25519"))) == ALICE


def test_audience_may_be_a_list(keys: Keys) -> None:
    assert result_of(validator(keys).validate(keys.token(aud=["account", AUDIENCE]))) == ALICE


@pytest.mark.parametrize("claim", ["sub", "preferred_username"])
def test_the_user_claim_is_configurable(keys: Keys, claim: str) -> None:
    token = keys.token(preferred_username="alice")
    assert result_of(validator(keys, claim=claim).validate(token)) == {
        "sub": "4f1d-uuid", "preferred_username": "alice"}[claim]


def test_a_key_without_kid_is_found_by_type(keys: Keys) -> None:
    key = ECKey.generate_key("P-256")
    keys.publish(keys.rsa, key)
    token = jwt.encode({"alg": "ES256"}, {"iss": ISSUER, "aud": AUDIENCE,
                                          "exp": int(time.time()) + 60, "email": ALICE}, key)
    assert result_of(validator(keys).validate(token)) == ALICE


def test_leeway_on_expiry(keys: Keys) -> None:
    token = keys.token(exp=int(time.time()) - 30)
    assert result_of(validator(keys).validate(token)) == ALICE
    assert "exp" in refusal(validator(keys, leeway=0).validate(token))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda k: k.token(exp=int(time.time()) - 3600), "exp"),
        (lambda k: k.token(exp=None), "exp"),
        (lambda k: k.token(nbf=int(time.time()) + 3600), "nbf"),
        (lambda k: k.token(iat=int(time.time()) + 3600), "iat"),
        (lambda k: k.token(aud="imap"), "aud"),
        (lambda k: k.token(aud=None), "aud"),
        (lambda k: k.token(iss="https://evil.example.org"), "iss"),
        (lambda k: k.token(iss=None), "iss"),
        (lambda k: k.token(email=None), "email"),
        (lambda k: k.token(email=["alice@example.org"]), "email"),
        (lambda k: k.token(email_verified=False), "email_verified"),
        (lambda k: unsigned(), "'none'"),
        (lambda k: k.token(RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})), "signature"),
        (lambda k: k.token(ECKey.generate_key("P-256", parameters={"kid": "other"}), "ES256"), "no key"),
        (lambda k: k.token(k.rsa, "RS384"), "'RS384' is not allowed"),
        (lambda k: k.token(ECKey.generate_key("P-256", parameters={"kid": "rsa-1"}), "ES256"), "no key"),
        (lambda k: raw_token({"alg": "RS256", "kid": "rsa-1", "crit": ["x-ext"], "x-ext": 1}, k.rsa),
         "x-ext"),
        (lambda k: "not-a-jwt", "not a JWS"),
        (lambda k: k.token()[:-4] + "AAAA", "signature"),
    ],
)
def test_refused_tokens(keys: Keys, make, reason: str) -> None:
    assert reason in refusal(validator(keys).validate(make(keys)))


def test_hmac_with_the_public_key_is_refused(keys: Keys) -> None:
    # The classic confusion: HS256 keyed with the RSA public key's bytes.
    # (Signed by hand: joserfc itself refuses to make such a key.)
    signing_input = f"{_part({'alg': 'HS256', 'kid': 'rsa-1'})}.{_part(_claims())}"
    mac = hmac.new(keys.rsa.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert "'HS256' is not allowed" in refusal(validator(keys).validate(forged))


def test_the_jwks_file_is_reread_when_it_changes(keys: Keys) -> None:
    v = validator(keys)
    old = keys.token()
    assert result_of(v.validate(old)) == ALICE
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    keys.publish(rotated)
    os.utime(keys.path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert result_of(v.validate(keys.token(rotated))) == ALICE
    assert "no key" in refusal(v.validate(old))


def test_a_missing_jwks_file_is_a_temporary_failure(keys: Keys) -> None:
    v = validator(keys)
    keys.path.unlink()
    failure_of(v.validate(keys.token()), TemporaryFailure)
    keys.publish(keys.rsa)
    assert result_of(v.validate(keys.token())) == ALICE


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"{", "not JSON"),
        (b"[]", 'no "keys"'),
        (b'{"keys": []}', "no signing keys"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', r"key #1 \(kid 'h'\) is a symmetric"),
        (b'{"keys": [{"kty": "RSA", "n": "AQAB"}]}', "key #1 is invalid"),
        (b'{"keys": [{"kty": "XYZ"}]}', "unsupported kty"),
        (b'{"keys": [7]}', "not a JSON object"),
    ],
)
def test_bad_jwks_files(document: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_jwks(document, "jwks.json")


def test_encryption_keys_are_skipped_and_private_parts_dropped(keys: Keys) -> None:
    enc = RSAKey.generate_key(2048, parameters={"use": "enc"}).as_dict(private=False)
    parsed = parse_jwks(json.dumps({"keys": [enc, keys.ec.as_dict(private=True)]}).encode(), "j")
    assert len(parsed.keys) == 1 and not parsed.keys[0].is_private


# -- the checker ------------------------------------------------------------------------


def test_checker_maps_the_token_to_its_user(keys: Keys) -> None:
    checker = OAuthBearerChecker(validator(keys))
    assert result_of(checker.requestAvatarId(OAuthBearerToken(keys.token(), None))) == ALICE.encode()
    assert result_of(checker.requestAvatarId(OAuthBearerToken(keys.token(), "Alice@Example.org"))) == ALICE.encode()


def test_checker_refuses_a_user_other_than_the_tokens(keys: Keys) -> None:
    checker = OAuthBearerChecker(validator(keys), scope="pop")
    failure = failure_of(checker.requestAvatarId(OAuthBearerToken(keys.token(), "bob@example.org")))
    assert failure.check(OAuthTokenRefused)  # type: ignore[attr-defined]
    assert failure.value.scope == "pop"  # type: ignore[attr-defined]


def test_checker_passes_temporary_failures_on(keys: Keys) -> None:
    checker = OAuthBearerChecker(validator(keys))
    keys.path.unlink()
    failure_of(checker.requestAvatarId(OAuthBearerToken(keys.token(), None)), TemporaryFailure)


# -- the plugin -------------------------------------------------------------------------


def test_factory_builds_a_checker(keys: Keys) -> None:
    checker = JWTCheckerFactory().generateChecker(
        f"jwks={keys.path},issuer={ISSUER},audience={AUDIENCE},claim=sub,leeway=5,"
        "algorithms=ES256+RS256,scope=https://mail.example.org/pop,"
        f"openid-configuration={ISSUER}/.well-known/openid-configuration"
    )
    v = checker.validator
    assert (v.issuer, v.audience, v.claim, v.leeway, v.algorithms) == (ISSUER, AUDIENCE, "sub", 5, ("ES256", "RS256"))
    assert checker.scope == "https://mail.example.org/pop"
    assert checker.openid_configuration.endswith("/openid-configuration")
    assert result_of(checker.requestAvatarId(OAuthBearerToken(keys.token(), None))) == b"4f1d-uuid"


@pytest.mark.parametrize(
    ("argstring", "problem"),
    [
        ("", "jwks, issuer, audience required"),
        ("jwks=JWKS,issuer=x", "audience required"),
        ("jwks=JWKS,issuer=x,audience=y,colour=red", "unknown option 'colour'"),
        ("jwks=JWKS,issuer=x,audience=y,audience=z", "audience given twice"),
        ("jwks=JWKS,issuer=x,audience=y,leeway=-1", "leeway"),
        ("jwks=JWKS,issuer=x,audience=y,algorithms=HS256", "HS256 not allowed"),
        ("jwks=JWKS,issuer=x,audience=y,algorithms=none", "none not allowed"),
        ("jwks=/nonexistent/jwks.json,issuer=x,audience=y", "jwks: cannot read /nonexistent/jwks.json"),
        ("jwks=BAD,issuer=x,audience=y", "symmetric"),
    ],
)
def test_factory_errors(keys: Keys, tmp_path: Path, argstring: str, problem: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    argstring = argstring.replace("JWKS", str(keys.path)).replace("BAD", str(bad))
    with pytest.raises(ConfigurationError, match=problem) as info:
        JWTCheckerFactory().generateChecker(argstring)
    assert info.value.key == "--auth"


def test_the_plugin_is_found() -> None:
    from twisted.cred import strcred

    assert isinstance(strcred.findCheckerFactory("jwt"), JWTCheckerFactory)


# -- the whole server, in memory ------------------------------------------------------------


def connect(keys: Keys, **config: object):
    store = MemoryStore({ALICE: [b"Subject: hi\r\n\r\nhello\r\n"]})
    checker = JWTCheckerFactory().generateChecker(
        f"jwks={keys.path},issuer={ISSUER},audience={AUDIENCE},scope=pop3"
    )
    return connect_in_memory(store, checker, ServerConfig(**config))  # type: ignore[arg-type]


@pytest.mark.adapter
def test_in_memory_capa_and_login(keys: Keys) -> None:
    conn = connect(keys)
    assert b"SASL OAUTHBEARER XOAUTH2\r\n" in conn.send(b"CAPA\r\n")
    assert conn.send(b"AUTH OAUTHBEARER " + b64(bearer(keys.token())) + b"\r\n") == (
        b"+OK maildrop has 1 messages (22 octets)\r\n"
    )
    conn = connect(keys)
    assert conn.send(b"AUTH XOAUTH2\r\n") == b"+ \r\n"
    assert conn.send(b64(xoauth2(keys.token(keys.ed, "EdDSA"))) + b"\r\n").startswith(b"+OK maildrop")


@pytest.mark.adapter
@pytest.mark.parametrize(
    "make",
    [
        lambda k: k.token(exp=int(time.time()) - 3600),
        lambda k: k.token(aud="imap"),
        lambda k: k.token(iss="https://evil.example.org"),
        lambda k: k.token(RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})),
        lambda k: unsigned(),
        lambda k: k.token(email="bob@example.org"),  # claims alice, token is bob's
    ],
    ids=["expired", "audience", "issuer", "signature", "alg-none", "other-user"],
)
def test_in_memory_refusals_send_the_error_json(keys: Keys, make) -> None:
    conn = connect(keys)
    challenge = conn.send(b"AUTH OAUTHBEARER " + b64(bearer(make(keys))) + b"\r\n")
    assert challenge.startswith(b"+ ") and challenge.endswith(b"\r\n")
    assert json.loads(base64.b64decode(challenge[2:])) == {
        "status": "invalid_token", "schemes": "bearer", "scope": "pop3",
    }
    assert conn.send(b64(b"\x01") + b"\r\n") == FAILED
    assert conn.send(b"AUTH XOAUTH2 " + b64(xoauth2(make(keys))) + b"\r\n").startswith(b"+ ")
    assert conn.send(b"\r\n") == FAILED
    # The connection is still good for a proper login.
    assert conn.send(b"AUTH OAUTHBEARER " + b64(bearer(keys.token())) + b"\r\n").startswith(b"+OK")


@pytest.mark.adapter
def test_a_refused_token_is_counted_and_delayed_once(keys: Keys) -> None:
    """With throttling, the failure round is one failed login: delayed
    before the error JSON, not again before the final -ERR."""
    from popframe.throttle import MemoryThrottleStore, Throttle

    conn = connect(keys, throttle=Throttle(MemoryThrottleStore(), base=1, max_delay=30, max_auth_failures=0,
                                           max_ip_failures=0))
    assert conn.send(b"AUTH OAUTHBEARER " + b64(bearer(keys.token(aud="imap"))) + b"\r\n") == b""
    conn.clock.advance(1)  # the first failure's delay
    conn.pump.flush()
    assert bytes(conn.client.received).endswith(b"\r\n+ " + b64(
        b'{"status":"invalid_token","schemes":"bearer","scope":"pop3"}') + b"\r\n")
    assert conn.send(b"AQ==\r\n") == FAILED  # at once
    assert conn.send(b"AUTH OAUTHBEARER " + b64(bearer(keys.token(aud="imap"))) + b"\r\n") == b""
    conn.clock.advance(1.5)
    conn.pump.flush()
    assert not bytes(conn.client.received).endswith(b"+ ")  # the second failure waits 2 s, not 4
    conn.clock.advance(0.5)
    conn.pump.flush()
    assert bytes(conn.client.received).endswith(b"\r\n")
    assert bytes(conn.client.received).rsplit(b"\r\n", 2)[-2].startswith(b"+ eyJ")


@pytest.mark.adapter
def test_in_memory_unavailable_keys_are_a_temporary_failure(keys: Keys) -> None:
    conn = connect(keys)
    keys.path.unlink()
    reply = conn.send(b"AUTH OAUTHBEARER " + b64(bearer(keys.token())) + b"\r\n")
    assert reply.startswith(b"-ERR [SYS/TEMP]")


@pytest.mark.adapter
def test_not_offered_without_a_token_checker() -> None:
    from popframe.testing import MemoryChecker

    conn = connect_in_memory(MemoryStore({}), MemoryChecker({}))
    assert b"OAUTHBEARER" not in conn.send(b"CAPA\r\n")
    assert conn.send(b"AUTH XOAUTH2 " + b64(xoauth2("t")) + b"\r\n") == b"-ERR unsupported SASL mechanism\r\n"


# -- a real server and curl -----------------------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by tests/run.sh")


@pytest.fixture
def oauth_server(request, mail_home, tmp_path: Path):
    """A server taking tokens; ``request.param``, if any, is the one token
    mechanism it offers (curl 7.88 picks OAUTHBEARER whenever it is offered,
    whatever --login-options says)."""
    from conftest import server_args, start_server

    keys = Keys(tmp_path / "idp-jwks.json")
    for sub in ("new", "cur", "tmp"):
        (mail_home.maildir(ALICE) / sub).mkdir(parents=True, exist_ok=True)
    mail_home.deliver(ALICE, b"Subject: token\r\n\r\nby token\r\n")
    args = server_args(
        mail_home, "--auth", f"jwt:jwks={keys.path},issuer={ISSUER},audience={AUDIENCE},scope=pop3",
        *(("--mechanisms", f"PLAIN,{request.param}") if getattr(request, "param", None) else ()),
    )
    server = start_server(args, mail_home.root, listeners=2)
    server.mechanism = getattr(request, "param", None) or "OAUTHBEARER"  # type: ignore[attr-defined]
    yield server, keys
    server.stop()


def curl_token(mail_home, port: int, mechanism: str, token: str, *extra: str):
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", "--verbose",
         "--cacert", str(mail_home.cert), "--ssl-reqd", "--user", f"{ALICE}:",
         "--oauth2-bearer", token, "--login-options", f"AUTH={mechanism}", *extra,
         f"pop3://127.0.0.1:{port}/1"],
        capture_output=True, timeout=30,
    )


@pytest.mark.process
@needs_curl
@pytest.mark.parametrize("oauth_server", ["OAUTHBEARER", "XOAUTH2"], indirect=True)
@pytest.mark.parametrize("initial_response", [False, True])
def test_curl_logs_in_with_a_token(mail_home, oauth_server, initial_response: bool) -> None:
    server, keys = oauth_server
    mechanism = server.mechanism
    extra = ("--sasl-ir",) if initial_response else ()
    result = curl_token(mail_home, server.port, mechanism, keys.token(keys.ec, "ES256"), *extra)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout == b"Subject: token\r\n\r\nby token\r\n"
    assert f"AUTH {mechanism}".encode() in result.stderr


@pytest.mark.process
@needs_curl
@pytest.mark.parametrize("oauth_server", ["OAUTHBEARER", "XOAUTH2"], indirect=True)
def test_curl_with_a_bad_token_is_denied(mail_home, oauth_server) -> None:
    server, keys = oauth_server
    result = curl_token(mail_home, server.port, server.mechanism, keys.token(aud="imap"))
    assert result.returncode == 67, result.stderr.decode(errors="replace")  # CURLE_LOGIN_DENIED
    # The RFC 7628 round: the error JSON; for OAUTHBEARER curl answers %x01
    # and reads the -ERR, for XOAUTH2 it gives up at the challenge itself.
    document = json.dumps({"status": "invalid_token" if server.mechanism == "OAUTHBEARER" else "401",
                           "schemes": "bearer", "scope": "pop3"}, separators=(",", ":"))
    assert b"< + " + b64(document.encode()) in result.stderr
    if server.mechanism == "OAUTHBEARER":
        transcript = result.stderr
        assert transcript.index(b"< + eyJ") < transcript.index(b"> AQ==") < transcript.index(b"< -ERR [AUTH]")
