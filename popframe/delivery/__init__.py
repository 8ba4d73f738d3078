"""How mail gets in: what delivers into any store that offers
:class:`~popframe.interfaces.IDeliverableStore`, without knowing which.

- :mod:`.lda`: the local delivery agent behind ``popframe deliver``;
- :mod:`.lmtp`: the LMTP listener (RFC 2033) of ``twistd pop3 --lmtp``;
- :mod:`.agent`: the one path both take: check a recipient, deliver;
- :mod:`.recipients`: from an envelope address to a user name;
- :mod:`.spool`: a message kept in a temporary file as it arrives;
- :mod:`.errors`: why a delivery failed, as exit statuses and LMTP replies.

The names below are imported on first use, so ``popframe``'s other
subcommands (which import ``popframe.cli.deliver`` to list it) do not pay
for the checkers' and stores' imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DeliveryAgent", "DeliveryFailure", "Recipient", "RecipientRules", "Spool",
           "SpooledMessage"]

_WHERE = {
    "DeliveryAgent": "agent",
    "Recipient": "agent",
    "DeliveryFailure": "errors",
    "RecipientRules": "recipients",
    "Spool": "spool",
    "SpooledMessage": "spool",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
