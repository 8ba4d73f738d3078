"""Finding plugins, and saying which ones are broken.

``twisted.plugin.getPlugins`` skips a plugin module that raises on import
and only logs it (before twistd's log is even open), so a mistyped import in
a third-party store turned into "no such store".  :func:`find_plugins`
returns the broken modules with their errors beside the plugins that
loaded, so start-up and ``--help-stores`` can name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from twisted.plugin import getCache
from twisted.python.modules import getModule

__all__ = ["PluginSearch", "find_plugins"]

T = TypeVar("T")


@dataclass(frozen=True)
class PluginSearch(Generic[T]):
    """Plugins that provide an interface, and the plugin modules that could
    not be loaded (module name → ``ExceptionType: message``)."""

    found: list[T] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)

    def broken_text(self) -> str:
        """One line naming each broken module, or ``""``."""
        return "; ".join(f"plugin module {name} failed to load: {error}"
                         for name, error in sorted(self.broken.items()))


def find_plugins(interface: Any) -> PluginSearch[Any]:
    """Every plugin in ``twisted.plugins`` that provides ``interface``,
    and the plugin modules that raise when imported."""
    import twisted.plugins

    search: PluginSearch[Any] = PluginSearch()
    cache = getCache(twisted.plugins)
    for module in getModule("twisted.plugins").iterModules():
        key = module.name.rpartition(".")[2]
        if key not in cache:  # its import failed while the cache was made
            search.broken[module.name] = _import_error(module)
    for dropin in cache.values():
        for plugin in dropin.plugins:
            # The cache says what each plugin provides: import only the
            # modules that have one of ours (importing every plugin module
            # cost each `popframe deliver` half a second).
            if not any(provided.isOrExtends(interface) for provided in plugin.provided):
                continue
            try:
                loaded = plugin.load()
            except Exception as error:  # an entry cached before the module broke
                search.broken[dropin.moduleName] = f"{type(error).__name__}: {error}"
                break
            if interface.providedBy(loaded):
                search.found.append(loaded)
    return search


def _import_error(module: Any) -> str:
    try:
        module.load()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "not loadable"
