"""From an envelope recipient to the user name a maildrop belongs to.

The same name a login gives: PRECIS-normalised when it is not ASCII
(:func:`popframe.protocol.normalize.normalize_user`, as POP3 UTF8 and SASL
logins are), so mail for a user lands where their login looks.  Then the
store's template splits it as for a login: ``%u`` the whole name, ``%n``
the local part, ``%d`` the domain.

Exactly what happens to ``<"Alice+news"@Example.ORG>``, in order:

1. the angle brackets and an RFC 5321 source route (``@a,@b:``) go;
2. the address splits at its last ``@``; a quoted local part is unquoted
   (``"a\\ b"`` → ``a b``);
3. with a recipient delimiter (``+``, as Postfix's
   ``recipient_delimiter``), the local part ends before the first of its
   characters: ``Alice``;
4. the domain is lower-cased (domains are case-insensitive, RFC 5321
   2.4), the local part keeps its case (it is not);
5. non-ASCII text is PRECIS-normalised;
6. the user format picks the name: ``%u`` (the default) ``Alice@example.org``,
   ``%n`` ``Alice`` (users who log in without a domain), ``%Lu`` and
   ``%Ln`` the same lower-cased.
"""

from __future__ import annotations

from dataclasses import dataclass

from popframe.config import ConfigurationError
from popframe.delivery.errors import BadAddress
from popframe.errors import BadArguments
from popframe.protocol.normalize import normalize_user

__all__ = ["USER_FORMATS", "RecipientRules", "split_address"]

#: The user formats, as Dovecot's ``auth_username_format`` spells them.
USER_FORMATS = ("%u", "%n", "%Lu", "%Ln")


def split_address(address: str) -> tuple[str, str]:
    """``(local part, domain)`` of an envelope address (brackets, source
    route and quoting removed); raises :class:`BadAddress`."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text.startswith("@") and ":" in text:  # a source route
        text = text.partition(":")[2]
    if not text:
        raise BadAddress("empty recipient address")
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = _unquote(local[1:-1])
    if not local:
        raise BadAddress("no local part")
    return local, domain


def _unquote(text: str) -> str:
    out, escaped = [], False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


@dataclass(frozen=True, slots=True)
class RecipientRules:
    """How recipients become user names (see the module's steps)."""

    #: ``%u``, ``%n``, ``%Lu`` or ``%Ln``.
    user_format: str = "%u"
    #: Characters that start an address extension (``+``); empty: none.
    delimiter: str = ""

    def __post_init__(self) -> None:
        if self.user_format not in USER_FORMATS:
            raise ConfigurationError(
                "--user-format", f"{self.user_format!r}: use one of {', '.join(USER_FORMATS)}")

    def user_for(self, address: str) -> str:
        """The user name mail for ``address`` belongs to; raises
        :class:`BadAddress`."""
        local, domain = split_address(address)
        if self.delimiter:
            cut = min((i for i in (local.find(c) for c in self.delimiter) if i > 0),
                      default=-1)
            if cut > 0:
                local = local[:cut]
        domain = domain.lower()
        try:
            local = normalize_user(local)
            domain = normalize_user(domain) if domain else domain
        except BadArguments:
            raise BadAddress("address not allowed (RFC 8265)") from None
        user = local if self.user_format.endswith("n") or not domain else f"{local}@{domain}"
        return user.lower() if self.user_format.startswith("%L") else user
