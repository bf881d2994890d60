from __future__ import annotations

from tests.redis.cluster import cluster, sentinel, shared_sentinel
from tests.redis.server import own_redis, redis_server

__all__ = ["cluster", "own_redis", "redis_server", "sentinel", "shared_sentinel"]
