"""Outlook's Autodiscover, the POX flavour: the request
(``EMailAddress``, ``AcceptableResponseSchema``) parsed with defusedxml
(no DTD, so no entity expansion and no external entities; a malformed
body is :class:`BadRequest`), and the response in the outlook 2006a
schema: an email Account with one ``Protocol`` block of Type POP3 per
endpoint, most secure first (and SMTP when ``--autoconfig-smtp`` names
one).
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree.ElementTree import Element, SubElement, tostring

from popframe.autoconfig.address import Account, BadRequest
from popframe.autoconfig.endpoints import ClientEndpoint, Security

__all__ = ["CONTENT_TYPE", "MAX_REQUEST", "REQUEST_SCHEMA", "RESPONSE_SCHEMA", "error_response",
           "parse_request", "response"]

CONTENT_TYPE = "text/xml; charset=utf-8"
#: Octets of a request body read at most (Outlook's are a few hundred).
MAX_REQUEST = 16384
REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_ENVELOPE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
_ENCRYPTION = {Security.SSL: "SSL", Security.STARTTLS: "TLS"}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_request(body: bytes) -> tuple[str, str]:
    """The EMailAddress and AcceptableResponseSchema of a POX request."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    if len(body) > MAX_REQUEST:
        raise BadRequest("the request is too long")
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError):
        raise BadRequest("the request is not well-formed XML (or has a DTD)") from None
    if _local(root.tag) != "Autodiscover":
        raise BadRequest("expected an Autodiscover request")
    found: dict[str, str] = {}
    for request in (child for child in root if _local(child.tag) == "Request"):
        for field in request:
            found.setdefault(_local(field.tag), (field.text or "").strip())
    return found.get("EMailAddress", ""), found.get("AcceptableResponseSchema", "")


def _text(parent: Element, tag: str, text: str) -> None:
    SubElement(parent, tag).text = text


def _protocol(account: Element, kind: str, endpoint: ClientEndpoint, login_name: str) -> None:
    protocol = SubElement(account, "Protocol")
    _text(protocol, "Type", kind)
    _text(protocol, "Server", endpoint.host)
    _text(protocol, "Port", str(endpoint.port))
    _text(protocol, "DomainRequired", "off")
    _text(protocol, "LoginName", login_name)
    _text(protocol, "SPA", "off")
    _text(protocol, "SSL", "off" if endpoint.security is Security.PLAIN else "on")
    if endpoint.security in _ENCRYPTION:
        _text(protocol, "Encryption", _ENCRYPTION[endpoint.security])
    _text(protocol, "AuthRequired", "on")


def _document(response: Element) -> bytes:
    # Default namespaces written as attributes, as Exchange writes them
    # (ElementTree would invent prefixes for qualified names).
    root = Element("Autodiscover", xmlns=_ENVELOPE)
    root.append(response)
    return tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def response(account: Account, endpoints: Sequence[ClientEndpoint],
             smtp: ClientEndpoint | None) -> bytes:
    """The settings for ``account``."""
    answer = Element("Response", xmlns=RESPONSE_SCHEMA)
    user = SubElement(answer, "User")
    _text(user, "EMailAddress", account.address)
    settings = SubElement(answer, "Account")
    _text(settings, "AccountType", "email")
    _text(settings, "Action", "settings")
    for endpoint in endpoints:
        _protocol(settings, "POP3", endpoint, account.login_name)
    if smtp is not None:
        _protocol(settings, "SMTP", smtp, account.login_name)
    return _document(answer)


def error_response(code: int, message: str) -> bytes:
    """An Autodiscover error (600: invalid request; 601: the requested
    schema is not provided)."""
    answer = Element("Response")
    error = SubElement(answer, "Error", Id="0", Time="00:00:00")
    _text(error, "ErrorCode", str(code))
    _text(error, "Message", message)
    _text(error, "DebugData", "")
    return _document(answer)
