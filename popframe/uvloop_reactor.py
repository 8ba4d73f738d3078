"""``twistd -r uvloop``: Twisted's asyncio reactor running on uvloop's
event loop (``pip install 'popframe[uvloop]'``).

One of the levers of the performance work (benchmarks/RESULTS.md says
what it measured).  ``--workers`` children run the reactor their parent
runs (:func:`reactor_name`, passed in the worker's spec)."""

from __future__ import annotations

from typing import Any

__all__ = ["install", "install_named", "reactor_name"]


def install() -> None:
    """Install the asyncio reactor on a new uvloop event loop."""
    import asyncio

    import uvloop
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)


def reactor_name(reactor: Any) -> str | None:
    """``"uvloop"`` or ``"asyncio"`` for the asyncio reactor on that loop,
    None for any other (a child then takes Twisted's default)."""
    if type(reactor).__module__ != "twisted.internet.asyncioreactor":
        return None
    loop = getattr(reactor, "_asyncioEventloop", None)
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def install_named(name: str | None) -> None:
    """In a worker, before anything imports the reactor: the parent's."""
    if name == "uvloop":
        install()
    elif name == "asyncio":
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
