"""OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's and Microsoft's form):
an OAuth 2.0 bearer token in one client message.

OAUTHBEARER::

    gs2-header %x01 *(key "=" value %x01) %x01      e.g.
    n,a=alice@example.org,^Ahost=mail.example.org^Aport=110^Aauth=Bearer TOKEN^A^A

XOAUTH2::

    user=alice@example.org^Aauth=Bearer TOKEN^A^A

Either produces :class:`~popframe.protocol.sasl.BearerToken`; whether the
token is good is for a checker to say, after the exchange.  When it is not,
RFC 7628 section 3.2.2 wants one more round: the server sends an error
JSON document as a challenge, the client answers with a dummy response
(``%x01`` for OAUTHBEARER, empty for XOAUTH2), and only then does the
server fail.  :meth:`failure_challenge` gives the session that document.
"""

from __future__ import annotations

import json
import re

from popframe.errors import AuthenticationFailed
from popframe.protocol import sasl

__all__ = ["OAuthBearer", "OAuthTokenRefused", "XOAuth2", "parse_oauthbearer", "parse_xoauth2"]

# RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token.
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE | re.ASCII)
# RFC 7628 section 3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
_KEY = re.compile(r"[A-Za-z]+", re.ASCII)
_VALUE = re.compile(r"[\x21-\x7e \t\r\n]*", re.ASCII)
# RFC 5801: saslname = 1*(UTF8-char-safe / "=2C" / "=3D"), no bare "," or "=".
_SASLNAME_ESCAPE = re.compile(r"=(2C|3D)|=|,")


class OAuthTokenRefused(AuthenticationFailed):
    """A checker refused a bearer token.  Raised instead of a bare
    ``UnauthorizedLogin`` so the error document can name the ``scope`` the
    client should ask for and the issuer's OpenID discovery URL; the client
    reads the same ``-ERR [AUTH]`` line whatever the reason."""

    def __init__(self, scope: str | None = None, openid_configuration: str | None = None) -> None:
        super().__init__()
        self.scope = scope
        self.openid_configuration = openid_configuration


def _token(auth: str) -> str:
    match = _BEARER.fullmatch(auth)
    if match is None:
        raise sasl.SASLFailed()
    return match.group(1)


def _key_values(fields: list[bytes]) -> dict[str, str]:
    """``key=value`` pairs; duplicates, bad keys or values fail."""
    pairs: dict[str, str] = {}
    for field in fields:
        key, equals, value = field.partition(b"=")
        text = value.decode("ascii", "replace")
        if (
            not equals
            or not _KEY.fullmatch(key.decode("ascii", "replace"))
            or not _VALUE.fullmatch(text)
        ):
            raise sasl.SASLFailed()
        name = key.decode("ascii")
        if name in pairs:
            raise sasl.SASLFailed()
        pairs[name] = text
    return pairs


def _saslname(value: bytes) -> str:
    """RFC 5801 ``saslname``: ``=2C`` is ``,``, ``=3D`` is ``=``."""
    text = sasl.utf8(value)

    def unescape(match: re.Match[str]) -> str:
        if match.group(1) is None:
            raise sasl.SASLFailed()  # a bare "=" or ","
        return "," if match.group(1) == "2C" else "="

    name = _SASLNAME_ESCAPE.sub(unescape, text)
    if not name or "\0" in name:
        raise sasl.SASLFailed()
    return name


def parse_oauthbearer(message: bytes) -> sasl.BearerToken:
    """The client's OAUTHBEARER message, checked strictly; ``SASLFailed``
    for anything malformed."""
    # gs2-header = gs2-cb-flag "," [gs2-authzid] ","
    parts = message.split(b",", 2)
    if len(parts) != 3:
        raise sasl.SASLFailed()
    flag, authzid, rest = parts
    # "n": no channel binding; "y": the client could bind but thinks we
    # cannot.  "p=...": it wants binding, which OAUTHBEARER never offers.
    if flag not in (b"n", b"y"):
        raise sasl.SASLFailed()
    user: str | None = None
    if authzid:
        if not authzid.startswith(b"a="):
            raise sasl.SASLFailed()
        user = _saslname(authzid[2:])
    # kvsep *(kvpair) kvsep, each kvpair ending in kvsep
    if not rest.startswith(b"\x01") or not rest.endswith(b"\x01\x01"):
        raise sasl.SASLFailed()
    pairs = _key_values(rest[1:-2].split(b"\x01"))
    auth = pairs.get("auth")
    if auth is None:
        raise sasl.SASLFailed()
    return sasl.BearerToken(_token(auth), user)


def parse_xoauth2(message: bytes) -> sasl.BearerToken:
    """``user=USER ^A auth=Bearer TOKEN ^A ^A``; ``SASLFailed`` otherwise."""
    if not message.endswith(b"\x01\x01"):
        raise sasl.SASLFailed()
    fields = message[:-2].split(b"\x01")
    pairs: dict[str, str] = {}
    for field in fields:
        key, equals, value = field.partition(b"=")
        name = key.decode("ascii", "replace")
        if not equals or name not in ("user", "auth") or name in pairs:
            raise sasl.SASLFailed()
        pairs[name] = sasl.utf8(value)
    user, auth = pairs.get("user"), pairs.get("auth")
    if not user or auth is None or "\0" in user:
        raise sasl.SASLFailed()
    return sasl.BearerToken(_token(auth), user)


def error_document(error: AuthenticationFailed, status: str) -> bytes:
    """The JSON error challenge (RFC 7628 section 3.2.2): always the same
    for one configuration, whatever went wrong with the token."""
    document = {"status": status, "schemes": "bearer"}
    scope = getattr(error, "scope", None)
    if scope:
        document["scope"] = scope
    discovery = getattr(error, "openid_configuration", None)
    if discovery:
        document["openid-configuration"] = discovery
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class _OneMessage(sasl.Mechanism):
    """A client-first mechanism with a single message; servers send an
    empty challenge when the client gave no initial response."""

    def start(self, initial_response: bytes | None) -> sasl.Step:
        if initial_response is None:
            return sasl.Challenge(b"")
        return self.respond(initial_response)

    def respond(self, response: bytes) -> sasl.Step:
        return sasl.Outcome(self.parse(response))

    def parse(self, message: bytes) -> sasl.BearerToken:
        raise NotImplementedError


@sasl.register
class OAuthBearer(_OneMessage):
    name = "OAUTHBEARER"
    # The token is a password's equal: hidden before TLS where plaintext
    # authentication is (RFC 7628 section 5 requires TLS).
    plaintext = True

    def parse(self, message: bytes) -> sasl.BearerToken:
        return parse_oauthbearer(message)

    def failure_challenge(self, error: AuthenticationFailed) -> bytes | None:
        # RFC 7628 section 3.2.2; the client answers with %x01.
        return error_document(error, "invalid_token")


@sasl.register
class XOAuth2(_OneMessage):
    name = "XOAUTH2"
    plaintext = True

    def parse(self, message: bytes) -> sasl.BearerToken:
        return parse_xoauth2(message)

    def failure_challenge(self, error: AuthenticationFailed) -> bytes | None:
        # What Google sends; the client answers with an empty response.
        return error_document(error, "401")
