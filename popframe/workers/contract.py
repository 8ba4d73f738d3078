"""What the parent and a worker process agree on: the command that
starts a worker, the file descriptors it inherits, and the environment
variable that carries the shared secret."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# File descriptors in a worker.
LIFELINE_FD = 0  # stdin: a pipe from the parent; end of file = the parent is gone
LOG_FD = 3  # log events to the parent (popframe.workers.logs)
FIRST_LISTENER_FD = 4  # the shared sockets, in --listen order

#: One SCRAM fake-record key for every worker (see popframe.workers.child);
#: in the environment, not argv, which other local users can read.
FAKE_KEY_VARIABLE = "POPFRAME_FAKE_RECORD_KEY"

#: ``python -c BOOTSTRAP ROOT SPEC``: the worker process.
BOOTSTRAP = (
    "import sys; root = sys.argv[1]; root in sys.path or sys.path.insert(0, root); "
    "from popframe.workers import main; main(sys.argv[2:])"
)
#: The directory holding the ``popframe`` package the parent runs, so the
#: worker imports the very same one.
IMPORT_ROOT = Path(__file__).resolve().parents[2]


def worker_command(spec: dict[str, Any]) -> list[str]:
    """The argv that starts one worker described by ``spec`` (its id, the
    parent's pid, the ``pop3`` arguments, the listeners and their fds, the
    parent's systemd descriptors), the JSON ``child.run_worker`` reads."""
    return [sys.executable, "-c", BOOTSTRAP, str(IMPORT_ROOT), json.dumps(spec)]
