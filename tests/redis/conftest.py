from __future__ import annotations

import pytest

from tests.redis.cluster import cluster, sentinel, shared_sentinel
from tests.redis.server import own_redis, redis_server

__all__ = ["cluster", "own_redis", "redis_server", "sentinel", "shared_sentinel"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts several server processes; part of the default run"
    )
