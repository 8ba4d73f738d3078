"""Helpers for the mbox tests that run in other processes: a delivering
loop and a lock holder.  Standard library only, plus popframe."""

from __future__ import annotations

import fcntl
import io
import os
import sys
import time


def delivering_main(argv: list[str]) -> None:
    """``python -c ... PATH LOG COUNT``: append COUNT messages to the mbox
    at PATH with popframe's own append, logging each subject once it is
    stored."""
    from popframe.stores.mbox import Mbox

    path, log, count = argv[0], argv[1], int(argv[2])
    mbox = Mbox(path)
    with open(log, "a") as out:
        for n in range(count):
            subject = f"concurrent-{n}"
            mbox.append(io.BytesIO(f"Subject: {subject}\n\nFrom the body {n}\n".encode()))
            out.write(subject + "\n")
            out.flush()


def hold_fcntl_main(argv: list[str]) -> None:
    """``python -c ... PATH``: hold a classic fcntl write lock on PATH (as
    Postfix and mutt take it) until stdin closes; say "locked" first."""
    fd = os.open(argv[0], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    sys.stdout.write("locked\n")
    sys.stdout.flush()
    sys.stdin.read()
    time.sleep(0)
