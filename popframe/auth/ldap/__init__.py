"""LDAP and Active Directory logins (``--auth ldap:FILE.toml``).

One job per module: ``settings`` (the TOML file, checked), ``escaping``
(RFC 4515 filter values, RFC 4514 DN values), ``filters`` (filter text and
the ``%u`` templates), ``connection`` (one connection: TLS, bind, search,
deadlines), ``pool`` (pooled connections, failover), ``cache`` (negative
cache, expiring maps), ``checker`` (the cred checker), ``factory`` (the
plugin).  See docs/ldap.md.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> the module that defines it.  Loaded on first use: the plugin
#: module imports this package, and ldaptor (the ``ldap`` extra) may be
#: missing where no one uses LDAP.
_EXPORTS = {
    "DNTemplate": "filters",
    "DirectoryUnavailable": "connection",
    "DirectoryUser": "checker",
    "FilterSyntaxError": "filters",
    "FilterTemplate": "filters",
    "LDAPChecker": "checker",
    "LDAPCheckerFactory": "factory",
    "LDAPSettings": "settings",
    "escape_dn_value": "escaping",
    "escape_filter_value": "escaping",
    "load_settings": "settings",
    "parse_filter": "filters",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DNTemplate",
    "DirectoryUnavailable",
    "DirectoryUser",
    "FilterSyntaxError",
    "FilterTemplate",
    "LDAPChecker",
    "LDAPCheckerFactory",
    "LDAPSettings",
    "escape_dn_value",
    "escape_filter_value",
    "load_settings",
    "parse_filter",
]
