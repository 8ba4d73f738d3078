"""OAuth 2.0 bearer tokens (OAUTHBEARER, XOAUTH2): a pluggable token
validator, the cred checker that uses one, and the built-in validator for
JWT access tokens signed by keys in a JWKS file (``--auth jwt:...``).

A token validator turns a token into the user it was issued for, or
refuses it::

    @implementer(ITokenValidator)
    class Introspection:
        def validate(self, token: str) -> Deferred[str]:
            ...  # ask the authorization server (RFC 7662), without blocking

    portal.registerChecker(OAuthBearerChecker(Introspection()))

Refusals are :class:`InvalidToken` (a cred ``UnauthorizedLogin``, with a
reason for the log that never reaches the client); anything that says the
validator could not decide (keys unreadable, the introspection endpoint
down) should be ``TemporaryFailure``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ClaimError, JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.config import ConfigurationError
from popframe.files import WatchedFile
from popframe.interfaces.auth import InvalidToken, IOAuthBearerToken, ITokenValidator
from popframe.protocol.sasl.oauth import OAuthTokenRefused

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "ITokenValidator",
    "InvalidToken",
    "JWKSFile",
    "JWTCheckerFactory",
    "JWTValidator",
    "OAuthBearerChecker",
    "parse_options",
]

log = Logger()

#: Signature algorithms a JWKS of public keys can verify.  Never "none",
#: never HS* (a public key used as an HMAC secret forges anything).
ALLOWED_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA", "Ed25519",
)
#: ``Ed25519`` is RFC 9864's name for what ``EdDSA`` means with an Ed25519 key.
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA", "Ed25519")
#: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
DEFAULT_LEEWAY = 60

_KEY_TYPES: dict[str, tuple[type[RSAKey | ECKey | OKPKey], str | None]] = {
    "RS256": (RSAKey, None), "RS384": (RSAKey, None), "RS512": (RSAKey, None),
    "PS256": (RSAKey, None), "PS384": (RSAKey, None), "PS512": (RSAKey, None),
    "ES256": (ECKey, "P-256"), "ES384": (ECKey, "P-384"), "ES512": (ECKey, "P-521"),
    "EdDSA": (OKPKey, None), "Ed25519": (OKPKey, "Ed25519"),
}


# -- the checker ---------------------------------------------------------------


@implementer(ICredentialsChecker)
class OAuthBearerChecker:
    """Checks ``IOAuthBearerToken`` credentials with an
    :class:`ITokenValidator`: the avatar id is the token's user.  A client
    that also names a user (OAUTHBEARER's ``a=``, XOAUTH2's ``user=``) must
    name that same user (compared case-insensitively: the login is the
    token's user either way).

    Refusals fail with :class:`OAuthTokenRefused`, which carries ``scope``
    and ``openid_configuration`` for the RFC 7628 error document."""

    credentialInterfaces = (IOAuthBearerToken,)

    def __init__(
        self,
        validator: ITokenValidator,
        *,
        scope: str | None = None,
        openid_configuration: str | None = None,
    ) -> None:
        self.validator = validator
        self.scope = scope
        self.openid_configuration = openid_configuration

    def requestAvatarId(self, credentials: IOAuthBearerToken) -> Deferred:
        claimed = credentials.user
        if not credentials.token:
            return fail(self._refused("empty token", claimed))
        d = maybeDeferred(self.validator.validate, credentials.token)

        def matched(user: str) -> bytes:
            if not isinstance(user, str) or not user:
                raise InvalidToken("the validator returned no user")
            if claimed is not None and claimed.casefold() != user.casefold():
                raise InvalidToken(f"the token is for {user!r}")
            return user.encode("utf-8")

        def refused(failure: Failure) -> Failure:
            failure.trap(UnauthorizedLogin)
            return Failure(self._refused(str(failure.value), claimed))

        return d.addCallback(matched).addErrback(refused)

    def _refused(self, reason: str, claimed: str | None) -> OAuthTokenRefused:
        log.info("bearer token refused (user={user}): {reason}",
                 user=claimed if claimed is not None else "-", reason=reason or "invalid")
        return OAuthTokenRefused(self.scope, self.openid_configuration)


# -- JWKS files ------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """The usable signing keys of one version of the file."""

    keys: tuple[Any, ...]


def parse_jwks(data: bytes, source: str) -> _Keys:
    """The public signing keys of a JWKS document (RFC 7517 section 5).
    ``ValueError`` says what is wrong, naming the key (number and kid)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{source} is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f'{source} is not a JWKS: no "keys" list')
    keys = []
    for number, data_key in enumerate(document["keys"], start=1):
        name = f"key #{number}"
        if isinstance(data_key, dict) and isinstance(data_key.get("kid"), str):
            name += f" (kid {data_key['kid']!r})"
        if not isinstance(data_key, dict):
            raise ValueError(f"{source}: {name} is not a JSON object")
        kty = data_key.get("kty")
        if kty == "oct":
            raise ValueError(
                f"{source}: {name} is a symmetric (oct) key; only public keys "
                "(RSA, EC, OKP) may verify tokens here"
            )
        if kty not in ("RSA", "EC", "OKP"):
            raise ValueError(f"{source}: {name} has unsupported kty {kty!r}")
        if data_key.get("use", "sig") != "sig":
            continue  # an encryption key, published alongside
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)
                key = JWKRegistry.import_key(data_key)
        except (JoseError, ValueError, TypeError) as error:
            raise ValueError(f"{source}: {name} is invalid: {error}") from None
        if key.is_private:
            log.warn("{source}: {name} includes its private part; only the public "
                     "part is used, and the private one does not belong in this file",
                     source=source, name=name)
            key = JWKRegistry.import_key(key.as_dict(private=False))
        keys.append(key)
    if not keys:
        raise ValueError(f"{source} holds no signing keys")
    return _Keys(tuple(keys))


