"""Only the optional C part; everything else is in setup.cfg.

``popframe.auth._shacrypt`` (SHA512-CRYPT on OpenSSL's SHA-512) needs a C
compiler and OpenSSL's headers (Debian: libssl-dev).  Without them the
build skips it and popframe hashes with libxcrypt, as before.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("popframe.auth._shacrypt", ["popframe/auth/_shacrypt.c"],
              libraries=["crypto"], optional=True),
])
