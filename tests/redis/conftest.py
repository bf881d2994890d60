from __future__ import annotations

import pytest

from tests.redis.server import own_redis, redis_server

__all__ = ["own_redis", "redis_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts several server processes; part of the default run"
    )
