"""popframe: a POP3 server framework on Twisted."""

__version__ = "0.1.0"
