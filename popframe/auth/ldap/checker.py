"""The LDAP checker: user names and passwords checked by the directory.

Search, then bind (``filter``): the service account (or an anonymous
connection) searches ``base`` for the user's entry; exactly one must match,
then a bind as that entry with the password decides.  Direct bind
(``dn_template``): the DN is made from the name and bound at once.

Every refusal is the same ``UnauthorizedLogin``: no entry, several
entries, a disabled entry and a wrong password alike; and a name that
matched nothing still costs a bind (to a DN that does not exist), so an
unknown user takes the round trips a wrong password takes.  A directory
that cannot answer gives ``DirectoryUnavailable`` (``[SYS/TEMP]``), never
a refusal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ldaptor.protocols import pureldap
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popframe.auth.cache import VerifiedPasswords
from popframe.auth.ldap.cache import Expiring, RecentFailures
from popframe.auth.ldap.connection import BindRefused, Connection, Entry
from popframe.auth.ldap.pool import ConnectionPool
from popframe.auth.ldap.settings import LDAPSettings
from popframe.auth.stored import login_pair
from popframe.interfaces.auth import IUserSettings, UserSettings

__all__ = ["DirectoryUser", "LDAPChecker"]

log = Logger(namespace="popframe.auth.ldap")

#: Seconds a found entry is kept even with the cache off: the login
#: pipeline asks for the user's settings right after the password.
HANDOFF_SECONDS = 5.0

_ANY = pureldap.LDAPFilter_present("objectClass")


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    """A user's entry, as the checker uses it."""

    dn: str
    avatar: str  # the name the maildrop is opened under
    settings: UserSettings


