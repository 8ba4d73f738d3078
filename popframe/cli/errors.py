"""The one error a subcommand raises for a problem the user can fix."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A problem with what the user asked for: printed as
    ``popframe COMMAND: message``, exit ``status`` (1 unless a command's
    contract says otherwise, e.g. ``deliver``'s sysexits codes)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
