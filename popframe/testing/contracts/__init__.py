"""Contract suites: pytest classes a backend's author subclasses in their
own test file, giving a few hooks, so every rule popframe relies on is
tested against their backend, with the reactor running as in the server.

- :class:`StoreContract` for an ``IMaildropStore``: hooks ``make_store``,
  ``add_message`` (unless the store is an ``IDeliverableStore``) and,
  optionally, ``break_deletions``.
- :class:`CheckerContract` for a cred ``ICredentialsChecker`` (and its
  ``ISecretLookup`` / ``IUserSettings``): hooks ``make_checker`` and,
  optionally, ``break_backend``.

These import pytest, so they are not imported by :mod:`popframe.testing`.
"""

from popframe.testing.contracts.checker import CheckerContract
from popframe.testing.contracts.store import SAMPLE_MESSAGES, StoreContract

__all__ = ["SAMPLE_MESSAGES", "CheckerContract", "StoreContract"]
