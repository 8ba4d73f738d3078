"""popframe's built-in stores, for ``--store=NAME:ARGUMENTS``."""

from popframe.stores.maildir import MaildirStoreFactory
from popframe.stores.mbox import MboxStoreFactory

maildir = MaildirStoreFactory()
mbox = MboxStoreFactory()
