"""The ``emailaddress`` a client sends, checked (RFC 5321 sanity: a
dot-atom local part of at most 64 octets, a domain of LDH labels, 254
octets in all), and the login name the documents give for it.

Every address of a served domain gets the same answer whether or not such
a user exists: the documents say how to log in, never who may.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Account", "BadRequest", "NotServed", "account_for", "check_domain"]

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class BadRequest(Exception):
    """A request the service cannot answer: 400 with this short text."""


class NotServed(Exception):
    """An address of a domain not in ``--autoconfig-domains``: 404."""


def check_domain(domain: str) -> bool:
    """Whether ``domain`` is a host name of LDH labels (RFC 1123)."""
    labels = domain.removesuffix(".").split(".")
    return len(domain) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


@dataclass(frozen=True)
class Account:
    """One address the documents are for."""

    address: str
    local_part: str
    #: Lower-cased.
    domain: str
    #: What the client logs in as (``--autoconfig-username``).
    login_name: str


def account_for(address: str | None, domains: tuple[str, ...], username: str) -> Account:
    """The checked account for ``address``; :class:`BadRequest` for a
    missing or malformed one, :class:`NotServed` for another domain."""
    if not address:
        raise BadRequest("give the email address, e.g. ?emailaddress=alice@example.org")
    local, at, domain = address.rpartition("@")
    if (not at or len(address) > 254 or len(local) > 64 or not _LOCAL_PART.fullmatch(local)
            or not check_domain(domain) or domain.endswith(".")):
        raise BadRequest("not an email address")
    domain = domain.lower()
    if domains and domain not in domains:
        raise NotServed(f"{domain} is not served here")
    address = f"{local}@{domain}"
    return Account(address, local, domain, address if username == "address" else local)
