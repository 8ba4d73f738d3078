"""The backend kit: every interface a store, checker or throttle-store
author implements, in one place.

- Stores (:mod:`popframe.interfaces.stores`): :class:`IMaildropStore`,
  :class:`IMaildrop`, :class:`IMessageBody`, :class:`IDeliverableStore`,
  :class:`IImportingStore`, :class:`IMaildropLocker`,
  :class:`IMaildropLock`, :class:`IMaildropStoreFactory` (the plugin), and
  the listing types :class:`MessageInfo` and :class:`MessageList`.
  ``popframe.stores.LockedMaildrop`` is the base class of a maildrop.
- Credential sources (:mod:`popframe.interfaces.auth`): :class:`ISecretLookup`
  with its declared secret types, :class:`IUserSettings` /
  :class:`UserSettings`, :class:`ITokenValidator`, and the credential
  interfaces checkers accept.
- Throttling (:mod:`popframe.interfaces.throttle`): :class:`IThrottleStore`.

Errors a backend raises are in :mod:`popframe.errors`.  Contract suites to
run against your backend are in :mod:`popframe.testing.contracts`;
``docs/writing-a-backend.md`` walks through writing one.
"""

from popframe.interfaces.auth import (
    SECRET_TYPES,
    CramMD5Secret,
    IClientCertificate,
    InvalidToken,
    IOAuthBearerToken,
    ISecretLookup,
    ITokenValidator,
    IUserSettings,
    IVerifiedLogin,
    PlaintextCramMD5,
    PlaintextSecret,
    ScramRecord,
    Secret,
    SecretKind,
    UserSettings,
)
from popframe.interfaces.stores import (
    IDeliverableStore,
    IExpiringMaildrop,
    IFencedLock,
    IImportingStore,
    IListableStore,
    IMaildrop,
    IMaildropLock,
    IMaildropLocker,
    IMaildropStore,
    IMaildropStoreFactory,
    IMessageBody,
    IProcessLocalStore,
)
from popframe.interfaces.throttle import IThrottleStore, StoreUnavailable
from popframe.protocol.listing import MessageInfo, MessageList, valid_uid

__all__ = [
    "SECRET_TYPES",
    "CramMD5Secret",
    "IClientCertificate",
    "IDeliverableStore",
    "IExpiringMaildrop",
    "IFencedLock",
    "IImportingStore",
    "IListableStore",
    "IMaildrop",
    "IMaildropLock",
    "IMaildropLocker",
    "IMaildropStore",
    "IMaildropStoreFactory",
    "IMessageBody",
    "IOAuthBearerToken",
    "IProcessLocalStore",
    "ISecretLookup",
    "IThrottleStore",
    "ITokenValidator",
    "IUserSettings",
    "IVerifiedLogin",
    "InvalidToken",
    "MessageInfo",
    "MessageList",
    "PlaintextCramMD5",
    "PlaintextSecret",
    "ScramRecord",
    "Secret",
    "SecretKind",
    "StoreUnavailable",
    "UserSettings",
    "valid_uid",
]
