"""Path templates for per-user stores, with Dovecot's ``%`` variables.

``%u`` is the whole user name, ``%n`` the local part (before the first
``@``), ``%d`` the domain (after it, empty when there is none), ``%%`` a
literal ``%``; ``%Lu``, ``%Ln`` and ``%Ld`` are the same lower-cased.

A path component that is only ``%d`` disappears for a user without a
domain (no ``@``; ``alice@`` is refused): ``/var/mail/%d/%n/Maildir`` gives ``alice`` the path
``/var/mail/alice/Maildir`` and ``bob@example.org``
``/var/mail/example.org/bob/Maildir``, as the ``//`` Dovecot makes of it
does.  The two never meet: they differ in their number of components.

A user name is data from the network, and the expanded path must never
leave the store: a name is refused before it touches the filesystem when it
could name another directory (``..``, ``a/b``), hide as a dot-file, or
smuggle control characters into a path or a log line.  The refusal is an
:class:`UnsafeUserName`, a :class:`~popframe.errors.PermanentFailure`: the
user did authenticate (so ``AuthenticationFailed`` would be a lie that
makes clients ask for the password again), but no retry will ever give
them a maildrop, and the admin should look at the log.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass

from popframe.config import ConfigurationError
from popframe.errors import PermanentFailure

__all__ = [
    "NAME_MAX",
    "PathTemplate",
    "UnsafeUserName",
    "check_user_name",
    "real_path",
    "split_user",
]

#: The longest path component most filesystems accept, in bytes.
NAME_MAX = 255

_VARIABLE = re.compile(r"%(L?)([und%])|%")
#: A path component made of the domain alone.
_DOMAIN_ONLY = re.compile(r"(?:%L?d)+")


class UnsafeUserName(PermanentFailure):
    """The user name cannot safely become a path.

    ``str()`` is what the client reads and says nothing specific; the
    ``reason`` attribute is for the log.
    """

    default_message = "maildrop not available for this user"

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str  # "u", "n" or "d"
    lower: bool


def _parse(template: str, key: str) -> list[_Literal | _Variable]:
    """Split ``template`` into literal text and variables, refusing unknown
    ``%`` escapes so a typo like ``%U`` fails at start-up, not at login.
    """
    parts: list[_Literal | _Variable] = []
    pos = 0
    for match in _VARIABLE.finditer(template):
        if match.start() > pos:
            parts.append(_Literal(template[pos : match.start()]))
        pos = match.end()
        name = match.group(2)
        if name is None:
            bad = template[match.start() : match.start() + 2]
            raise ConfigurationError(
                key, f"unknown variable {bad!r} in {template!r} (use %u, %n, %d or %%)"
            )
        if name == "%":
            parts.append(_Literal("%"))
        else:
            parts.append(_Variable(name, bool(match.group(1))))
    if pos < len(template):
        parts.append(_Literal(template[pos:]))
    return parts


def _fixed_prefix(parts: list[_Literal | _Variable]) -> str:
    """The directory the template can never leave: its literal text up to
    the last ``/`` before the first variable.
    """
    text = ""
    for part in parts:
        if isinstance(part, _Variable):
            break
        text += part.text
    return os.path.dirname(text) or "/"


def split_user(user: str) -> tuple[str, str]:
    """``(local part, domain)`` split at the first ``@``, as Dovecot does."""
    local, _, domain = user.partition("@")
    return local, domain


def check_user_name(user: str) -> None:
    """Refuse names that could do harm anywhere in a path or a log line."""
    if not user:
        raise UnsafeUserName("empty user name")
    if "/" in user or "\\" in user:
        raise UnsafeUserName("user name contains a path separator")
    for char in user:
        # Cc: C0 controls (NUL, CR, LF...), DEL and C1; Cs: lone surrogates
        # from undecodable bytes, which name no stable file.
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise UnsafeUserName("user name contains a control character")


class PathTemplate:
    """A template like ``/var/mail/%d/%n/Maildir``, checked once at start-up
    and expanded safely per user.
    """

    def __init__(self, template: str, key: str = "--store") -> None:
        if not template:
            raise ConfigurationError(key, "the path template is empty")
        if not os.path.isabs(template):
            raise ConfigurationError(key, f"the path template {template!r} must be absolute")
        self.template = template
        self._parts = _parse(template, key)
        if not any(isinstance(p, _Variable) and p.name in "un" for p in self._parts):
            raise ConfigurationError(
                key,
                f"the path template {template!r} needs %u or %n, or every user shares one maildrop",
            )
        self.prefix = os.path.normpath(_fixed_prefix(self._parts))
        self._real_prefix: str | None = None
        # expand()'s answers: a pure function of the user name, asked at
        # every login (issue 18); bounded, emptied when full.
        self._expanded: dict[str, str] = {}
        # For users without a domain: the components that are only %d left out.
        kept = [c for c in template.split("/") if not _DOMAIN_ONLY.fullmatch(c)]
        self._parts_without_domain = _parse("/".join(kept), key)

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"

    def expand(self, user: str) -> str:
        """The path for ``user``, checked without touching the filesystem.

        Raises :class:`UnsafeUserName`.  Substitution happens in one pass,
        so a user called ``%u`` or ``%2e%2e`` is just a literal name.
        """
        path = self._expanded.get(user)
        if path is None:
            path = self._expand(user)
            if len(self._expanded) >= _EXPANDED_MAX:
                self._expanded.clear()
            self._expanded[user] = path
        return path

    def _expand(self, user: str) -> str:
        check_user_name(user)
        local, domain = split_user(user)
        values = {"u": user, "n": local, "d": domain}
        pieces: list[tuple[str, bool]] = []  # (text, came from the user)
        # "alice@" (an empty domain given) is refused, not made alice's.
        for part in self._parts if "@" in user else self._parts_without_domain:
            if isinstance(part, _Literal):
                pieces.append((part.text, False))
            else:
                value = values[part.name]
                pieces.append((value.lower() if part.lower else value, True))
        path = "".join(text for text, _ in pieces)
        self._check_components(pieces)
        self._check_confined(os.path.normpath(path), self.prefix)
        return path

    def resolve(self, user: str) -> str:
        """:meth:`expand`, then follow symlinks and refuse a path that ends
        up outside the template's fixed prefix.  Touches the filesystem (see
        :func:`real_path`): cheap on a local disk, where the maildir store
        calls it on the reactor thread.  The prefix's own real path is
        kept, and found again before a path is refused, so an admin who
        moves the store behind a symlink refuses no one.
        """
        path = self.expand(user)
        real = real_path(path)
        root = self._real_prefix
        if root is None or not _is_inside(real, root):
            root = self._real_prefix = os.path.realpath(self.prefix)
            self._check_confined(real, root)
        return path

    @staticmethod
    def _check_components(pieces: list[tuple[str, bool]]) -> None:
        """Each path component holding user text must be an ordinary,
        visible, non-empty name of a length the filesystem accepts.
        """
        component = ""
        from_user = False
        for text, is_user in pieces + [("/", False)]:
            for index, chunk in enumerate(text.split("/")):
                if index > 0:
                    if from_user:
                        _check_component(component)
                    component, from_user = "", False
                component += chunk
                from_user = from_user or is_user

    @staticmethod
    def _check_confined(path: str, root: str) -> None:
        if not _is_inside(path, root):
            raise UnsafeUserName(f"path {path!r} is outside {root!r}")


#: How many user names' expanded paths a template remembers.
_EXPANDED_MAX = 10_000


def _is_inside(path: str, root: str) -> bool:
    """Whether the normalized absolute ``path`` is below ``root``."""
    return path.startswith(root if root.endswith("/") else root + "/")


def real_path(path: str) -> str:
    """``os.path.realpath(path)``, asked of the kernel where it can tell:
    open the path with ``O_PATH`` and read where ``/proc/self/fd`` says it
    is, three system calls.  ``realpath`` walks the path in Python with an
    lstat per component, 15% of the reactor thread in a ``check`` run.
    Anything else (no such path yet, no ``/proc``) falls back to it.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (OSError, AttributeError):  # (no O_PATH: not Linux)
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)


def _check_component(component: str) -> None:
    if component in ("", ".", ".."):
        raise UnsafeUserName(f"user name makes the path component {component!r}")
    if component.startswith("."):
        raise UnsafeUserName("user name makes a hidden path component")
    try:
        encoded = os.fsencode(component)
    except UnicodeError:
        raise UnsafeUserName("user name cannot be encoded for the filesystem") from None
    if len(encoded) > NAME_MAX:
        raise UnsafeUserName("user name makes a path component that is too long")
