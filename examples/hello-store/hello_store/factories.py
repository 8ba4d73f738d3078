"""The plugins: what names the store and the checker on twistd's command
line.  ``twisted/plugins/hello_store_plugin.py`` makes one of each, and
``twisted.plugin.getPlugins`` finds them there.

Keep plugin modules cheap and safe to import: every ``twistd`` start (and
``--help``) imports every plugin module.  One that raises is skipped, and
popframe names it and its error (``twistd pop3 --help-stores``).
"""

from __future__ import annotations

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer

from hello_store.checker import HelloChecker, parse_users
from hello_store.store import HelloStore
from popframe.config import ConfigurationError
from popframe.interfaces import IMaildropStoreFactory

__all__ = ["HelloCheckerFactory", "HelloStoreFactory"]


@implementer(IMaildropStoreFactory, IPlugin)
class HelloStoreFactory:
    """``--store hello:GREETING``."""

    storeName = "hello"
    argStringFormat = "hello:[GREETING]"
    storeHelp = """Every user finds one message saying GREETING (default: "Hello from
popframe!"), plus mail delivered to them.  Kept in this process's memory
(needs --workers 1).  An example of a third-party store."""

    def storeFromString(self, argstring: str) -> HelloStore:
        return HelloStore(argstring or "Hello from popframe!")


@implementer(ICheckerFactory, IPlugin)
class HelloCheckerFactory:
    """``--auth hello:USER:PASSWORD[:LOGIN_DELAY],...``."""

    authType = "hello"
    argStringFormat = "hello:USER:PASSWORD[:LOGIN_DELAY][,USER:PASSWORD...]"
    credentialInterfaces = (IUsernamePassword,)
    authHelp = """Users and plaintext passwords from the argument (also serves APOP),
each with an optional RFC 2449 LOGIN-DELAY in seconds.  An example of a
third-party checker: passwords on a command line show in ps."""

    def generateChecker(self, argstring: str = "") -> HelloChecker:
        try:
            return HelloChecker(parse_users(argstring))
        except ValueError as error:
            raise ConfigurationError("--auth", f"hello: {error}") from None
