"""``--autoconfig ENDPOINT``: the documents mail clients set themselves
up from, made from the running configuration and served over HTTP.

One module per job (docs/architecture.md has the table):
:mod:`.settings` (the ``--autoconfig-*`` options, checked),
:mod:`.address` (the ``emailaddress`` a client sends),
:mod:`.endpoints` (what clients connect to: host, port, TLS mode,
authentication), one module per document (:mod:`.thunderbird`,
:mod:`.autodiscover`, :mod:`.mobileconfig`) and :mod:`.web` (the
twisted.web resource and service).  Only :mod:`.web` imports twisted.web.
"""

from popframe.autoconfig.address import Account, BadRequest, NotServed
from popframe.autoconfig.endpoints import Auth, ClientEndpoint, Security, client_endpoints
from popframe.autoconfig.settings import AutoconfigSettings, MailServer

__all__ = ["Account", "Auth", "AutoconfigSettings", "BadRequest", "ClientEndpoint", "MailServer",
           "NotServed", "Security", "client_endpoints"]
