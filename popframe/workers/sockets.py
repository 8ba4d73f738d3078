"""The listening sockets the workers share: which endpoint types can be
shared, binding them in the parent, adopting them in a worker.

Each ``--listen`` string is parsed with ``serverFromString`` in both
processes, against a stand-in for the reactor (:class:`_BindingReactor`
in the parent, :class:`_AdoptingReactor` in a worker).  So whatever an
endpoint wraps around the factory (TLS for ``ssl:`` and ``tls:``, the
PROXY protocol for ``haproxy:``) is applied in the worker exactly as
Twisted applies it, and only the final ``listenTCP``/``listenSSL``/
``listenUNIX``/``adoptStreamPort`` call is redirected: the parent binds,
the worker adopts what the parent bound.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.python.systemd import ListenFDs

from popframe.config import ConfigurationError
from popframe.config.endpoints import (
    bindable,
    check_endpoint,
    listen_problem,
    parse_server_endpoint,
)
from popframe.twisted_internals import (
    adopt_shared_unix_port,
    inherited_systemd_descriptors,
    stop_accepting,
    systemd_descriptors_replaced,
)

#: Endpoint types whose sockets the parent opens and the workers share.
SHARED_TYPES = ("tcp", "tcp6", "ssl", "tls", "unix", "systemd")
#: Endpoint types that wrap another endpoint string (``haproxy:tcp:110``,
#: ``implicit-tls:systemd:domain=INET6:index=1``).
WRAPPER_TYPES = ("haproxy", "implicit-tls")


def check_shareable(description: str, key: str = "--listen") -> None:
    """Raise ``ConfigurationError`` unless worker processes can share the
    socket of the endpoint ``description`` (of the option ``key``:
    ``--listen`` or ``--lmtp``)."""
    kind, _, rest = description.partition(":")
    kind = kind.strip().lower()
    if kind in WRAPPER_TYPES:
        check_shareable(rest, key)
        return
    if kind not in SHARED_TYPES:
        shared = ", ".join(f"{name}:" for name in SHARED_TYPES)
        raise ConfigurationError(
            key,
            f"{kind or description!r}: endpoints cannot be shared by worker processes "
            f"(shared: {shared}, also behind haproxy:); use --workers 1 to serve it",
        )


def _listen_now(endpoint: Any, factory: Any) -> None:
    """``endpoint.listen(factory)``, raising its failure at once (every
    listen call of the stand-in reactors is synchronous)."""
    failures: list[Failure] = []
    endpoint.listen(factory).addErrback(failures.append)
    if failures:
        failures[0].raiseException()


# -- the parent ----------------------------------------------------------------------


class _NoConnections(Factory):
    """The factory of the parent's own copy of a shared socket.  The parent
    stops reading the socket as soon as it is bound, so this never runs."""

    noisy = False

    def logPrefix(self) -> str:
        return "shared listener"

    def buildProtocol(self, addr: object) -> None:
        return None  # refuse: connections are for the workers


class _BindingReactor:
    """The reactor, for one endpoint in the parent: the endpoint's final
    listen call binds a socket the parent will not accept on (TLS is the
    workers' business, so ``listenSSL`` binds plain TCP)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.ports: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _bound(self, port: Any) -> Any:
        stop_accepting(port)  # synchronously, before the reactor could accept
        self.ports.append(port)
        return port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        return self._bound(self._reactor.listenTCP(port, factory, backlog, interface))

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address: Any, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> Any:
        return self._bound(self._reactor.listenUNIX(address, factory, backlog, mode, wantPID))

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Any:
        return self._bound(self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory))


