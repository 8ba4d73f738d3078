"""Maildrop stores, and finding them by name.

Each store plugin provides :class:`~popframe.interfaces.IMaildropStoreFactory`
and is named on the command line as ``--store=NAME:ARGUMENTS``, e.g.
``--store=maildir:/var/mail/%u/Maildir``; third-party packages add stores by
shipping a module in ``twisted/plugins/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from popframe.config import ConfigurationError
from popframe.interfaces import IMaildropStore, IMaildropStoreFactory
from popframe.plugins import PluginSearch, find_plugins
from popframe.stores.base import LockedMaildrop

__all__ = [
    "LockedMaildrop",
    "RunBlocking",
    "find_store_factories",
    "run_synchronously",
    "store_from_description",
]

#: How a store runs blocking work: ``deferToThread`` in the server,
#: :func:`run_synchronously` in tests that want no reactor.
RunBlocking = Callable[..., "defer.Deferred[Any]"]


def run_synchronously(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    """Run ``f`` now, on this thread, and wrap its outcome in a Deferred."""
    return defer.maybeDeferred(f, *args, **kwargs)


def find_store_factories() -> PluginSearch[IMaildropStoreFactory]:
    """The installed store plugins, and the plugin modules that failed to
    load."""
    return find_plugins(IMaildropStoreFactory)


def store_from_description(description: str, key: str = "--store") -> IMaildropStore:
    """Build a store from ``NAME:ARGUMENTS``, as ``--store`` takes it."""
    name, _, arguments = description.partition(":")
    search = find_store_factories()
    factories = {f.storeName: f for f in search.found}
    factory = factories.get(name)
    if factory is None:
        known = ", ".join(sorted(factories)) or "none installed"
        problem = f"no such store {name!r} (known: {known})"
        if search.broken:
            problem += "; " + search.broken_text()
        raise ConfigurationError(key, problem)
    try:
        return factory.storeFromString(arguments)
    except ConfigurationError as e:
        if e.key == key:
            raise
        raise ConfigurationError(key, e.problem) from None
