"""Logins against stored Dovecot-style password fields (``{SCHEME}data``),
the same for every checker that keeps them (passwd-file, SQL): one place
for what an unknown user costs, which secrets a field can give out, and
how cred's credentials are read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin

from popframe.auth.schemes import (
    SCHEMES,
    UnknownScheme,
    cram_md5_secret,
    plaintext,
    scram_record,
    split_field,
    verify_password,
)
from popframe.interfaces.auth import PlaintextSecret, Secret, SecretKind

__all__ = [
    "FALLBACK_DUMMY",
    "SECRET_KINDS",
    "avatar_id",
    "kinds_of_fields",
    "login_pair",
    "secret_from_field",
    "typical_field",
    "verify_field",
    "waste_time",
]

#: Checked against when the user does not exist and the checker has no hash
#: of its users' to borrow, so that "no such user" costs as much as "wrong
#: password".
FALLBACK_DUMMY = (
    "{SHA512-CRYPT}$6$ZySQiHV1X1mF7fnz$rPwZZXyVnilYknZiiCZgxMD5r7t7b58qGspi2kWDohpq"
    "y3FD2EzGFJ3D51LZi9m/Zh28cn72z0juA5XC2J9d31"
)


def _plaintext_secret(stored: str, default_scheme: str) -> PlaintextSecret | None:
    password = plaintext(stored, default_scheme)
    return PlaintextSecret(password) if password is not None else None


#: What each kind of secret is read from.
_READERS: dict[SecretKind, Callable[[str, str], Secret | None]] = {
    SecretKind.SCRAM_SHA_256: scram_record,  # {SCRAM-SHA-256} fields only
    SecretKind.PLAINTEXT: _plaintext_secret,  # PLAIN-family fields only (APOP)
    SecretKind.CRAM_MD5: cram_md5_secret,  # {CRAM-MD5} or PLAIN-family fields
}

#: The kinds of secret a stored field can give out.
SECRET_KINDS = tuple(_READERS)


def secret_from_field(kind: SecretKind, stored: str, default_scheme: str) -> Secret | None:
    """``kind`` of secret from a stored field, or None when its scheme
    cannot serve it.  Raises ``UnknownScheme``."""
    reader = _READERS.get(kind)
    return reader(stored, default_scheme) if reader is not None else None


def kinds_of_fields(fields: Iterable[str], default_scheme: str) -> frozenset[SecretKind]:
    """The kinds of secret at least one of ``fields`` can give out (by its
    scheme: SCRAM keys, a PLAIN-family password, a CRAM-MD5 context).  A
    checker offers only those, so a client that picks the strongest
    mechanism (mpop tries SCRAM-SHA-256 first) is never sent to one no user
    can pass."""
    kinds: set[SecretKind] = set()
    for stored in fields:
        name = split_field(stored, default_scheme)[0].upper().partition(".")[0]
        scheme = SCHEMES.get(name)
        if scheme is None:
            continue
        if scheme is SCHEMES["SCRAM-SHA-256"]:
            kinds.add(SecretKind.SCRAM_SHA_256)
        elif scheme is SCHEMES["CRAM-MD5"]:
            kinds.add(SecretKind.CRAM_MD5)
        elif scheme.plaintext:
            kinds.update((SecretKind.PLAINTEXT, SecretKind.CRAM_MD5))
        if len(kinds) == len(SECRET_KINDS):
            break
    return frozenset(kinds)


def verify_field(stored: str, password: bytes, default_scheme: str) -> bool:
    """Whether ``password`` matches the stored field.  Raises
    ``UnknownScheme``."""
    return verify_password(stored, password, default_scheme)


def waste_time(typical: str | None, password: bytes, default_scheme: str) -> None:
    """Verify against a field like the users' and ignore the answer, so that
    timing does not tell which user names exist."""
    try:
        verify_password(typical or FALLBACK_DUMMY, password, default_scheme)
    except UnknownScheme:
        verify_password(FALLBACK_DUMMY, password)


def typical_field(fields: Iterable[str]) -> str | None:
    """A stored field of the most common scheme among ``fields``: what an
    unknown user's login is made to cost."""
    by_scheme: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for stored in fields:
        if stored:
            scheme = split_field(stored, "")[0].upper()
            counts[scheme] += 1
            by_scheme.setdefault(scheme, stored)
    if not counts:
        return None
    return by_scheme[counts.most_common(1)[0][0]]


def avatar_id(matched: bool, user: str) -> bytes:
    """cred's avatar id for a verified ``user``; ``UnauthorizedLogin``
    otherwise."""
    if not matched:
        raise UnauthorizedLogin()
    return user.encode("utf-8")


def login_pair(credentials: IUsernamePassword) -> tuple[str, bytes] | None:
    """The user name (text) and password (bytes) of cred credentials
    (UTF-8 bytes, or text from Twisted's own checkers); None for a name
    that is not UTF-8 or an empty name or password, which every checker
    refuses like a wrong password (an empty password would be an
    anonymous bind to a directory, which succeeds)."""
    name, password = credentials.username, credentials.password
    try:
        user = name.decode("utf-8") if isinstance(name, bytes) else name
    except UnicodeDecodeError:
        return None
    secret = password.encode("utf-8") if isinstance(password, str) else password
    if not user or not secret:
        return None
    return user, secret
