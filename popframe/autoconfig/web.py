"""The ``--autoconfig`` HTTP service: one twisted.web resource that
answers the paths clients ask (docs/clients.md lists them), and the
endpoint service that serves it.

The documents are made at each request from :class:`Documents`: the
``--autoconfig-*`` settings, the mechanisms the checkers serve and the
ports the ``--listen`` endpoints are bound to (in this process, or the
``--workers`` parent's shared sockets).  A bad request is a 400 with a
short text, never a traceback; requests are not logged (their query
holds addresses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from popframe.autoconfig import autodiscover, mobileconfig, thunderbird
from popframe.autoconfig.address import Account, BadRequest, NotServed, account_for
from popframe.autoconfig.endpoints import (
    Auth,
    ClientEndpoint,
    client_endpoints,
    offered_auth,
    smtp_endpoint,
)
from popframe.autoconfig.settings import AutoconfigSettings
from popframe.ops.exposition import QuietSite

if TYPE_CHECKING:
    from popframe.settings import Settings

__all__ = ["PATHS", "AutoconfigResource", "Documents", "autoconfig_service", "documents_for"]

log = Logger(namespace="popframe.autoconfig")

#: Seconds an HTTP connection may stay silent (clients ask one question).
IDLE_TIMEOUT = 30

#: Where each document is served, by method; Autodiscover's path is
#: matched without regard to case (Outlook asks both spellings).
PATHS = {
    "thunderbird": ("GET", ("/mail/config-v1.1.xml",
                            "/.well-known/autoconfig/mail/config-v1.1.xml")),
    "autodiscover": ("POST", ("/autodiscover/autodiscover.xml",)),
    "mobileconfig": ("GET", ("/apple/popframe.mobileconfig",)),
}


class Documents:
    """Makes each document from the running configuration."""

    def __init__(self, config: AutoconfigSettings,
                 listeners: Callable[[], Mapping[str, int | None]], stls: bool,
                 offered: frozenset[Auth], plaintext_anywhere: bool) -> None:
        self.config = config
        self.listeners = listeners
        self.stls = stls
        self.offered = offered
        self.plaintext_anywhere = plaintext_anywhere

    def endpoints(self) -> list[ClientEndpoint]:
        return client_endpoints(self.config, self.listeners(), self.stls, self.offered,
                                self.plaintext_anywhere)

    def account(self, address: str | None) -> Account:
        return account_for(address, self.config.domains, self.config.username)

    def thunderbird(self, address: str | None) -> bytes:
        return thunderbird.config_v11(self.account(address), self.config, self.endpoints(),
                                      smtp_endpoint(self.config))

    def autodiscover(self, body: bytes) -> bytes:
        address, schema = autodiscover.parse_request(body)
        if schema != autodiscover.RESPONSE_SCHEMA:
            return autodiscover.error_response(601, "Requested schema version not supported")
        return autodiscover.response(self.account(address), self.endpoints(),
                                     smtp_endpoint(self.config))

    def mobileconfig(self, address: str | None) -> bytes:
        return mobileconfig.profile(self.account(address), self.config, self.endpoints(),
                                    smtp_endpoint(self.config))


def documents_for(settings: Settings, listeners: Callable[[], Mapping[str, int | None]]
                  ) -> Documents:
    """The documents ``settings`` describe (``settings.autoconfig`` set)."""
    from twisted.cred.portal import Portal

    from popframe.auth.credentials import serviceable
    from popframe.realm import MaildropRealm

    assert settings.autoconfig is not None
    portal = Portal(MaildropRealm(settings.store), settings.checkers)
    mechanisms = serviceable(portal, ("USER", *settings.mechanisms))
    return Documents(settings.autoconfig, listeners, settings.tls is not None,
                     offered_auth(mechanisms), settings.allow_plaintext_auth)


class AutoconfigResource(Resource):
    """Every path of the service, dispatched on ``request.path``."""

    isLeaf = True

    def __init__(self, documents: Documents) -> None:
        super().__init__()
        self.documents = documents
        self.routes = {path.lower() if name == "autodiscover" else path: (method, name)
                       for name, (method, paths) in PATHS.items() for path in paths}

    def render(self, request: Request) -> bytes:
        path = (request.path or b"/").decode("latin-1")
        route = self.routes.get(path) or self.routes.get(path.lower())
        if route is None or (route[1] != "autodiscover" and path not in self.routes):
            return _text(request, 404, "not found")
        method, name = route
        if request.method != method.encode("ascii"):
            request.setHeader(b"Allow", method.encode("ascii"))
            return _text(request, 405, f"use {method}")
        try:
            return self._document(request, name)
        except BadRequest as error:
            return _text(request, 400, str(error))
        except NotServed as error:
            return _text(request, 404, str(error))
        except Exception:
            log.failure("making the {name} document failed", name=name)
            return _text(request, 500, "the document could not be made")

    def _document(self, request: Request, name: str) -> bytes:
        if name == "autodiscover":
            body = request.content.read(autodiscover.MAX_REQUEST + 1) if request.content else b""
            request.setHeader(b"Content-Type", autodiscover.CONTENT_TYPE.encode("ascii"))
            return self.documents.autodiscover(body)
        address = _argument(request, b"emailaddress")
        if name == "thunderbird":
            document = self.documents.thunderbird(address)
            request.setHeader(b"Content-Type", thunderbird.CONTENT_TYPE.encode("ascii"))
            return document
        document = self.documents.mobileconfig(address)
        account = self.documents.account(address)
        request.setHeader(b"Content-Type", mobileconfig.CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"Content-Disposition",
                          f'attachment; filename="{account.domain}.mobileconfig"'.encode("ascii"))
        return document


def _argument(request: Request, name: bytes) -> str | None:
    values = (request.args or {}).get(name)
    if not values:
        return None
    try:
        return bytes(values[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("not an email address") from None


def _text(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return f"{text}\n".encode()


class _BoundedRequest(Request):
    """Keeps at most ``MAX_REQUEST + 1`` octets of a request body (a
    longer one is a 400, and a huge one fills neither memory nor disk)."""

    _kept = 0

    def handleContentChunk(self, data: bytes) -> None:
        room = autodiscover.MAX_REQUEST + 1 - self._kept
        if room > 0:
            super().handleContentChunk(data[:room])
            self._kept += min(len(data), room)


def autoconfig_service(documents: Documents, endpoint: Any,
                       raise_errors: Callable[[Any], None] | None = None
                       ) -> StreamServerEndpointService:
    """The service serving ``documents`` on ``endpoint`` (``--autoconfig``,
    parsed); its log line is ``popframe autoconfig starting on PORT``."""
    site = QuietSite(AutoconfigResource(documents), "popframe autoconfig")
    site.requestFactory = _BoundedRequest
    site.noisy = False
    site.timeOut = IDLE_TIMEOUT
    service = StreamServerEndpointService(endpoint, site)
    if raise_errors is not None:
        raise_errors(service)
    return service
