from __future__ import annotations

from tests.redis.server import own_redis, redis_server

__all__ = ["own_redis", "redis_server"]
