"""popframe's credential checkers for ``--auth`` (twisted.cred.strcred)."""

from popframe.auth.passwdfile import PasswdFileCheckerFactory

passwdFile = PasswdFileCheckerFactory()
