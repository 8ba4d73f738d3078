"""Credential checkers (``twisted.cred``) and the password hash schemes they
share, named as Dovecot names them so user databases move over unchanged."""
