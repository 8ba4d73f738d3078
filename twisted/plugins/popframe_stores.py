"""popframe's built-in stores, for ``--store=NAME:ARGUMENTS``."""

from popframe.stores.maildir import MaildirStoreFactory

maildir = MaildirStoreFactory()
