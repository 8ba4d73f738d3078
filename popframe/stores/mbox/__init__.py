"""mbox, as traditional Unix hosts keep mail: one file per user, messages
one after another, each behind a ``From`` line (``--store mbox:/var/mail/%u``).

popframe shares the file with Postfix's local delivery, procmail and mutt
through their locks, reads and writes mboxrd ``From`` quoting, keeps an
index so a session does not read the whole file again, and deletes by
writing a new file and renaming it over the old one.

The modules, one job each:

- :mod:`.store`: the store, the session's maildrop, the ``--store`` plugin;
- :mod:`.mailbox`: one mbox on disk: snapshot, append, rewrite;
- :mod:`.locks`: the fcntl lock and the dotlock;
- :mod:`.journal`: finishing an append a killed process left;
- :mod:`.index`: the messages' offsets, sizes and uids, kept between sessions;
- :mod:`.scan`: reading the file to find them;
- :mod:`.format`: ``From`` lines and mboxrd quoting;
- :mod:`.reader`: reading one message for RETR;
- :mod:`.files`: opening the mbox, and the names of popframe's files beside it.
"""

from popframe.stores.mbox.mailbox import Mbox, Snapshot
from popframe.stores.mbox.store import MboxMaildrop, MboxStore, MboxStoreFactory, MessageMoved

__all__ = ["Mbox", "MboxMaildrop", "MboxStore", "MboxStoreFactory", "MessageMoved", "Snapshot"]
