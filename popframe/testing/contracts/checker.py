"""The checker contract: what every credential source must do for logins
to be safe, as tests a checker's author runs against their checker.

    class TestMyChecker(CheckerContract):
        def make_checker(self, users, tmp_path):
            create_users_in_my_backend(users)  # user -> password (bytes)
            return MyChecker(...)

Calls are waited for with the reactor running (a checker on a database
pool or an LDAP connection works as in the server), each for at most
``timeout`` seconds.  Secret lookups and per-user settings are checked
only for a checker that provides ``ISecretLookup`` / ``IUserSettings``.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from zope.interface.verify import verifyObject

from popframe.auth.credentials import checked_secret
from popframe.errors import TemporaryFailure
from popframe.interfaces import (
    CramMD5Secret,
    ISecretLookup,
    IUserSettings,
    PlaintextSecret,
    ScramRecord,
    Secret,
    SecretKind,
    UserSettings,
)
from popframe.testing.contracts._base import Contract

__all__ = ["CheckerContract"]

_CHALLENGE = b"<1896.697170952@postoffice.example.net>"


def _belongs_to(secret: Secret, password: bytes) -> bool:
    """Whether a looked-up secret is the one ``password`` makes, so a
    mechanism that verifies with it accepts that password."""
    if isinstance(secret, PlaintextSecret):
        return secret.password == password
    if isinstance(secret, ScramRecord):
        return ScramRecord.from_password(password, secret.salt, secret.iterations) == secret
    if isinstance(secret, CramMD5Secret):
        return secret.hmac(_CHALLENGE) == hmac.new(password, _CHALLENGE, hashlib.md5).digest()
    return False


class CheckerContract(Contract):
    """Subclass this in a test file (named ``Test...``) to run the checker
    contract against your checker.  Implement :meth:`make_checker`, and
    :meth:`break_backend` to have outages checked (skipped otherwise).
    Override :attr:`users` if your backend restricts user names."""

    #: The users :meth:`make_checker` creates, with their passwords.
    users: dict[str, bytes] = {
        "alice": b"alice's secret",
        "bob@example.org": "b\u00f6b's p\u00e4ss".encode(),
        "carol": b"correct horse battery staple",
    }
    #: A user name that is not in the backend.
    unknown_user = "nobody"

    # -- the hooks an author provides ---------------------------------------------

    def make_checker(self, users: dict[str, bytes], tmp_path: Path) -> ICredentialsChecker:
        """A checker whose backend holds exactly ``users`` (name ->
        password) and no one else (``tmp_path``: a directory of this
        test's own)."""
        raise NotImplementedError("implement make_checker(self, users, tmp_path)")

    def break_backend(self, checker: ICredentialsChecker) -> None:
        """Make the backend unreachable or unreadable (stop the database,
        remove the file) so the checker cannot tell who is who.  Not
        implemented: that test is skipped."""
        pytest.skip("break_backend is not implemented for this checker")

    # -- helpers ------------------------------------------------------------------

    @pytest.fixture
    def checker(self, tmp_path: Path) -> ICredentialsChecker:
        """Each test's own checker, holding :attr:`users`."""
        return self.make_checker(dict(self.users), tmp_path)

    def login(self, checker: ICredentialsChecker, user: bytes, password: bytes) -> Any:
        """The avatar id for USER/PASS (or PLAIN) with these credentials."""
        if IUsernamePassword not in checker.credentialInterfaces:
            pytest.skip("the checker does not take IUsernamePassword credentials")
        return self.wait(checker.requestAvatarId(UsernamePassword(user, password)))

    def refusal(
        self, checker: ICredentialsChecker, user: bytes, password: bytes
    ) -> type[BaseException]:
        """The type of the exception a login is refused with."""
        with pytest.raises(Exception) as refused:  # noqa: PT011  (checked by the caller)
            self.login(checker, user, password)
        return refused.type

    # -- passwords ------------------------------------------------------------------

    def test_checker_provides_icredentialschecker(self, checker: ICredentialsChecker) -> None:
        verifyObject(ICredentialsChecker, checker)

    def test_the_right_password_gives_the_users_avatar_id(
        self, checker: ICredentialsChecker
    ) -> None:
        for user, password in self.users.items():
            avatar_id = self.login(checker, user.encode(), password)
            assert avatar_id in (user, user.encode()), f"{user}: avatar id {avatar_id!r}"

    def test_every_bad_login_is_the_same_unauthorized_login(
        self, checker: ICredentialsChecker
    ) -> None:
        (user, password), (other, _) = list(self.users.items())[:2]
        refusals = {
            "a wrong password": self.refusal(checker, user.encode(), password + b"x"),
            "another user's password": self.refusal(checker, other.encode(), password),
            "an unknown user": self.refusal(checker, self.unknown_user.encode(), password),
            "an empty password": self.refusal(checker, user.encode(), b""),
            "a user name that is not UTF-8":
                self.refusal(checker, b"\xff" + user.encode(), password),
        }
        for case, refused in refusals.items():
            assert issubclass(refused, UnauthorizedLogin), f"{case}: {refused.__name__}"
        assert len(set(refusals.values())) == 1, f"refusals tell cases apart: {refusals}"

    def test_an_outage_is_a_temporary_failure(self, checker: ICredentialsChecker) -> None:
        user, password = next(iter(self.users.items()))
        self.break_backend(checker)
        with pytest.raises(TemporaryFailure):  # not UnauthorizedLogin: not the user's fault
            self.login(checker, user.encode(), password)
        if ISecretLookup.providedBy(checker):  # not None: that reads as a wrong password
            for kind in checker.secret_kinds:
                with pytest.raises(TemporaryFailure):
                    self.wait(checker.lookup_secret(user, SecretKind(kind)))

    # -- secrets --------------------------------------------------------------------

    def test_secrets_are_the_declared_type_of_the_users_password(
        self, checker: ICredentialsChecker
    ) -> None:
        if not ISecretLookup.providedBy(checker):
            pytest.skip("the checker does not provide ISecretLookup")
        verifyObject(ISecretLookup, checker)
        for kind in map(SecretKind, checker.secret_kinds):
            for user, password in self.users.items():
                secret = checked_secret(self.wait(checker.lookup_secret(user, kind)), kind)
                if secret is not None:
                    assert _belongs_to(secret, password), f"{user}'s {kind} is not their password's"
            unknown = self.wait(checker.lookup_secret(self.unknown_user, kind))
            assert unknown is None, f"{kind} for an unknown user: {unknown!r}"

    # -- per-user settings ----------------------------------------------------------

    def test_user_settings_are_none_only_for_unknown_users(
        self, checker: ICredentialsChecker
    ) -> None:
        if not IUserSettings.providedBy(checker):
            pytest.skip("the checker does not provide IUserSettings")
        verifyObject(IUserSettings, checker)
        assert self.wait(checker.user_settings(self.unknown_user)) is None
        for user in self.users:
            settings = self.wait(checker.user_settings(user))
            assert isinstance(settings, UserSettings), f"{user}: {settings!r}"
