"""Internationalized user names and passwords (RFC 8265 PRECIS, as RFC 6856
asks for POP3 UTF8 and RFC 4616 for SASL PLAIN).

ASCII input is returned as it is (the common case, and what clients that
never heard of PRECIS send); anything else is normalized so that the same
name typed on two keyboards is the same user.
"""

from __future__ import annotations

import precis_i18n

from popframe.errors import BadArguments

__all__ = ["normalize_password", "normalize_user"]

_USERNAME = precis_i18n.get_profile("UsernameCasePreserved")
_PASSWORD = precis_i18n.get_profile("OpaqueString")


def normalize_user(user: str) -> str:
    if user.isascii():
        return user
    try:
        return _USERNAME.enforce(user)
    except UnicodeError:
        raise BadArguments("user name not allowed (RFC 8265)") from None


def normalize_password(password: bytes) -> bytes:
    if password.isascii():
        return password
    try:
        return _PASSWORD.enforce(password.decode("utf-8")).encode("utf-8")
    except UnicodeError:
        raise BadArguments("password not allowed (RFC 8265)") from None
