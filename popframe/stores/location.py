"""Where a file store finds a user's maildrop: its path template, or the
location a checker gave (:class:`~popframe.interfaces.UserSettings`
``maildrop``: LDAP's maildrop attribute, the passwd-file's
``userdb_mail``), and whether the files there belong to the system user
the userdb says (``userdb_uid``/``userdb_gid``): popframe serves every
user as one system user, so it refuses a maildrop owned by another rather
than serve it with the wrong rights."""

from __future__ import annotations

import glob
import os
import re

from twisted.logger import Logger

from popframe.errors import PermanentFailure
from popframe.interfaces import UserSettings
from popframe.stores.template import PathTemplate

__all__ = ["WrongMaildrop", "check_owner", "maildrop_path", "template_users"]

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


def template_users(template: PathTemplate) -> list[str]:
    """The users whose maildrops exist at ``template``'s paths (``popframe
    expire --all``): each ``%u``, ``%n``, ``%d`` matched as one or more
    whole-path-component wildcards.  Blocking (a glob)."""
    found: set[str] = set()
    variants = [template.template]
    without_domain = re.sub(r"/%L?d(?=/)", "", template.template)
    if without_domain != template.template:
        variants.append(without_domain)
    for text in variants:
        pattern, regex = _glob_and_regex(text)
        for path in glob.glob(pattern):
            match = regex.fullmatch(path)
            if match is None:
                continue
            values = match.groupdict()
            user = values.get("u") or values.get("n") or ""
            if values.get("d") and not values.get("u"):
                user += "@" + values["d"]
            if user:
                found.add(user)
    return sorted(found)


def _glob_and_regex(text: str) -> tuple[str, re.Pattern[str]]:
    pattern, regex, seen = [], [], set()
    for piece in re.split(r"(%L?[und%])", text):
        variable = re.fullmatch(r"%L?([und])", piece)
        if piece == "%%":
            pattern.append(glob.escape("%"))
            regex.append(re.escape("%"))
        elif variable is not None:
            name = variable.group(1)
            pattern.append("*")
            regex.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+)")
            seen.add(name)
        else:
            pattern.append(glob.escape(piece))
            regex.append(re.escape(piece))
    return "".join(pattern), re.compile("".join(regex))
