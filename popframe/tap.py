"""``twistd pop3``: the module ``twisted/plugins/popframe_pop3.py`` names.

twistd reads ``Options`` and ``makeService`` here.  This is the top of the
tree: the command line (:mod:`popframe.options`) becomes the frozen
:class:`~popframe.settings.Settings`, and only those reach the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from popframe.options import Options
from popframe.settings import Settings

if TYPE_CHECKING:
    from twisted.application.service import Service

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> Service:
    # Imported here: ``twistd pop3 --help`` needs the options alone.
    from popframe.service import make_service

    return make_service(Settings.from_options(options))
