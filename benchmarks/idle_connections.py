"""Memory per idle connection (issue 4's target: 10,000 idle connections in
less than 300 MB RSS), on a real ``twistd pop3 --workers 1``.

    python benchmarks/idle_connections.py [COUNT]     # default 10000

Opens COUNT connections from this process (non-blocking sockets; raises
RLIMIT_NOFILE, which the server inherits), waits until each has its
greeting, and prints the server's RSS before and after.  The test suite
runs the same measurement with 2,000 (tests/test_abuse.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import MailHome  # noqa: E402
from test_abuse import measure_idle_connections  # noqa: E402

from popframe.tls import make_self_signed  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        home = MailHome(Path(tmp))
        home.passwd_file.touch()
        make_self_signed(home.cert, home.key)
        home.add_user("alice", "alice password")
        result = measure_idle_connections(home, count)
    result["rss_target_met"] = result["rss_after_mib"] < 300
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
