"""LDAP search filters: RFC 4515 text to the protocol's filter objects,
and the ``filter`` / ``dn_template`` settings with ``%u``, ``%n``, ``%d``.

The parser is ours (about a hundred lines, no pyparsing): it checks a
configured filter at start-up with a message that says where it is wrong,
and parses a user's filter in microseconds at login.  A template's
variables are expanded exactly as store path templates expand them
(:mod:`popframe.stores.template`), each value escaped first
(:mod:`popframe.auth.ldap.escaping`), so a user name can never add
filter syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ldaptor.protocols import pureldap

from popframe.auth.ldap.escaping import escape_dn_value, escape_filter_value
from popframe.stores.template import _Literal, _Variable, split_user
from popframe.stores.template import _parse as parse_template

__all__ = ["DNTemplate", "FilterSyntaxError", "FilterTemplate", "parse_filter"]

#: An attribute description (RFC 4512): a name or a numeric OID, then options.
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*")
_OID = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*")
_HEX = frozenset("0123456789abcdefABCDEF")


class FilterSyntaxError(ValueError):
    """A filter is not RFC 4515 text; ``str()`` says where."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> FilterSyntaxError:
        return FilterSyntaxError(f"{what} at offset {self.pos} of {self.text!r}")

    def expect(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise self.fail(f"expected {char!r}")
        self.pos += len(char)

    def filter(self) -> pureldap.LDAPFilter:
        self.expect("(")
        char = self.text[self.pos : self.pos + 1]
        if char in ("&", "|"):
            self.pos += 1
            items = []
            while self.text.startswith("(", self.pos):
                items.append(self.filter())
            if not items:
                raise self.fail(f"{char!r} needs at least one filter")
            result: pureldap.LDAPFilter = (
                pureldap.LDAPFilter_and(items) if char == "&" else pureldap.LDAPFilter_or(items))
        elif char == "!":
            self.pos += 1
            result = pureldap.LDAPFilter_not(self.filter())
        else:
            result = self.item()
        self.expect(")")
        return result

    def name(self, pattern: re.Pattern[str], what: str) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            raise self.fail(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def item(self) -> pureldap.LDAPFilter:
        if self.text.startswith(":", self.pos):
            return self.extensible(None)
        attribute = self.name(_ATTRIBUTE, "an attribute name")
        rest = self.text[self.pos : self.pos + 2]
        if rest.startswith(":"):
            return self.extensible(attribute)
        for operator, kind in (("~=", pureldap.LDAPFilter_approxMatch),
                               (">=", pureldap.LDAPFilter_greaterOrEqual),
                               ("<=", pureldap.LDAPFilter_lessOrEqual)):
            if rest == operator:
                self.pos += 2
                return kind(attributeDesc=pureldap.LDAPAttributeDescription(attribute),
                            assertionValue=pureldap.LDAPAssertionValue(self.value()))
        self.expect("=")
        pieces = [self.value()]
        while self.text.startswith("*", self.pos):
            self.pos += 1
            pieces.append(self.value())
        if len(pieces) == 1:
            return pureldap.LDAPFilter_equalityMatch(
                attributeDesc=pureldap.LDAPAttributeDescription(attribute),
                assertionValue=pureldap.LDAPAssertionValue(pieces[0]))
        if pieces == [b"", b""]:
            return pureldap.LDAPFilter_present(attribute)
        return _substrings(attribute, pieces)

    def extensible(self, attribute: str | None) -> pureldap.LDAPFilter:
        dn_attributes = False
        if self.text.startswith(":dn", self.pos) and not self.text.startswith(":dn=", self.pos):
            self.pos += 3
            dn_attributes = True
        rule = None
        if self.text.startswith(":", self.pos) and not self.text.startswith(":=", self.pos):
            self.pos += 1
            rule = self.name(_OID, "a matching rule")
        if attribute is None and rule is None:
            raise self.fail("an extensible match needs an attribute or a matching rule")
        self.expect(":=")
        return pureldap.LDAPFilter_extensibleMatch(
            matchingRule=rule, type=attribute, matchValue=self.value(),
            dnAttributes=True if dn_attributes else None)

    def value(self) -> bytes:
        """An assertion value up to ``)`` or ``*``: ``\\XX`` escapes
        decoded, everything else taken as UTF-8."""
        out = bytearray()
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in ")*":
                break
            if char == "(" or char == "\0":
                raise self.fail(f"{char!r} must be escaped in a value")
            if char == "\\":
                pair = text[self.pos + 1 : self.pos + 3]
                if len(pair) != 2 or not set(pair) <= _HEX:
                    raise self.fail("'\\' must start a two-digit hex escape")
                out.append(int(pair, 16))
                self.pos += 3
                continue
            out += char.encode("utf-8")
            self.pos += 1
        return bytes(out)


def _substrings(attribute: str, pieces: list[bytes]) -> pureldap.LDAPFilter:
    initial, *middle, final = pieces
    substrings: list[pureldap.LDAPString] = []
    if initial:
        substrings.append(pureldap.LDAPFilter_substrings_initial(initial))
    for piece in middle:
        if not piece:
            raise FilterSyntaxError("'**' in a substring filter")
        substrings.append(pureldap.LDAPFilter_substrings_any(piece))
    if final:
        substrings.append(pureldap.LDAPFilter_substrings_final(final))
    return pureldap.LDAPFilter_substrings(type=attribute, substrings=substrings)


def parse_filter(text: str) -> pureldap.LDAPFilter:
    """RFC 4515 filter text (with its parentheses) to a filter object;
    raises :class:`FilterSyntaxError`."""
    parser = _Parser(text.strip())
    result = parser.filter()
    if parser.pos != len(parser.text):
        raise parser.fail("text after the filter")
    return result


def _expand(parts: list[_Literal | _Variable], user: str, escape: Callable[[str], str]) -> str:
    local, domain = split_user(user)
    values = {"u": user, "n": local, "d": domain}
    out = []
    for part in parts:
        if isinstance(part, _Literal):
            out.append(part.text)
        else:
            value = values[part.name]
            out.append(escape(value.lower() if part.lower else value))
    return "".join(out)


#: Expanded into templates at start-up to check them.
_SAMPLE_USER = "user@example.org"


class _Template:
    """A setting with ``%`` variables, parsed once."""

    key = ""

    def __init__(self, template: str) -> None:
        self.template = template
        self._parts = parse_template(template, self.key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.template!r})"

    @property
    def uses_user(self) -> bool:
        """Whether it holds ``%u`` or ``%n`` (else every user gets the same)."""
        return any(not isinstance(part, _Literal) and part.name in "un" for part in self._parts)


class FilterTemplate(_Template):
    """A ``filter`` setting such as ``(&(objectClass=inetOrgPerson)(uid=%u))``,
    checked at start-up; :meth:`expand` makes a user's filter with the
    values RFC 4515-escaped.  Raises ``ConfigurationError`` (a bad
    variable) or :class:`FilterSyntaxError` when made."""

    key = "filter"

    def __init__(self, template: str) -> None:
        super().__init__(template)
        parse_filter(self.text(_SAMPLE_USER))

    def text(self, user: str) -> str:
        """The filter text for ``user`` (for logs and ldapsearch)."""
        return _expand(self._parts, user, escape_filter_value)

    def expand(self, user: str) -> pureldap.LDAPFilter:
        return parse_filter(self.text(user))


class DNTemplate(_Template):
    """A ``dn_template`` setting such as ``uid=%u,ou=people,dc=example,dc=org``;
    :meth:`expand` gives a user's DN with the values RFC 4514-escaped."""

    key = "dn_template"

    def expand(self, user: str) -> str:
        return _expand(self._parts, user, escape_dn_value)