class JWKSFile(WatchedFile[_Keys]):
    """A JWKS file, read at start and re-read when its stat changes (an
    identity provider's keys rotate; a cron job or a sidecar refreshes the
    file); see :class:`~popframe.files.WatchedFile`."""

    problem = "cannot use the JWKS file"

    def parse(self, data: bytes) -> _Keys:
        return parse_jwks(data, self.path)

    def summary(self, value: _Keys) -> str:
        return f"{len(value.keys)} signing keys"

    def keys(self) -> tuple[Any, ...]:
        return self.current().keys


# -- JWT access tokens -------------------------------------------------------------


@implementer(ITokenValidator)
class JWTValidator:
    """Validates JWT access tokens (RFC 9068 and what Keycloak, Entra ID,
    Okta, Auth0... issue): the signature with a key of ``jwks`` (chosen by
    ``kid``) and an allowed algorithm, ``iss`` equal to ``issuer``, ``aud``
    equal to or containing ``audience``, ``exp`` in the future (``nbf`` and
    ``iat`` not in it) with ``leeway`` seconds of clock skew.  The user is
    the string value of claim ``claim``; with ``email``, a token whose
    ``email_verified`` is false is refused.

    Verification is a few tens of microseconds of CPU: it runs on the
    reactor thread, which also stats the JWKS file once per token."""

    def __init__(
        self,
        jwks: JWKSFile,
        issuer: str,
        audience: str,
        *,
        claim: str = "email",
        leeway: int = DEFAULT_LEEWAY,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.claim = claim
        self.leeway = leeway
        self.algorithms = tuple(algorithms)
        bad = [a for a in self.algorithms if a not in ALLOWED_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(f"algorithms must be among {', '.join(ALLOWED_ALGORITHMS)}")
        self.clock = clock
        self._registry = jws.JWSRegistry(
            algorithms=list(self.algorithms), strict_check_header=False
        )

    def validate(self, token: str) -> Deferred:
        return maybeDeferred(self.user_of, token)

    def user_of(self, token: str) -> str:
        """Blocking form of :meth:`validate`."""
        keys = self.jwks.keys()
        claims = self._verified_claims(token, keys)
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self.clock()),
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ClaimError as error:
            raise InvalidToken(f"claim {error.claim}: {error.description}") from None
        except JoseError as error:
            raise InvalidToken(f"claims: {error}") from None
        user = claims.get(self.claim)
        if not isinstance(user, str) or not user:
            raise InvalidToken(f"no {self.claim!r} claim")
        if self.claim == "email" and claims.get("email_verified") is False:
            raise InvalidToken("email_verified is false")
        return user

    def _verified_claims(self, token: str, keys: tuple[Any, ...]) -> dict[str, Any]:
        try:
            compact = jws.extract_compact(token.encode("ascii"), None, self._registry)
            header = compact.headers()
        except (JoseError, ValueError, UnicodeError) as error:
            raise InvalidToken(f"not a JWS: {error}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidToken(f"algorithm {alg!r} is not allowed")
        candidates = _candidate_keys(keys, alg, header.get("kid"))
        if not candidates:
            raise InvalidToken(f"no key for kid {header.get('kid')!r} and alg {alg}")
        for key in candidates:
            try:
                with warnings.catch_warnings():
                    # joserfc warns that RFC 9864 deprecates the name "EdDSA".
                    warnings.simplefilter("ignore", SecurityWarning)
                    decoded = jwt.decode(token, key, list(self.algorithms), self._registry)
            except BadSignatureError:
                continue  # without a kid, the next key of the type may fit
            except JoseError as error:
                raise InvalidToken(str(error)) from None
            if not isinstance(decoded.claims, dict):
                raise InvalidToken("the payload is not a JSON object")
            return decoded.claims
        raise InvalidToken("bad signature")


def _candidate_keys(keys: tuple[Any, ...], alg: str, kid: object) -> list[Any]:
    """Keys that could have made an ``alg`` signature: the right type and
    curve, no other ``alg`` declared, and the token's ``kid`` when it names
    one (without a kid, every such key is tried)."""
    key_type, curve = _KEY_TYPES[alg]
    found = []
    for key in keys:
        if not isinstance(key, key_type):
            continue
        if curve is not None and key.get("crv") != curve:
            continue
        declared = key.alg
        if declared and declared != alg and {declared, alg} != {"EdDSA", "Ed25519"}:
            continue
        if kid is not None and key.kid != kid:
            continue
        found.append(key)
    return found


# -- the plugin --------------------------------------------------------------------

_OPTIONS = ("jwks", "issuer", "audience", "claim", "leeway", "algorithms", "scope",
            "openid-configuration")


def parse_options(argstring: str, auth_type: str, required: Iterable[str],
                  known: Iterable[str]) -> dict[str, str]:
    """``key=value,key=value`` (values may hold ``:`` and ``=``, as URLs
    do, but not ``,``)."""
    known = tuple(known)
    options: dict[str, str] = {}
    for item in argstring.split(","):
        item = item.strip()
        if not item:
            continue
        key, equals, value = item.partition("=")
        key = key.strip().lower()
        if not equals or key not in known:
            raise ConfigurationError(
                "--auth", f"{auth_type}: unknown option {key!r} (known: {', '.join(known)})"
            )
        if key in options:
            raise ConfigurationError("--auth", f"{auth_type}: {key} given twice")
        options[key] = value.strip()
    missing = [key for key in required if not options.get(key)]
    if missing:
        raise ConfigurationError("--auth", f"{auth_type}: {', '.join(missing)} required")
    return options


@implementer(ICheckerFactory, IPlugin)
class JWTCheckerFactory:
    """``--auth jwt:jwks=/etc/popframe/jwks.json,issuer=https://idp.example,audience=pop3``"""

    authType = "jwt"
    argStringFormat = (
        "jwt:jwks=/path/jwks.json,issuer=URL,audience=AUDIENCE"
        "[,claim=email][,leeway=60][,algorithms=RS256+ES256+EdDSA][,scope=SCOPE]"
        "[,openid-configuration=URL]"
    )
    credentialInterfaces = (IOAuthBearerToken,)
    authHelp = """OAuth 2.0 bearer tokens (SASL OAUTHBEARER and XOAUTH2) that are JWT
access tokens, verified against the public keys of a JWKS file.

Options, comma-separated key=value pairs:
  jwks       the JWKS file (the identity provider's jwks_uri document); re-read
             when it changes, so a cron job can refresh it
  issuer     the exact "iss" the tokens carry
  audience   a value the "aud" must equal or contain
  claim      the claim that names the mailbox user: email (default), sub,
             preferred_username, or any other string claim
  leeway     seconds of clock skew allowed on exp/nbf/iat (default 60)
  algorithms allowed signature algorithms joined with "+" (default
             RS256+ES256+EdDSA+Ed25519; HS* and none are never accepted)
  scope      the scope clients should request, sent in the RFC 7628 error
  openid-configuration  the issuer's discovery URL, sent in the error too
A client that names a user (OAUTHBEARER a=, XOAUTH2 user=) must name the
token's user.
"""

    def generateChecker(self, argstring: str = "") -> OAuthBearerChecker:
        options = parse_options(argstring, self.authType, ("jwks", "issuer", "audience"), _OPTIONS)
        try:
            leeway = int(options.get("leeway", DEFAULT_LEEWAY))
            if leeway < 0:
                raise ValueError
        except ValueError:
            raise ConfigurationError(
                "--auth", "jwt: leeway must be a whole number of seconds"
            ) from None
        named = options.get("algorithms", "+".join(DEFAULT_ALGORITHMS))
        algorithms = tuple(a for a in named.split("+") if a)
        bad = [a for a in algorithms if a not in ALLOWED_ALGORITHMS]
        if bad or not algorithms:
            raise ConfigurationError(
                "--auth", f"jwt: algorithms: {', '.join(bad) or 'none given'} not allowed "
                f"(choose among {'+'.join(ALLOWED_ALGORITHMS)}; HS* and none never are)"
            )
        jwks = JWKSFile(options["jwks"])
        try:
            jwks.load()
        except OSError as error:
            raise ConfigurationError(
                "--auth", f"jwt: jwks: cannot read {jwks.path}: {error.strerror or error}"
            ) from None
        except ValueError as error:
            raise ConfigurationError("--auth", f"jwt: jwks: {error}") from None
        validator = JWTValidator(
            jwks, options["issuer"], options["audience"],
            claim=options.get("claim") or "email", leeway=leeway, algorithms=algorithms,
        )
        return OAuthBearerChecker(
            validator,
            scope=options.get("scope") or None,
            openid_configuration=options.get("openid-configuration") or None,
        )
