"""``python -m popframe.workers SPEC``: a worker process."""

from popframe.workers.child import main

main()
