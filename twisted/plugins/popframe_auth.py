"""popframe's credential checkers for ``--auth`` (twisted.cred.strcred)."""

from popframe.auth.clientcert import ClientCertificateCheckerFactory
from popframe.auth.ldap.factory import LDAPCheckerFactory
from popframe.auth.oauth import JWTCheckerFactory
from popframe.auth.passwdfile import PasswdFileCheckerFactory

passwdFile = PasswdFileCheckerFactory()
jwt = JWTCheckerFactory()
tlsCert = ClientCertificateCheckerFactory()
ldap = LDAPCheckerFactory()
