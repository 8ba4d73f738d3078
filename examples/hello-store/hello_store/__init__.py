"""hello_store: a popframe backend written as a third party writes one.

- :mod:`hello_store.store`: a maildrop store (every user finds a greeting,
  plus whatever was delivered to them) implementing popframe's store
  contract itself;
- :mod:`hello_store.body`: a message body read asynchronously, chunk by
  chunk, as a database or object store would serve it;
- :mod:`hello_store.checker`: a credential checker (users and plaintext
  passwords from the ``--auth`` argument) that also serves APOP and a
  per-user LOGIN-DELAY;
- :mod:`hello_store.factories`: the two plugins that name them on the
  command line (``--store hello:...``, ``--auth hello:...``), announced by
  ``twisted/plugins/hello_store_plugin.py``.

popframe's ``docs/writing-a-backend.md`` walks through it.
"""

from hello_store.checker import HelloChecker
from hello_store.factories import HelloCheckerFactory, HelloStoreFactory
from hello_store.store import HelloStore

__all__ = ["HelloChecker", "HelloCheckerFactory", "HelloStore", "HelloStoreFactory"]
