"""LOGIN (draft-murchison-sasl-login): what Outlook and many devices send.
The server asks ``Username:`` then ``Password:``."""

from __future__ import annotations

from popframe.protocol import sasl


@sasl.register
class Login(sasl.Mechanism):
    name = "LOGIN"
    plaintext = True

    def __init__(self, context: sasl.SASLContext) -> None:
        super().__init__(context)
        self._user: str | None = None

    def start(self, initial_response: bytes | None) -> sasl.Step:
        if initial_response is None:
            return sasl.Challenge(b"Username:")
        return self.respond(initial_response)

    def respond(self, response: bytes) -> sasl.Step:
        if self._user is None:
            if not response:
                raise sasl.SASLFailed()
            self._user = sasl.utf8(response)
            return sasl.Challenge(b"Password:")
        if not response:
            raise sasl.SASLFailed()
        return sasl.Outcome(sasl.Password(self._user, response))