class SharedListener:
    """One ``--listen`` (or ``--lmtp``: ``key``) endpoint: parsed at
    start-up, bound by the parent."""

    def __init__(self, description: str, reactor: Any, key: str = "--listen") -> None:
        # Checked first: a mistyped endpoint is named as such, not as one
        # that workers cannot share.
        check_endpoint(description, key)
        check_shareable(description, key)
        self.description = description
        self.key = key
        self._reactor = _BindingReactor(reactor)
        try:
            # TLS is the workers' business: the parent binds what it wraps.
            self._endpoint = serverFromString(self._reactor, bindable(description))
        except (ValueError, KeyError, TypeError, OSError, IndexError) as e:
            raise ConfigurationError(key, f"{description!r}: {e}") from None
        self.port: Any = None

    def bind(self) -> None:
        try:
            _listen_now(self._endpoint, _NoConnections())
        except CannotListenError as error:
            raise ConfigurationError(
                self.key, f"{self.description!r}: cannot listen: {listen_problem(error)}"
            ) from None
        if len(self._reactor.ports) != 1:
            for port in self._reactor.ports:
                port.stopListening()
            raise ConfigurationError(
                self.key, f"{self.description!r}: cannot be shared by worker processes "
                "(it did not open exactly one socket); use --workers 1 to serve it")
        self.port = self._reactor.ports[0]

    def fileno(self) -> int:
        return self.port.fileno()

    def address(self) -> str:
        host = self.port.getHost()
        if hasattr(host, "port"):
            return f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"
        name = host.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    def close(self) -> defer.Deferred[None]:
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)


def systemd_descriptors() -> dict[str, Any]:
    """How many descriptors systemd passed the parent, and their names, so
    a worker can parse ``systemd:`` endpoint strings the same way."""
    listen_fds = inherited_systemd_descriptors()
    if listen_fds is None:
        return {"count": 0, "names": []}
    return {
        "count": len(listen_fds.inheritedDescriptors()),
        "names": list(listen_fds.inheritedNamedDescriptors()),
    }


# -- a worker ------------------------------------------------------------------------


class _AdoptingReactor:
    """The reactor, for one endpoint in a worker: the endpoint's final
    listen call adopts the socket the parent bound (``listenSSL`` adds TLS
    the way the reactor's own ``listenSSL`` does)."""

    def __init__(self, reactor: Any, fd: int, systemd_fd: int | None = None) -> None:
        self._reactor = reactor
        self._fd = fd
        self._systemd_fd = systemd_fd
        self.systemd_fd_consumed = False
        self.ports: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _adopt(self, factory: Any) -> Any:
        probe = socket.socket(fileno=os.dup(self._fd))
        family = probe.family
        probe.close()
        os.set_blocking(self._fd, False)
        if family == socket.AF_UNIX:
            port = adopt_shared_unix_port(self._reactor, self._fd, factory)
        else:
            port = self._reactor.adoptStreamPort(self._fd, family, factory)
        self.ports.append(port)
        return port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        return self._adopt(factory)

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def listenUNIX(self, address: Any, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> Any:
        return self._adopt(factory)

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Any:
        port = self._adopt(factory)
        # A systemd: endpoint closes the descriptor it was given once this
        # returns; it was our duplicate (see adopt_listener).
        self.systemd_fd_consumed = fileDescriptor == self._systemd_fd
        return port


def adopt_listener(reactor: Any, description: str, fd: int, systemd: dict[str, Any],
                   factory: Any, parse: Callable[[Any, str], Any] | None = None) -> Any:
    """Listen with ``factory`` on the inherited socket ``fd``, wrapped as
    ``--listen description`` wraps it; return the port.  ``systemd`` is
    what :func:`systemd_descriptors` said in the parent; ``parse(reactor,
    description)`` makes the endpoint (by default
    :func:`~popframe.config.endpoints.parse_server_endpoint`)."""
    names = list(systemd.get("names", ()))
    count = max(int(systemd.get("count", 0)), len(names))
    systemd_fd = os.dup(fd) if count else None
    stand_in = _AdoptingReactor(reactor, fd, systemd_fd)
    # A systemd: endpoint names one of the parent's descriptors by index or
    # name: here each of them leads to the shared socket.
    systemd_names = (nullcontext() if systemd_fd is None else
                     systemd_descriptors_replaced(ListenFDs([systemd_fd] * count, names)))
    try:
        with systemd_names:
            _listen_now((parse or parse_server_endpoint)(stand_in, description), factory)
    finally:
        if systemd_fd is not None and not stand_in.systemd_fd_consumed:
            os.close(systemd_fd)
        os.close(fd)  # the port holds a duplicate of its own
    if len(stand_in.ports) != 1:
        raise RuntimeError(f"{description!r} did not adopt exactly one socket")
    return stand_in.ports[0]