@implementer(ICredentialsChecker, IUserSettings)
class LDAPChecker:
    """Checks ``IUsernamePassword`` against a directory; also
    :class:`~popframe.interfaces.auth.IUserSettings` (the maildrop and
    LOGIN-DELAY attributes, None for a name the directory does not know).
    No ``ISecretLookup``: a directory does not give out passwords, so
    SCRAM, CRAM-MD5 and APOP are not offered on its account."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, settings: LDAPSettings, reactor: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._reactor = reactor
        self._clock = clock
        # ``--auth-cache-ttl`` replaces this one (popframe.options).
        self.verified_passwords: VerifiedPasswords | None = (
            VerifiedPasswords(settings.cache_ttl, clock=clock) if settings.cache_ttl > 0 else None)
        self.recent_failures: RecentFailures | None = (
            RecentFailures(settings.negative_cache_ttl, clock=clock)
            if settings.negative_cache_ttl > 0 else None)
        self._found: Expiring[str, DirectoryUser] = Expiring(HANDOFF_SECONDS, clock=clock)
        self._unknown: Expiring[str, bool] = Expiring(settings.negative_cache_ttl, clock=clock)
        self._pools: dict[str, ConnectionPool] = {}
        self._failed_at: dict[Any, float] = {}  # URL -> when it last failed

    def __repr__(self) -> str:
        return f"<LDAPChecker {self.settings.path}>"

    # -- connections --------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _pool(self, name: str) -> ConnectionPool:
        """``searches`` (bound as bind_dn, or anonymous) or ``binds`` (the
        users' own binds), made at first use."""
        pool = self._pools.get(name)
        if pool is None:
            settings = self.settings
            identity = None
            if name == "searches" and settings.bind_dn and settings.bind_password:
                identity = (settings.bind_dn, settings.bind_password)
            pool = self._pools[name] = ConnectionPool(settings, self.reactor, name, identity,
                                                      failed_at=self._failed_at)
            if len(self._pools) == 1:
                self.reactor.addSystemEventTrigger("before", "shutdown", self.close)
        return pool

    def close(self) -> None:
        """Unbind the pooled connections (at reactor shutdown)."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    # -- ICredentialsChecker --------------------------------------------------------

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        pair = login_pair(credentials)
        if pair is None:
            return fail(UnauthorizedLogin())
        user, password = pair
        cached = self._recently_verified(user, password)
        if cached is not None:
            return succeed(cached.avatar.encode("utf-8"))
        if self.recent_failures is not None and self.recent_failures.failed(user, password):
            return fail(UnauthorizedLogin())
        d: Deferred[bytes | tuple[()]] = self._check(user, password).addCallback(
            self._decided, user, password)
        return d

    def _recently_verified(self, user: str, password: bytes) -> DirectoryUser | None:
        cache = self.verified_passwords
        if cache is None:
            return None
        found = self._found.get(user)
        if found is None or not cache.verified(user, found.dn, password):
            return None
        return found

    def _decided(self, found: DirectoryUser | None, user: str, password: bytes) -> bytes:
        if found is None:
            if self.recent_failures is not None:
                self.recent_failures.remember(user, password)
            raise UnauthorizedLogin()
        if self.verified_passwords is not None:
            self.verified_passwords.remember(user, found.dn, password)
        self._remember(user, found)
        return found.avatar.encode("utf-8")

    def _remember(self, name: str, found: DirectoryUser) -> None:
        cache = self.verified_passwords
        self._found.ttl = max(HANDOFF_SECONDS, cache.ttl if cache is not None else 0.0)
        self._found.put(name, found)
        self._found.put(found.avatar, found)
        self._unknown.pop(name)

    def _check(self, user: str, password: bytes) -> Deferred[DirectoryUser | None]:
        """The directory's verdict: the user, or None (refused)."""
        settings = self.settings
        if settings.dn_template is not None:
            dn = settings.dn_template.expand(user)
            return self._pool("binds").run(lambda c: self._bind_and_read(c, dn, user, password))
        assert settings.filter is not None
        search = settings.filter.expand(user)
        if settings.disabled_filter is not None:
            search = pureldap.LDAPFilter_and(
                [search, pureldap.LDAPFilter_not(settings.disabled_filter)])

        def found(entries: list[Entry]) -> Deferred[DirectoryUser | None]:
            if len(entries) != 1:
                _log_no_single_entry(user, entries, "login")
                return self._pool("binds").run(lambda c: _refuse_with_bind(c, settings.base))
            entry = entries[0]
            return self._pool("binds").run(
                lambda c: c.bind(entry.dn, password).addCallbacks(
                    lambda _: self._user(entry, user), _refused))

        d = self._pool("searches").run(lambda c: c.search(
            settings.base, settings.scope, search, settings.attributes, size_limit=2))
        return d.addCallback(found)

    def _bind_and_read(self, connection: Connection, dn: str, user: str,
                       password: bytes) -> Deferred[DirectoryUser | None]:
        """dn_template: bind, then read the entry as the user (its
        attributes, and whether the disabled filter excludes it)."""
        settings = self.settings
        d: Deferred[Any] = connection.bind(dn, password)
        if not settings.attributes and settings.disabled_filter is None:
            return d.addCallbacks(lambda _: DirectoryUser(dn, user, UserSettings()), _refused)
        check = (_ANY if settings.disabled_filter is None
                 else pureldap.LDAPFilter_not(settings.disabled_filter))

        def read(_: None) -> Deferred[DirectoryUser | None]:
            def one(entries: list[Entry]) -> DirectoryUser | None:
                if len(entries) != 1:
                    log.info("LDAP login as {user!r} refused: {dn} is disabled", user=user, dn=dn)
                    return None
                return self._user(entries[0], user)

            return connection.search(dn, pureldap.LDAP_SCOPE_baseObject, check,
                                     settings.attributes).addCallback(one)

        return d.addCallbacks(read, _refused)

    def _user(self, entry: Entry, name: str) -> DirectoryUser:
        settings = self.settings
        avatar = name
        if settings.user_attribute:
            value = entry.first(settings.user_attribute)
            if value:
                avatar = value
            else:
                log.warn("LDAP: {dn} has no {attribute}; using the login name {user!r}",
                         dn=entry.dn, attribute=settings.user_attribute, user=name)
        return DirectoryUser(entry.dn, avatar, self._settings_of(entry))

    def _settings_of(self, entry: Entry) -> UserSettings:
        settings = self.settings
        maildrop = entry.first(settings.maildrop_attribute) if settings.maildrop_attribute else None
        delay = None
        if settings.login_delay_attribute:
            text = entry.first(settings.login_delay_attribute)
            if text is not None:
                if text.isascii() and text.isdigit():
                    delay = int(text)
                else:
                    log.warn("LDAP: {dn}: {attribute}={value!r} is not a number of seconds; "
                             "ignored", dn=entry.dn, attribute=settings.login_delay_attribute,
                             value=text)
        return UserSettings(login_delay=delay, maildrop=maildrop or None)

    # -- IUserSettings --------------------------------------------------------------------

    def user_settings(self, user: str) -> Deferred[UserSettings | None]:
        """What the directory says of ``user``: None when no single entry
        answers to the name (the LDA and LMTP then say "unknown user").
        A disabled entry still has settings: it exists, it only may not
        log in."""
        found = self._found.get(user)
        if found is not None:
            return succeed(found.settings)
        if not user or self._unknown.get(user):
            return succeed(None)
        d = self._lookup(user)

        def remember(entry: DirectoryUser | None) -> UserSettings | None:
            if entry is None:
                self._unknown.put(user, True)
                return None
            self._found.put(user, entry)
            return entry.settings

        return d.addCallback(remember)

    def _lookup(self, user: str) -> Deferred[DirectoryUser | None]:
        settings = self.settings
        if settings.dn_template is not None:
            dn = settings.dn_template.expand(user)
            d = self._pool("searches").run(
                lambda c: c.search(dn, pureldap.LDAP_SCOPE_baseObject, _ANY, settings.attributes))
        else:
            assert settings.filter is not None
            search = settings.filter.expand(user)
            d = self._pool("searches").run(
                lambda c: c.search(settings.base, settings.scope, search, settings.attributes,
                                   size_limit=2))

        def one(entries: list[Entry]) -> DirectoryUser | None:
            if len(entries) != 1:
                _log_no_single_entry(user, entries, "settings")
                return None
            return self._user(entries[0], user)

        return d.addCallback(one)


def _refused(failure: Failure) -> None:
    failure.trap(BindRefused)
    return None


def _refuse_with_bind(connection: Connection, base: str) -> Deferred[DirectoryUser | None]:
    """A bind that must fail, so a name that matched no entry costs the
    round trip a wrong password costs (and nothing tells the two apart)."""
    dn = f"cn=popframe-no-such-user-{os.urandom(6).hex()},{base}"
    password = os.urandom(16).hex().encode("ascii")
    return connection.bind(dn, password).addCallbacks(lambda _: None, _refused)


def _log_no_single_entry(user: str, entries: list[Entry], purpose: str) -> None:
    if len(entries) > 1:
        log.warn("LDAP {purpose}: the filter matches several entries for {user!r} "
                 "({dns}...): refused; make it match one", purpose=purpose, user=user,
                 dns=", ".join(entry.dn for entry in entries[:2]))
    else:
        log.debug("LDAP {purpose}: no entry for {user!r}", purpose=purpose, user=user)
