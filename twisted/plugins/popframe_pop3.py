"""The ``twistd pop3`` service maker; the code lives in popframe.tap."""

from twisted.application.service import ServiceMaker

popframe = ServiceMaker(
    "popframe POP3 server",
    "popframe.tap",
    "A POP3 server: Maildir and other stores, passwd-file and other checkers, STLS.",
    "pop3",
)
