from __future__ import annotations

import pytest

from tests.redis.cluster import cluster, sentinel, shared_sentinel
from tests.redis.server import own_redis, redis_server
from tests.redis.tls import tls_cluster, tls_files, tls_redis, tls_sentinel

__all__ = [
    "cluster",
    "own_redis",
    "redis_server",
    "sentinel",
    "shared_sentinel",
    "tls_cluster",
    "tls_files",
    "tls_redis",
    "tls_sentinel",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts several server processes; part of the default run"
    )
