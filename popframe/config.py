"""Configuration errors and checks shared by the command line and
plugins (there is no config file yet)."""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(Exception):
    """A setting is wrong.  The message names the key and the problem, so an
    admin can fix it without reading code: ``--store: no such store 'mdir'``.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
