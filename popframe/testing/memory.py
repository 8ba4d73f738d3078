"""A backend that lives in a dict, for tests: :class:`MemoryChecker` beside
:class:`~popframe.stores.memory.MemoryStore` (re-exported here), so a test
sets up users and mail in two lines and no file or thread is involved."""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from popframe.stores.memory import MemoryStore

__all__ = ["MemoryChecker", "MemoryStore"]


@implementer(ICredentialsChecker)
class MemoryChecker:
    """Users and their plaintext passwords (str or bytes) in a dict; for
    tests only.  The avatar id is the user name as UTF-8 bytes, as
    ``PasswdFileChecker`` gives it, and every refusal is the same
    ``UnauthorizedLogin``."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, str] | dict[str, bytes]) -> None:
        self.users = users

    def requestAvatarId(
        self, credentials: IUsernamePassword
    ) -> Deferred[bytes | tuple[()]]:
        username = credentials.username
        try:
            name = username.decode("utf-8") if isinstance(username, bytes) else username
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin())
        secret = self.users.get(name)
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret and credentials.checkPassword(secret):
            return succeed(name.encode("utf-8"))
        return fail(UnauthorizedLogin())
