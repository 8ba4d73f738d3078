"""Real POP3 clients (``poplib``) for tests against a server on loopback."""

from __future__ import annotations

import poplib

__all__ = ["pop3_login"]


def pop3_login(port: int, user: str = "alice", password: str | None = None,
               timeout: float = 10) -> poplib.POP3:
    """A ``poplib`` client on 127.0.0.1:``port``, logged in with USER and
    PASS; ``password`` defaults to the suite's convention, ``"<user>
    password"`` (``conftest.MailHome``'s alice, the workers' users)."""
    client = poplib.POP3("127.0.0.1", port, timeout=timeout)
    try:
        client.user(user)
        client.pass_(f"{user} password" if password is None else password)
    except BaseException:
        client.close()
        raise
    return client
