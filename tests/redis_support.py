"""The real Redis the throttle tests use (127.0.0.1:6379, database 15).

Locally the Redis tests skip when no Redis answers; in CI (``CI=true``)
they fail instead, so a missing Redis never passes as a green run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

REDIS_URL = os.environ.get("POPFRAME_TEST_REDIS", "redis://127.0.0.1:6379/15")


@dataclass
class RedisServer:
    url: str
    prefix: str  # unique to one test; its keys are deleted afterwards
    client: object


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    try:
        import redis
    except ImportError:
        _unavailable("the redis package is not installed (pip install -e '.[test]')")
        raise
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        client.close()
        _unavailable(f"no Redis at {REDIS_URL}: {error}")
    prefix = f"popframe-test:{uuid.uuid4().hex}:"
    try:
        yield RedisServer(REDIS_URL, prefix, client)
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
