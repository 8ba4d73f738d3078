"""Maildir, as Postfix, Dovecot and Courier write it.

A session sees a snapshot: at open, under the lock, mail in ``new/`` moves
to ``cur/`` (adding ``:2,``, as an MUA that has seen it would), then ``cur/``
is listed oldest first.  Mail delivered later is neither listed nor
deleted.  Other agents (an IMAP server, a MUA) ignore our lock, so a listed
file may be renamed (new flags) or deleted under us: files are found again
by their base name, and a file that is gone is no error at commit.

Files popframe keeps in the maildir root (Dovecot ignores them):

- ``popframe.lock``: the flock target; never removed.
- ``popframe.sizes``: a cache of computed RETR sizes (and whether the file
  already is its wire form) by base name, so the next listing of a large
  maildrop reads no message.  Only a cache: losing or corrupting it costs
  one re-read.
- ``popframe.listing``: the last listing, with the ``cur/`` names it was
  made from and, once a readdir found those names while ``cur/`` and
  ``new/`` had not changed for a second, their key (inode and ctime).
  Maildir names are content keys (a flag change is a rename), so while
  ``cur/`` holds those names, or the key holds, the listing is still
  right, and the next session, in any process, skips making it.  Only a
  cache too: a stale, corrupt or foreign one is ignored and replaced.
- ``popframe.journal``: the names a commit is deleting.  It is durable
  before the first unlink, so a crash mid-commit is finished by the next
  open: a commit is all or none.

Nothing follows symlinks inside the maildir, so a user with a shell cannot
make the server read ``/etc/shadow`` through ``cur/``.

The modules, one job each:

- :mod:`.store`: the store, the session's maildrop, the ``--store`` plugin;
- :mod:`.directory`: one maildir on disk, and listing it;
- :mod:`.remembered`: listings of recently opened maildirs, in memory;
- :mod:`.listing`: the :class:`Snapshot` and the ``popframe.listing`` format;
- :mod:`.sizes`: the ``popframe.sizes`` format;
- :mod:`.journal`: ``popframe.journal``, deleting all or none;
- :mod:`.names`: maildir file names, and the uids and order they give;
- :mod:`.files`: opening and listing files without following symlinks;
- :mod:`.collector`: pausing the garbage collector while a listing is made.
"""

from popframe.stores.maildir.directory import LOCK_NAME, Maildir
from popframe.stores.maildir.journal import JOURNAL_NAME
from popframe.stores.maildir.listing import LISTING_NAME, Snapshot
from popframe.stores.maildir.sizes import SIZES_NAME
from popframe.stores.maildir.store import (
    MaildirMaildrop,
    MaildirStore,
    MaildirStoreFactory,
    MessageVanished,
)

__all__ = [
    "JOURNAL_NAME",
    "LISTING_NAME",
    "LOCK_NAME",
    "SIZES_NAME",
    "Maildir",
    "MaildirMaildrop",
    "MaildirStore",
    "MaildirStoreFactory",
    "MessageVanished",
    "Snapshot",
]
