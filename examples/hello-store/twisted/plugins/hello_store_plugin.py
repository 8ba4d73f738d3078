"""Announces hello_store's plugins to twistd: ``twisted.plugin.getPlugins``
imports every module in a ``twisted/plugins/`` directory on ``sys.path``
and collects the module-level objects that provide the interface asked
for.  This directory and its parent have no ``__init__.py``: installed, the
module lands beside Twisted's own plugins without replacing them."""

from hello_store.factories import HelloCheckerFactory, HelloStoreFactory

helloStore = HelloStoreFactory()
helloChecker = HelloCheckerFactory()
