"""A third-party popframe store in a few lines: every user finds one
greeting in their maildrop.  It reuses popframe's MemoryStore for the
listing, locking and commit rules, and only decides what is in it."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from popframe.interfaces import IMaildropStore, IMaildropStoreFactory
from popframe.stores.memory import MemoryStore


@implementer(IMaildropStore)
class HelloStore:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.memory = MemoryStore()

    def open(self, user: str) -> Deferred:
        if user not in self.memory.maildrops:
            message = f"From: popframe\nSubject: hello {user}\n\n{self.greeting}\n"
            self.memory.deliver(user, message.encode("utf-8"))
        return self.memory.open(user)


@implementer(IMaildropStoreFactory, IPlugin)
class HelloStoreFactory:
    storeName = "hello"
    argStringFormat = "hello:[GREETING]"
    storeHelp = "Every user has one message saying GREETING (default: hello).\nFor trying plugins."

    def storeFromString(self, argstring: str) -> IMaildropStore:
        return HelloStore(argstring or "hello")
