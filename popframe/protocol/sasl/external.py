"""EXTERNAL (RFC 4422 appendix A): the identity comes from outside SASL,
here the TLS client certificate; the client's one message is the
authorization identity it asks for, empty for "whoever my certificate
says" (``AUTH EXTERNAL =`` in POP3, RFC 5034).

The mechanism only reports what the client asked for
(:class:`~popframe.protocol.sasl.External`); the adapter adds the peer
certificate and a checker for ``IClientCertificate`` maps it to a user.
Offered only over TLS to a client that showed a certificate, and only
when such a checker is configured.
"""

from __future__ import annotations

from popframe.protocol import sasl

__all__ = ["External"]


@sasl.register
class External(sasl.Mechanism):
    name = "EXTERNAL"
    requires_tls = True
    requires_client_certificate = True

    def start(self, initial_response: bytes | None) -> sasl.Step:
        if initial_response is None:
            return sasl.Challenge(b"")
        return self.respond(initial_response)

    def respond(self, response: bytes) -> sasl.Step:
        authzid = sasl.utf8(response)
        if "\0" in authzid:
            raise sasl.SASLFailed()
        return sasl.Outcome(sasl.External(authzid or None))
