"""``twistd -r uvloop``: the asyncio reactor on uvloop (popframe.uvloop_reactor)."""

from twisted.application.reactors import Reactor

uvloop = Reactor("uvloop", "popframe.uvloop_reactor",
                 "asyncio reactor on uvloop's event loop (needs uvloop)")
