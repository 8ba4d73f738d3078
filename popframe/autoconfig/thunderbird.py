"""Thunderbird's autoconfig document, ``config-v1.1.xml`` (clientConfig
version 1.1): one ``incomingServer type="pop3"`` per endpoint, most
secure first, and the ``--autoconfig-smtp`` server if one is named.

The user name is Thunderbird's placeholder (``%EMAILADDRESS%`` or
``%EMAILLOCALPART%``), which it fills in from what the user typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree.ElementTree import Element, SubElement, tostring

from popframe.autoconfig.address import Account
from popframe.autoconfig.endpoints import Auth, ClientEndpoint
from popframe.autoconfig.settings import AutoconfigSettings

__all__ = ["CONTENT_TYPE", "config_v11"]

CONTENT_TYPE = "text/xml; charset=utf-8"
_AUTHENTICATION = {Auth.CLEARTEXT: "password-cleartext", Auth.CHALLENGE: "password-encrypted"}
_USERNAME = {"address": "%EMAILADDRESS%", "local-part": "%EMAILLOCALPART%"}


def _text(parent: Element, tag: str, text: str) -> None:
    SubElement(parent, tag).text = text


def _server(parent: Element, tag: str, kind: str, endpoint: ClientEndpoint, username: str
            ) -> Element:
    server = SubElement(parent, tag, type=kind)
    _text(server, "hostname", endpoint.host)
    _text(server, "port", str(endpoint.port))
    _text(server, "socketType", endpoint.security.value)
    _text(server, "username", username)
    for auth in endpoint.auth:
        _text(server, "authentication", _AUTHENTICATION[auth])
    return server


def config_v11(account: Account, config: AutoconfigSettings,
               endpoints: Sequence[ClientEndpoint], smtp: ClientEndpoint | None) -> bytes:
    """The document for ``account``."""
    root = Element("clientConfig", version="1.1")
    provider = SubElement(root, "emailProvider", id=account.domain)
    _text(provider, "domain", account.domain)
    _text(provider, "displayName", f"{account.domain} mail ({config.host})")
    _text(provider, "displayShortName", account.domain)
    username = _USERNAME[config.username]
    for endpoint in endpoints:
        server = _server(provider, "incomingServer", "pop3", endpoint, username)
        pop3 = SubElement(server, "pop3")
        _text(pop3, "leaveMessagesOnServer", "true" if config.leave_on_server else "false")
        _text(pop3, "downloadOnBiff", "true")
    if smtp is not None:
        _server(provider, "outgoingServer", "smtp", smtp, username)
    return tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
