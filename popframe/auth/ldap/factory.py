"""``--auth ldap:/etc/popframe/ldap.toml``: the strcred plugin.

Imports nothing of ldaptor until a checker is made, so the plugin module
loads (and passwd-file works) where the ``ldap`` extra is not installed.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer

from popframe.config import ConfigurationError

__all__ = ["LDAPCheckerFactory"]


@implementer(ICheckerFactory, IPlugin)
class LDAPCheckerFactory:
    """Reads and checks the settings file at start-up (a wrong key stops
    twistd with its name); connects at the first login."""

    authType = "ldap"
    argStringFormat = "ldap:/etc/popframe/ldap.toml"
    credentialInterfaces = (IUsernamePassword,)
    authHelp = """Check user names and passwords against an LDAP directory or Active Directory.

The argument is a TOML file (a DN holds commas), for example:
    url = ["ldaps://ldap1.example.org", "ldaps://ldap2.example.org"]
    bind_dn = "cn=popframe,ou=services,dc=example,dc=org"
    bind_password_file = "/etc/popframe/ldap.secret"
    base = "ou=people,dc=example,dc=org"
    filter = "(&(objectClass=inetOrgPerson)(uid=%u))"
or dn_template = "uid=%u,ou=people,dc=example,dc=org" to bind without a
search, or preset = "active-directory".  %u, %n, %d are the user name, its
local part and domain, escaped (RFC 4515 in filters, RFC 4514 in DNs).
TLS (ldaps:// or starttls = true) verifies the certificate against ca_file
or the system CAs; passwords never go unencrypted to a directory that is
not on this machine unless allow_plaintext = true.  Other keys:
maildrop_attribute, login_delay_attribute, user_attribute,
disabled_filter, scope, timeout, pool_size, cache_ttl, negative_cache_ttl.
See docs/ldap.md.
"""

    def generateChecker(self, argstring: str = "") -> Any:
        try:
            from popframe.auth.ldap.checker import LDAPChecker
            from popframe.auth.ldap.settings import load_settings
        except ImportError as error:
            raise ConfigurationError(
                "--auth", f"ldap: needs ldaptor: pip install 'popframe[ldap]' ({error})") from None
        return LDAPChecker(load_settings(argstring))
