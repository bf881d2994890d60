from __future__ import annotations

import pytest

from tests.redis.server import redis_server

__all__ = ["redis_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts several server processes; part of the default run"
    )
