"""PLAIN (RFC 4616): ``[authzid] NUL authcid NUL password`` in one message."""

from __future__ import annotations

from popframe.protocol import sasl


@sasl.register
class Plain(sasl.Mechanism):
    name = "PLAIN"
    plaintext = True

    def start(self, initial_response: bytes | None) -> sasl.Step:
        if initial_response is None:
            return sasl.Challenge(b"")
        return self.respond(initial_response)

    def respond(self, response: bytes) -> sasl.Step:
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise sasl.SASLFailed()
        authzid, authcid, password = parts
        return sasl.Outcome(
            sasl.Password(sasl.utf8(authcid), password, sasl.utf8(authzid) or None)
        )
