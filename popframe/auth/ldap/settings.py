"""The ``--auth ldap:FILE.toml`` settings: read, checked and frozen at start-up.

Every key is known here with its type; an unknown or wrong key stops
start-up with its name and what was expected
(``--auth: ldap: /etc/popframe/ldap.toml: key 'timeout': expected a
positive number of seconds, got 'soon'``), so a typo never becomes a
silent default.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ldaptor.protocols import pureldap

from popframe.auth.ldap.filters import DNTemplate, FilterSyntaxError, FilterTemplate, parse_filter
from popframe.config import ConfigurationError

__all__ = ["PRESETS", "DirectoryURL", "LDAPSettings", "load_settings"]

#: Presets: defaults for a kind of directory, under what the file says.
PRESETS: dict[str, dict[str, Any]] = {
    # Users log in as sAMAccountName ("alice") or userPrincipalName
    # ("alice@example.com"); the avatar (maildrop name) is the
    # sAMAccountName either way.  ACCOUNTDISABLE (bit 2 of
    # userAccountControl) refuses the login; referrals are never chased.
    "active-directory": {
        "filter": "(&(objectClass=user)(|(sAMAccountName=%u)(userPrincipalName=%u)))",
        "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
        "user_attribute": "sAMAccountName",
    },
}

_SCOPES = {"base": pureldap.LDAP_SCOPE_baseObject, "one": pureldap.LDAP_SCOPE_singleLevel,
           "sub": pureldap.LDAP_SCOPE_wholeSubtree}


@dataclass(frozen=True, slots=True)
class DirectoryURL:
    """One ``url``: where to connect and how to secure it."""

    url: str
    host: str
    port: int
    ldaps: bool

    @property
    def loopback(self) -> bool:
        """Whether the host is this machine (plaintext is allowed there)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class LDAPSettings:
    """One checker's settings; see docs/ldap.md for each key."""

    path: str
    urls: tuple[DirectoryURL, ...]
    base: str = ""
    filter: FilterTemplate | None = None
    dn_template: DNTemplate | None = None
    starttls: bool = False
    ca_file: str | None = None
    # ca_file's certificates, read once at start-up.
    ca_certificates: tuple[Any, ...] = field(default=(), repr=False)
    bind_dn: str | None = None
    bind_password: bytes | None = field(default=None, repr=False)
    scope: int = pureldap.LDAP_SCOPE_wholeSubtree
    user_attribute: str | None = None
    maildrop_attribute: str | None = None
    login_delay_attribute: str | None = None
    disabled_filter: pureldap.LDAPFilter | None = None
    timeout: float = 5.0
    cache_ttl: float = 0.0
    negative_cache_ttl: float = 10.0
    allow_plaintext: bool = False
    pool_size: int = 8
    preset: str | None = None

    @property
    def attributes(self) -> tuple[str, ...]:
        """What to read from a user's entry."""
        names = (self.user_attribute, self.maildrop_attribute, self.login_delay_attribute)
        return tuple(name for name in names if name)


# -- checking one value -----------------------------------------------------------


