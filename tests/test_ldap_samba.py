"""The Active Directory preset against a real Samba AD DC
(tests/ldap_support.py: provisioned in a temporary directory, LDAP only,
on 127.0.0.2): logins by sAMAccountName and userPrincipalName, a disabled
account, referrals at the domain root, and AD's refusal of simple binds
without TLS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("ldaptor")

from ldap_support import (  # noqa: E402
    SAMBA_ACCOUNTS,
    SAMBA_ADDRESS,
    SAMBA_BASE,
    ReactorRunner,
    SambaDC,
    reactor_runner,
    start_samba_dc,
)
from twisted.cred.credentials import UsernamePassword  # noqa: E402
from twisted.cred.error import UnauthorizedLogin  # noqa: E402

from popframe.auth.ldap import DirectoryUnavailable, LDAPChecker  # noqa: E402
from popframe.auth.ldap.settings import settings_from_mapping  # noqa: E402
from popframe.interfaces import UserSettings  # noqa: E402
from popframe.testing import stop_reactor  # noqa: E402

pytestmark = pytest.mark.external

SERVICE, SERVICE_PASSWORD, _ = SAMBA_ACCOUNTS[0]


@pytest.fixture(scope="module")
def samba() -> Iterator[SambaDC]:
    yield from start_samba_dc()


@pytest.fixture(scope="session")
def reactor() -> Iterator[ReactorRunner]:
    yield reactor_runner()
    stop_reactor()  # its resolver's threads would keep the run from exiting


def checker(samba: SambaDC, reactor: ReactorRunner, mode: str, **keys: Any) -> LDAPChecker:
    document = {
        "preset": "active-directory",
        "url": f"{'ldaps' if mode == 'ldaps' else 'ldap'}://{SAMBA_ADDRESS}",
        "starttls": mode == "starttls", "ca_file": str(samba.ca_file),
        "bind_dn": f"{SERVICE}@example.test", "bind_password": SERVICE_PASSWORD,
        "base": SAMBA_BASE, "maildrop_attribute": "mail", "timeout": 5, **keys,
    }
    return LDAPChecker(settings_from_mapping(document, "ad.toml"), reactor=reactor.reactor)


def login(reactor: ReactorRunner, checker: LDAPChecker, user: str, password: str) -> Any:
    try:
        avatar = reactor.call(checker.requestAvatarId, UsernamePassword(user.encode(), password.encode()))
    except (UnauthorizedLogin, DirectoryUnavailable) as error:
        return type(error)
    return avatar.decode()


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_active_directory_logins(samba: SambaDC, reactor: ReactorRunner, mode: str) -> None:
    ad = checker(samba, reactor, mode)
    try:
        assert login(reactor, ad, "dave", "Dave-pw1!x") == "dave"
        assert login(reactor, ad, "dave@example.test", "Dave-pw1!x") == "dave"
        assert login(reactor, ad, "DAVE", "Dave-pw1!x") == "dave"
        assert login(reactor, ad, "dave", "dave-pw1!x") is UnauthorizedLogin
        assert login(reactor, ad, "dave", "") is UnauthorizedLogin
        assert login(reactor, ad, "erin", "Erin-pw1!x") is UnauthorizedLogin  # disabled
        assert login(reactor, ad, "nobody", "Dave-pw1!x") is UnauthorizedLogin
        assert login(reactor, ad, "*", "Dave-pw1!x") is UnauthorizedLogin
        assert login(reactor, ad, "dave)(sAMAccountName=*", "Dave-pw1!x") is UnauthorizedLogin
        # At the domain root AD also returns referrals: ignored, not chased.
        assert reactor.call(ad.user_settings, "dave") == UserSettings(maildrop="dave@example.test")
        assert reactor.call(ad.user_settings, "erin") == UserSettings(maildrop="erin@example.test")
        assert reactor.call(ad.user_settings, "nobody") is None
    finally:
        reactor.call(ad.close)


def test_a_disabled_account_is_refused_by_ad_itself(samba: SambaDC, reactor: ReactorRunner) -> None:
    """Without the preset's disabled_filter, AD's own refusal of the bind
    (49, "data 533") is a refusal too."""
    ad = checker(samba, reactor, "ldaps", disabled_filter="(cn=no-one-is-called-this)")
    try:
        assert login(reactor, ad, "erin", "Erin-pw1!x") is UnauthorizedLogin
        assert login(reactor, ad, "dave", "Dave-pw1!x") == "dave"
    finally:
        reactor.call(ad.close)


def test_simple_binds_without_tls_are_a_temporary_failure(samba: SambaDC, reactor: ReactorRunner) -> None:
    """AD refuses simple binds in plaintext (strongerAuthRequired): a
    configuration problem, answered [SYS/TEMP], never "wrong password"."""
    ad = checker(samba, reactor, "plain")
    try:
        assert login(reactor, ad, "dave", "Dave-pw1!x") is DirectoryUnavailable
    finally:
        reactor.call(ad.close)
