"""How mail gets in: what delivers into any store that offers
:class:`~popframe.interfaces.IDeliverableStore`, without knowing which.

- :mod:`.lda`: the local delivery agent behind ``popframe deliver``;
- :mod:`.lmtp`: the LMTP listener (RFC 2033) of ``twistd pop3 --lmtp``;
- :mod:`.agent`: the one path both take: check a recipient, deliver;
- :mod:`.recipients`: from an envelope address to a user name;
- :mod:`.spool`: a message kept in a temporary file as it arrives;
- :mod:`.errors`: why a delivery failed, as exit statuses and LMTP replies.
"""

from popframe.delivery.agent import DeliveryAgent, Recipient
from popframe.delivery.errors import DeliveryFailure
from popframe.delivery.recipients import RecipientRules
from popframe.delivery.spool import Spool, SpooledMessage

__all__ = ["DeliveryAgent", "DeliveryFailure", "Recipient", "RecipientRules", "Spool",
           "SpooledMessage"]