class _Wrong(Exception):
    """A key's value is wrong; the message says what was expected."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Wrong(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Wrong(f"expected true or false, got {value!r}")
    return value


def _seconds(value: Any, *, zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
            value == 0 and not zero) or value != value or value == float("inf"):
        kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
        raise _Wrong(f"expected {kind}, got {value!r}")
    return float(value)


def _positive(value: Any) -> float:
    return _seconds(value, zero=False)


def _not_negative(value: Any) -> float:
    return _seconds(value, zero=True)


def _pool_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise _Wrong(f"expected a whole number from 1 to 1000, got {value!r}")
    return value


def _attribute(value: Any) -> str:
    text = _text(value)
    if not text.replace("-", "").replace(";", "").replace(".", "").isalnum() or not text.isascii():
        raise _Wrong(f"expected an attribute name such as mailMessageStore, got {value!r}")
    return text


def _urls(value: Any) -> tuple[DirectoryURL, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _Wrong("expected a URL or a list of URLs such as \"ldaps://ldap.example.org\", "
                     f"got {value!r}")
    return tuple(_url(item) for item in items)


def _url(value: Any) -> DirectoryURL:
    text = _text(value)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise _Wrong(f"{text!r} is not a URL: {error}") from None
    if parts.scheme not in ("ldap", "ldaps"):
        raise _Wrong(f"expected an ldap:// or ldaps:// URL, got {text!r}")
    if not parts.hostname:
        raise _Wrong(f"{text!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise _Wrong(f"{text!r}: give only scheme, host and port (the base DN is the 'base' key)")
    ldaps = parts.scheme == "ldaps"
    return DirectoryURL(text, unquote(parts.hostname), port or (636 if ldaps else 389), ldaps)


def _filter(value: Any) -> pureldap.LDAPFilter:
    try:
        return parse_filter(_text(value))
    except FilterSyntaxError as error:
        raise _Wrong(str(error)) from None


def _filter_template(value: Any) -> FilterTemplate:
    try:
        template = FilterTemplate(_text(value))
    except (ConfigurationError, FilterSyntaxError) as error:
        raise _Wrong(getattr(error, "problem", str(error))) from None
    if not template.uses_user:
        raise _Wrong(f"{value!r} needs %u or %n, or every user would match the same entries")
    return template


def _dn_template(value: Any) -> DNTemplate:
    try:
        template = DNTemplate(_text(value))
    except ConfigurationError as error:
        raise _Wrong(error.problem) from None
    if not template.uses_user:
        raise _Wrong(f"{value!r} needs %u or %n")
    return template


def _scope(value: Any) -> int:
    if value not in _SCOPES:
        raise _Wrong(f"expected one of {', '.join(_SCOPES)}, got {value!r}")
    return _SCOPES[value]


def _preset(value: Any) -> str:
    if value not in PRESETS:
        raise _Wrong(f"expected one of {', '.join(repr(p) for p in PRESETS)}, got {value!r}")
    return str(value)


def _readable_file(value: Any) -> str:
    path = os.path.expanduser(_text(value))
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise _Wrong(f"cannot read {path}: {error.strerror or error}") from None
    return path


def _ca_certificates(path: str) -> tuple[Any, ...]:
    """The PEM certificates in ``path``."""
    from twisted.internet import ssl

    with open(path, "rb") as f:
        pem = f.read()
    marker = b"-----END CERTIFICATE-----"
    blocks = [block + marker for block in pem.split(marker)
              if b"-----BEGIN CERTIFICATE-----" in block]
    try:
        certificates = tuple(ssl.Certificate.loadPEM(block) for block in blocks)
    except Exception as error:
        raise _Wrong(f"{path}: not a PEM certificate: {error}") from None
    if not certificates:
        raise _Wrong(f"{path} holds no PEM certificate")
    return certificates


def _password(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise _Wrong("expected a non-empty string")
    return value.encode("utf-8")


def _password_file(value: Any) -> bytes:
    path = _readable_file(value)
    with open(path, "rb") as f:
        password = f.read().rstrip(b"\r\n")
    if not password:
        raise _Wrong(f"{path} is empty")
    return password


#: key -> (how to check it, the LDAPSettings field it fills).
_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "url": (_urls, "urls"),
    "starttls": (_boolean, "starttls"),
    "ca_file": (_readable_file, "ca_file"),
    "bind_dn": (_text, "bind_dn"),
    "bind_password": (_password, "bind_password"),
    "bind_password_file": (_password_file, "bind_password"),
    "base": (_text, "base"),
    "scope": (_scope, "scope"),
    "filter": (_filter_template, "filter"),
    "dn_template": (_dn_template, "dn_template"),
    "preset": (_preset, "preset"),
    "user_attribute": (_attribute, "user_attribute"),
    "maildrop_attribute": (_attribute, "maildrop_attribute"),
    "login_delay_attribute": (_attribute, "login_delay_attribute"),
    "disabled_filter": (_filter, "disabled_filter"),
    "timeout": (_positive, "timeout"),
    "cache_ttl": (_not_negative, "cache_ttl"),
    "negative_cache_ttl": (_not_negative, "negative_cache_ttl"),
    "allow_plaintext": (_boolean, "allow_plaintext"),
    "pool_size": (_pool_size, "pool_size"),
}


# -- the whole file -------------------------------------------------------------------


def load_settings(path: str) -> LDAPSettings:
    """Read and check ``path``; raises ``ConfigurationError("--auth", ...)``."""
    path = path.strip()
    if not path:
        raise ConfigurationError(
            "--auth", "ldap: no settings file given, use ldap:/etc/popframe/ldap.toml")
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as error:
        raise ConfigurationError(
            "--auth", f"ldap: cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError("--auth", f"ldap: {path}: not valid TOML: {error}") from None
    return settings_from_mapping(document, path)


def settings_from_mapping(document: Mapping[str, Any], path: str) -> LDAPSettings:
    """Check a parsed file (see :func:`load_settings`)."""

    def wrong(key: str, problem: str) -> ConfigurationError:
        return ConfigurationError("--auth", f"ldap: {path}: key '{key}': {problem}")

    values: dict[str, Any] = {}
    preset = document.get("preset")
    given = dict(document)
    if preset is not None:
        try:
            given = {**PRESETS[_preset(preset)], **given}
        except _Wrong as error:
            raise wrong("preset", str(error)) from None
    for key, value in given.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = (f" (did you mean '{close[0]}'?)" if close
                    else f" (known keys: {', '.join(sorted(_KEYS))})")
            raise wrong(key, "unknown key" + hint)
        check, name = _KEYS[key]
        try:
            values[name] = check(value)
        except _Wrong as error:
            raise wrong(key, str(error)) from None
    if "bind_password" in document and "bind_password_file" in document:
        raise wrong("bind_password_file", "give bind_password or bind_password_file, not both")
    if "url" not in given:
        raise wrong("url", "required, e.g. url = \"ldaps://ldap.example.org\"")
    if "dn_template" in document and "filter" in document:
        raise wrong("dn_template",
                    "give filter (search, then bind) or dn_template (bind at once), not both")
    if "dn_template" in document:
        values.pop("filter", None)  # a preset's filter gives way to an explicit template
    if "filter" not in values and "dn_template" not in values:
        raise wrong("filter", "required (or dn_template, or a preset), e.g. filter = \"(uid=%u)\"")
    if "filter" in values and "base" not in values:
        raise wrong("base", "required with filter, e.g. base = \"ou=people,dc=example,dc=org\"")
    if ("bind_dn" in values) != ("bind_password" in values):
        missing = "bind_password" if "bind_dn" in values else "bind_dn"
        raise wrong(missing, "bind_dn and bind_password (or bind_password_file) go together")
    if "ca_file" in values:
        try:
            values["ca_certificates"] = _ca_certificates(values["ca_file"])
        except _Wrong as error:
            raise wrong("ca_file", str(error)) from None
    settings = LDAPSettings(path=path, **values)
    for url in settings.urls:
        if url.ldaps and settings.starttls:
            raise wrong("starttls", f"{url.url} is ldaps:// (TLS from the start): starttls is for ldap://")
        plaintext = not (url.ldaps or settings.starttls)
        if plaintext and not url.loopback and not settings.allow_plaintext:
            raise wrong("url", f"{url.url} would send passwords unencrypted: use ldaps://, "
                        "starttls = true, or (on a network you trust) allow_plaintext = true")
    return settings
