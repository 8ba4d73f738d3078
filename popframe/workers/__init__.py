"""``--workers N``: N processes serving the same listening sockets.

The parent (``twistd pop3``) opens every ``--listen`` socket itself and
never accepts on it; its :class:`WorkerPool` spawns N workers with
``reactor.spawnProcess``.  Each worker (:func:`main`, started as
``python -c "from popframe.workers import main; ..."``) inherits the
sockets as file descriptors, parses the same ``pop3`` arguments, builds
its own factory, portal, checkers and store, and adopts the sockets.  The
kernel hands each new connection to one of the workers.

``tcp:``, ``tcp6:``, ``ssl:``, ``tls:``, ``unix:`` and ``systemd:`` (alone or
behind ``haproxy:``) are shared; any other endpoint type is refused at
start-up with a message suggesting ``--workers 1``.

One job per module:

- :mod:`~popframe.workers.pool`: the parent's ``WorkerPool`` (spawn,
  restart back-off, stop, signal forwarding);
- :mod:`~popframe.workers.sockets`: which endpoints can be shared, binding
  them in the parent, adopting them in a worker, systemd's descriptors;
- :mod:`~popframe.workers.child`: the worker process;
- :mod:`~popframe.workers.logs`: the log relay from worker to parent;
- :mod:`~popframe.workers.contract`: the command line, descriptors and
  environment the two sides agree on.
"""

from popframe.workers.child import main, run_worker
from popframe.workers.contract import (
    BOOTSTRAP,
    FAKE_KEY_VARIABLE,
    FIRST_LISTENER_FD,
    IMPORT_ROOT,
    LIFELINE_FD,
    LOG_FD,
)
from popframe.workers.pool import (
    HEALTHY_UPTIME,
    KILL_TIMEOUT,
    MAX_RESTART_DELAY,
    RESTART_DELAY,
    STOP_TIMEOUT,
    WorkerPool,
)
from popframe.workers.sockets import SHARED_TYPES, WRAPPER_TYPES, check_shareable

__all__ = [
    "BOOTSTRAP",
    "FAKE_KEY_VARIABLE",
    "FIRST_LISTENER_FD",
    "HEALTHY_UPTIME",
    "IMPORT_ROOT",
    "KILL_TIMEOUT",
    "LIFELINE_FD",
    "LOG_FD",
    "MAX_RESTART_DELAY",
    "RESTART_DELAY",
    "SHARED_TYPES",
    "STOP_TIMEOUT",
    "WRAPPER_TYPES",
    "WorkerPool",
    "check_shareable",
    "main",
    "run_worker",
]
