"""Announces the hello store to popframe (``--store=hello:``)."""

from hello_store import HelloStoreFactory

helloStore = HelloStoreFactory()
