"""Escaping a user name for an LDAP filter (RFC 4515) or a DN (RFC 4514).

A user name is data from the network; spliced into ``(uid=%u)`` unescaped,
``*`` or ``)(uid=*`` would change what the filter matches (LDAP
injection), and ``,`` or ``+`` what a DN names.  Escaped, every name is a
literal value: the directory compares the exact octets of its UTF-8 form.
"""

from __future__ import annotations

__all__ = ["escape_dn_value", "escape_filter_value"]

#: RFC 4515 section 3: these must be escaped in a filter value; the rest of
#: printable ASCII may stand as itself.
_FILTER_SPECIAL = frozenset(b"*()\\")

#: RFC 4514 section 2.4: escaped with a backslash anywhere in a value
#: (``=`` is optional there; escaped for directories that parse loosely).
_DN_SPECIAL = frozenset('"+,;<>\\=')


def escape_filter_value(value: str | bytes) -> str:
    """``value`` as an RFC 4515 assertion value: ``*``, ``(``, ``)``,
    ``\\``, NUL, every other control character and every non-ASCII octet
    of its UTF-8 form become ``\\XX``.  The result is plain ASCII and
    stands for exactly ``value``'s octets, never for a wildcard."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    out = []
    for octet in data:
        if 0x20 <= octet < 0x7F and octet not in _FILTER_SPECIAL:
            out.append(chr(octet))
        else:
            out.append(f"\\{octet:02x}")
    return "".join(out)


def escape_dn_value(value: str) -> str:
    """``value`` as an RFC 4514 attribute value: the special characters
    backslash-escaped, a leading space or ``#`` and a trailing space
    escaped, control characters as ``\\XX``.  Non-ASCII stays UTF-8, as
    RFC 4514 allows."""
    out = []
    last = len(value) - 1
    for index, char in enumerate(value):
        if char in _DN_SPECIAL or (index == 0 and char in " #") or (index == last and char == " "):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)
