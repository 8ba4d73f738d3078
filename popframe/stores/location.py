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

from popframe.config import ConfigurationError
from popframe.errors import PermanentFailure
from popframe.interfaces import UserSettings
from popframe.stores.template import PathTemplate

__all__ = ["HomeTemplate", "WrongMaildrop", "check_owner", "maildrop_path", "store_template",
           "template_users"]

log = Logger(namespace="popframe.stores")


class WrongMaildrop(PermanentFailure):
    """The user's maildrop is of another kind than the store, or not owned
    by the user's uid/gid; the log says which."""

    default_message = "maildrop not available for this user"


class HomeTemplate:
    """A store path written ``~/Maildir`` (Dovecot's ``mail_location =
    maildir:~/Maildir``): the maildrop is that path under the home a
    checker gives (:class:`~popframe.interfaces.UserSettings` ``home``:
    the passwd-file's home column or ``userdb_home``).  A user without a
    home has no maildrop (``[SYS/PERM]``, logged)."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.rest = template[2:].strip("/")
        if "%" in self.rest or ".." in self.rest.split("/"):
            raise ConfigurationError("--store", f"{template!r}: after ~/ only a fixed path "
                                     "(no % variables, no ..)")

    def __repr__(self) -> str:
        return f"HomeTemplate({self.template!r})"

    def resolve(self, user: str) -> str:
        raise WrongMaildrop()  # no home given (maildrop_path passes it)


def store_template(template: str | PathTemplate | HomeTemplate) -> PathTemplate | HomeTemplate:
    """A store's path template: ``~/...`` under each user's home, else a
    :class:`~popframe.stores.template.PathTemplate`."""
    if isinstance(template, (PathTemplate, HomeTemplate)):
        return template
    return HomeTemplate(template) if template.startswith("~/") else PathTemplate(template)


def maildrop_path(template: PathTemplate | HomeTemplate, user: str,
                  settings: UserSettings | None, kind: str) -> str:
    """The path of ``user``'s maildrop in a store of ``kind``: the
    checker's absolute location when it gave one, else the template's
    (under the user's home for a ``~/`` template).  Raises
    ``UnsafeUserName`` (template) or :class:`WrongMaildrop`."""
    if settings is None or not settings.maildrop:
        if isinstance(template, HomeTemplate):
            home = settings.home if settings is not None else None
            if not home or not os.path.isabs(home):
                log.warn("user {user!r}: the store's {template!r} needs a home, and the "
                         "userdb gives none", user=user, template=template.template)
                raise WrongMaildrop()
            return os.path.join(os.path.normpath(home), template.rest)
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


def template_users(template: PathTemplate | HomeTemplate) -> list[str]:
    """The users whose maildrops exist at ``template``'s paths (``popframe
    expire --all``): each ``%u``, ``%n``, ``%d`` matched as one or more
    whole-path-component wildcards.  Blocking (a glob).  A ``~/`` template
    names no users (they live in the userdb): a ``TypeError``."""
    if isinstance(template, HomeTemplate):
        raise TypeError("a ~/ store template cannot list its users: name them")
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
