"""The login pipeline: from a login the core asked for (or refused) to an
opened maildrop or a failure, with the policies around it.

For each attempt, in order:

1. ``Throttle.blocked``: an address with too many failures is refused
   unchecked (``TooManyFailures``: answered, then the connection dropped).
2. :func:`~popframe.auth.credentials.authenticate`: the portal's checker,
   authorization identities and master users.
3. The user's settings from the checkers that know them
   (:class:`~popframe.interfaces.IUserSettings`), then the realm opens and
   locks the maildrop with them.
4. LOGIN-DELAY: a login too soon after the last one is refused after the
   password was verified (so the code is no oracle), and the maildrop
   released; so is a user over ``--max-sessions-per-user``
   (``TooManySessions``: answered, then the connection closed).
5. A failure is logged once; a wrong credential is counted (address, user
   name, connection) and its answer waits out the throttle's delay, which
   may say drop.  A success forgets the user name's count and is never
   delayed.

Logins the core refuses itself (a wrong SCRAM proof: ``LoginRefused``) go
through step 5 alone.  The protocol adapter only asks and answers.  Each
outcome is told to the factory's session observer (``login_finished``,
``login_throttled``, ``backend_failed``), which knows why a login failed
only from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from popframe.auth.credentials import (
    as_cred_credentials,
    authenticate,
    settings_sources,
    user_settings,
)
from popframe.auth.restrictions import check_restrictions
from popframe.errors import (
    AuthenticationFailed,
    LoginDelayed,
    MaildropInUse,
    POP3Error,
    TemporaryFailure,
)
from popframe.interfaces import IMaildrop, UserSettings
from popframe.interfaces.observers import (
    BackendRole,
    ISessionObserver,
    LimitKind,
    LoginResult,
    SessionObserver,
    SessionRecord,
)
from popframe.protocol import Authenticate, LoginRefused
from popframe.server.config import ServerConfig
from popframe.server.failures import as_pop3_error, backend_failure_kind
from popframe.server.limits import UserSessions
from popframe.server.peers import peer_text
from popframe.throttle import TooManyFailures, Verdict
from popframe.twisted_internals import fired, then

__all__ = ["ConnectionLogins", "LoggedIn", "Logins", "TooManyConnections", "TooManySessions"]

log = Logger(namespace="popframe.server")


class TooManySessions(TemporaryFailure):
    """The user has ``--max-sessions-per-user`` sessions already: the
    connection is closed after this reply."""

    default_message = "too many sessions for this user, try again later"


class TooManyConnections(TemporaryFailure):
    """The address a proxy forwarded (XCLIENT) has its limit of
    connections: the connection is closed after this reply."""

    default_message = "too many connections from your address"


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A successful login: the opened maildrop, the callable that releases
    it (unless QUIT committed), the user's own LOGIN-DELAY, if any, and
    whose maildrop it is."""

    maildrop: IMaildrop
    logout: Callable[[], None]
    login_delay: int | None
    user: str = ""
    expire: int | None = None  # the user's own EXPIRE, if any


class Logins:
    """The login policy of one factory: its portal, throttle and
    LOGIN-DELAY.  :meth:`for_connection` gives each connection its own
    failure count."""

    def __init__(self, portal: Portal, config: ServerConfig, clock: IReactorTime) -> None:
        self.portal = portal
        self.config = config
        self.clock = clock
        self.settings_sources = settings_sources(portal)

    @property
    def login_delay_per_user(self) -> bool:
        """Whether a checker may give a user a LOGIN-DELAY of their own."""
        return self.config.login_delay is not None and bool(self.settings_sources)

    @property
    def expire_per_user(self) -> bool:
        """Whether a checker may give a user an EXPIRE of their own."""
        return bool(self.settings_sources)

    def for_connection(self, transport: Any, record: SessionRecord | None = None,
                       observer: ISessionObserver | None = None,
                       user_sessions: UserSessions | None = None) -> ConnectionLogins:
        return ConnectionLogins(self, transport, record, observer, user_sessions)


