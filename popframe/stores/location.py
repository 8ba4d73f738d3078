"""Where a file store finds a user's maildrop: its path template, or the
location a checker gave (:class:`~popframe.interfaces.UserSettings`
``maildrop``: LDAP's maildrop attribute, the passwd-file's
``userdb_mail``), and whether the files there belong to the system user
the userdb says (``userdb_uid``/``userdb_gid``): popframe serves every
user as one system user, so it refuses a maildrop owned by another rather
than serve it with the wrong rights."""

from __future__ import annotations

import os

from twisted.logger import Logger

from popframe.errors import PermanentFailure
from popframe.interfaces import UserSettings
from popframe.stores.template import PathTemplate

__all__ = ["WrongMaildrop", "check_owner", "maildrop_path"]

log = Logger(namespace="popframe.stores")


class WrongMaildrop(PermanentFailure):
    """The user's maildrop is of another kind than the store, or not owned
    by the user's uid/gid; the log says which."""

    default_message = "maildrop not available for this user"


def maildrop_path(template: PathTemplate, user: str, settings: UserSettings | None,
                  kind: str) -> str:
    """The path of ``user``'s maildrop in a store of ``kind``: the
    checker's absolute location when it gave one, else the template's.
    Raises ``UnsafeUserName`` (template) or :class:`WrongMaildrop`."""
    if settings is None or not settings.maildrop:
        return template.resolve(user)
    if settings.maildrop_kind not in (None, kind):
        log.warn("user {user!r}: the userdb gives a {given} maildrop, this store serves {kind}",
                 user=user, given=settings.maildrop_kind, kind=kind)
        raise WrongMaildrop()
    if not os.path.isabs(settings.maildrop):
        log.warn("user {user!r}: the maildrop location {path!r} is not absolute",
                 user=user, path=settings.maildrop)
        raise WrongMaildrop()
    return os.path.normpath(settings.maildrop)


def check_owner(path: str, settings: UserSettings | None, user: str) -> None:
    """Raise :class:`WrongMaildrop` when ``path`` exists and belongs to
    another uid or gid than ``settings`` name (one ``stat``)."""
    if settings is None or (settings.uid is None and settings.gid is None):
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if (settings.uid is not None and st.st_uid != settings.uid) or (
            settings.gid is not None and st.st_gid != settings.gid):
        log.warn("user {user!r}: {path} belongs to {owner}:{group}, the userdb says "
                 "{uid}:{gid}; refused", user=user, path=path, owner=st.st_uid,
                 group=st.st_gid, uid=settings.uid, gid=settings.gid)
        raise WrongMaildrop()
