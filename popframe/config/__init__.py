"""Configuration: the error every setting raises, and (in submodules) the
TOML file that mirrors the command line.

- :mod:`popframe.config.keys`: the table of TOML keys, made from the
  ``pop3`` options themselves (a new option is a new key, no code here);
- :mod:`popframe.config.file`: reading a ``--config`` file into the
  arguments it stands for, and plugins' inline settings tables;
- :mod:`popframe.config.check`: ``popframe check-config``, every mistake
  at once.
"""

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