class ConnectionLogins:
    """The logins of one connection, reported to ``observer`` (with
    ``record``), counted in ``user_sessions`` (the factory's live state,
    which a reload keeps).  ``forwarded``: the client's address as a
    trusted proxy told it (XCLIENT), which then stands for the transport's
    peer."""

    def __init__(self, logins: Logins, transport: Any,
                 record: SessionRecord | None = None,
                 observer: ISessionObserver | None = None,
                 user_sessions: UserSessions | None = None) -> None:
        self._logins = logins
        self._transport = transport
        self._record = record if record is not None else SessionRecord("", "", 0.0)
        self.observer = observer if observer is not None else SessionObserver()
        self.user_sessions = user_sessions if user_sessions is not None else UserSessions()
        self.failures = 0  # failed logins on this connection
        self.forwarded: Any = None
        self._started = 0.0  # when the attempt under way began
        self._role = BackendRole.AUTH  # which backend the attempt is waiting for

    def peer(self) -> Any:
        """The client's address (forwarded, or the transport's peer)."""
        return self.forwarded if self.forwarded is not None else self._transport.getPeer()

    def _peer_text(self) -> str:
        forwarded = self.forwarded
        if forwarded is None:
            return peer_text(self._transport)
        return f"{forwarded.host}:{forwarded.port}"

    def attempt(
        self, request: Authenticate, tls: bool, certificate: Any = None
    ) -> Deferred[LoggedIn]:
        """Run ``request``; fires with :class:`LoggedIn`, or fails with the
        :class:`POP3Error` to answer, after its delay.  ``TooManyFailures``
        means: answer, then hang up.  When every backend answers at once
        (``succeed``), the steps run one after the other without a callback
        hop between them and the Deferred returned has fired (issue 18)."""
        logins = self._logins
        config = logins.config
        self._started = logins.clock.seconds()
        self._role = BackendRole.AUTH
        credentials = as_cred_credentials(request.credentials, certificate)
        authzid = getattr(request.credentials, "authzid", None)
        try:
            user = then(self._address_admitted(), lambda _: authenticate(
                logins.portal, credentials, authzid, config.master_users))
            result = then(user, self._open)
        except Exception:
            return self._failed(Failure(), request, tls)
        if isinstance(result, Deferred):
            return result.addCallbacks(self._succeeded, self._failed, callbackArgs=(request, tls),
                                       errbackArgs=(request, tls))
        try:
            return succeed(self._succeeded(result, request, tls))
        except Exception:
            return fail()

    def refused(self, request: LoginRefused, tls: bool) -> Deferred[POP3Error]:
        """A login the core refused: count and log it like any; fires with
        the error to answer (``TooManyFailures``: then hang up)."""
        self._started = self._logins.clock.seconds()
        d = self._count_failure(request.mechanism, request.user, "AuthenticationFailed", tls)

        def answer(verdict: Verdict | None) -> POP3Error:
            self._report(request.mechanism, LoginResult.FAILED)
            if verdict is not None and verdict.drop:
                return TooManyFailures()
            return AuthenticationFailed()

        def broken(failure: Failure) -> POP3Error:
            log.failure("throttling a failed login failed", failure)
            return AuthenticationFailed()  # answer at once rather than never

        return d.addCallbacks(answer, broken)

    # -- the steps ----------------------------------------------------------------

    def _address_admitted(self) -> None | Deferred[None]:
        """Raises or fails with TooManyFailures when the client's address
        reached the throttle's limit: its logins are refused unchecked."""
        throttle = self._logins.config.throttle
        if throttle is None:
            return None

        def check(blocked: bool) -> None:
            if blocked:
                raise TooManyFailures()

        return then(throttle.blocked(self.peer()), check)

    def _open(self, user: str) -> LoggedIn | Deferred[LoggedIn]:
        """Open ``user``'s maildrop with their settings, then apply
        LOGIN-DELAY."""
        sources = self._logins.settings_sources
        settings = user_settings(sources, user) if sources else None
        return then(settings, self._open_maildrop, user)

    def _open_maildrop(self, found: UserSettings | None,
                       user: str) -> LoggedIn | Deferred[LoggedIn]:
        check_restrictions(found, self.peer())
        self._role = BackendRole.STORE
        # IRealm may answer at once or with a Deferred.
        avatar = self._logins.portal.realm.requestAvatar(user.encode("utf-8"), found, IMaildrop)
        logged_in = then(avatar, self._check_login_delay, user, found)
        if found is not None and found.expire is not None:
            expire = found.expire
            return then(logged_in, lambda result: replace(result, expire=expire))
        return logged_in

    def _check_login_delay(
        self,
        avatar: tuple[type[Interface], object, Callable[[], None]],
        user: str,
        settings: UserSettings | None,
    ) -> LoggedIn | Deferred[LoggedIn]:
        """RFC 2449 LOGIN-DELAY, once the credentials are proven: a login
        too soon after the last one is refused and its maildrop released."""
        _, provided, logout = avatar
        maildrop = cast(IMaildrop, provided)  # what the realm was asked for
        policy = self._logins.config.login_delay
        if policy is None:
            return self._count_session(LoggedIn(maildrop, logout, None, user))
        delay = policy.delay_for(settings)
        own = settings.login_delay if settings is not None else None

        def admitted(ok: bool) -> LoggedIn:
            if not ok:
                logout()
                raise LoginDelayed()
            # Refused there, the session releases the maildrop itself.
            return self._count_session(LoggedIn(maildrop, logout, own, user))

        def failed(failure: Failure) -> Failure:  # the admission itself
            logout()
            return failure

        admission = policy.admit(user, delay)
        if fired(admission):
            return admitted(cast(bool, admission.result))
        return admission.addCallbacks(admitted, failed)

    def _count_session(self, result: LoggedIn) -> LoggedIn:
        """``--max-sessions-per-user``: count this session of the user (its
        logout uncounts it), or release the maildrop and refuse."""
        limit = self._logins.config.max_sessions_per_user
        if not limit:
            return result
        sessions = self.user_sessions
        user = result.user
        if not sessions.acquire(user, limit):
            result.logout()
            raise TooManySessions()
        release = result.logout

        def logout() -> None:
            sessions.release(user)
            release()

        return LoggedIn(result.maildrop, logout, result.login_delay, user)

    def _report(self, mechanism: str, result: str) -> None:
        self.observer.login_finished(self._record, mechanism, result,
                                     self._logins.clock.seconds() - self._started)

    def _succeeded(self, result: LoggedIn, request: Authenticate, tls: bool) -> LoggedIn:
        self._report(request.mechanism, LoginResult.OK)
        # The text is made here and the format only names it: Twisted's
        # formatter parsing four fields cost a text log ~20 µs a login (as
        # for the logout line, popframe.ops.logout).
        user, peer = _shown(request.user), self._peer_text()
        log.info(
            "{login_text}",
            login_text=f"login ok mechanism={request.mechanism} user={user} peer={peer} tls={tls}",
            mechanism=request.mechanism, user=user, peer=peer, tls=tls,
        )
        throttle = self._logins.config.throttle
        if throttle is not None:
            throttle.succeeded(request.user)
        return result

    def _failed(self, failure: Failure, request: Authenticate, tls: bool) -> Deferred[LoggedIn]:
        """Log a failed login once; count it and wait out its delay when it
        was a wrong credential; TooManyFailures when the throttle says drop."""
        error = as_pop3_error(failure)  # logs an unexpected traceback, once
        reason = type(failure.value).__name__
        mechanism = request.mechanism
        if isinstance(error, TooManyFailures):  # the address is blocked
            self._log(mechanism, request.user, reason, tls, dropped=True)
            self._report(mechanism, LoginResult.BLOCKED)
            self.observer.login_throttled(self._record, 0.0, "address")
            return fail(error)
        if not isinstance(error, AuthenticationFailed):
            self._log(mechanism, request.user, reason, tls)
            self._report_refusal(mechanism, error, failure)
            return fail(error)

        def answer(verdict: Verdict | None) -> Failure:
            self._report(mechanism, LoginResult.FAILED)
            return Failure(TooManyFailures() if verdict is not None and verdict.drop else error)

        return self._count_failure(mechanism, request.user, reason, tls).addCallback(answer)

    def _report_refusal(self, mechanism: str, error: POP3Error, failure: Failure) -> None:
        """A login refused for another reason than its credentials."""
        observer = self.observer
        if isinstance(error, MaildropInUse):
            self._report(mechanism, LoginResult.IN_USE)
        elif isinstance(error, LoginDelayed):
            self._report(mechanism, LoginResult.DELAYED)
        elif isinstance(error, TooManySessions):
            self._report(mechanism, LoginResult.LIMIT)
            observer.connection_refused(LimitKind.PER_USER, self._peer_text())
        else:
            self._report(mechanism, LoginResult.ERROR)
            if isinstance(error, TemporaryFailure):
                observer.backend_failed(self._role, backend_failure_kind(failure))

    def _count_failure(self, mechanism: str, user: str | None, reason: str,
                       tls: bool) -> Deferred[Verdict | None]:
        """Count a wrong credential (when throttling is on), log it once,
        and fire with the throttle's verdict after its delay."""
        throttle = self._logins.config.throttle
        if throttle is None:
            self._log(mechanism, user, reason, tls)
            return succeed(None)
        self.failures += 1
        d = throttle.failed(self.peer(), user, self.failures)

        def wait(verdict: Verdict) -> Deferred[Verdict | None]:
            self._log(mechanism, user, reason, tls, verdict)
            if verdict.delay > 0 or verdict.drop:
                dropped = None
                if verdict.drop:
                    dropped = "connection" if self.failures >= throttle.max_auth_failures > 0 \
                        else "address"
                self.observer.login_throttled(self._record, verdict.delay, dropped)
            if verdict.delay <= 0:
                return succeed(verdict)
            return deferLater(self._logins.clock, verdict.delay, lambda: verdict)

        return d.addCallback(wait)

    def _log(self, mechanism: str, user: str | None, reason: str, tls: bool,
             verdict: Verdict | None = None, dropped: bool = False) -> None:
        fields: dict[str, object] = dict(
            mechanism=mechanism or "-", user=_shown(user), peer=self._peer_text(),
            tls=tls, reason=reason)
        text = (
            "login failed mechanism={mechanism} user={user} peer={peer} tls={tls} reason={reason}"
        )
        if verdict is not None:
            text += " failures={failures} delay={delay}"
            fields.update(failures=verdict.failures, delay=f"{verdict.delay:g}s")
            dropped = verdict.drop
        if dropped:
            text += " action=drop"
        log.info(text, **fields)


def _shown(user: str | None) -> str:
    """A user name, printable in one log line."""
    return repr(user) if user is not None else "-"
