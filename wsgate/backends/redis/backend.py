"""RedisBackend: the connection registry and the rate limits in Redis, on one pool."""

from __future__ import annotations

from typing import Any

from wsgate.backends._rates import rate_storage
from wsgate.backends.base import Backend, BackendPolicy
from wsgate.backends.redis.registry import RedisRegistry

__all__ = ["RedisBackend"]


class RedisBackend(Backend):
    """State shared by every worker process and host that uses the same Redis.

    The registry and the rate-limit storage share one connection pool, so that a gate holds
    one set of connections to Redis. What happens while Redis cannot be reached is the
    registry's ``policy`` (see :class:`~wsgate.backends.redis.RedisRegistry`).

    Args:
        url: ``redis://host:6379/0``, ``rediss://...`` (TLS) or ``unix:///path/redis.sock``.
        registry_ttl: How long a dead worker's registry entries keep counting, at most, in
            seconds.
        backend_policy: ``"fail_open"`` (the default) or ``"fail_closed"``.
        owner: The id to record registry entries under; by default, new for each process.
    """

    kind = "redis"
    shared = True
    registry: RedisRegistry

    def __init__(
        self,
        url: str,
        *,
        registry_ttl: float = 30.0,
        backend_policy: BackendPolicy = "fail_open",
        owner: str | None = None,
    ) -> None:
        self.registry = RedisRegistry(url, ttl=registry_ttl, policy=backend_policy, owner=owner)
        self.rate_storage = rate_storage(url, connection_pool=self.registry.pool)

    async def health(self) -> dict[str, Any]:
        """``{"kind": "redis", "status": "ok" | "down", "latency_ms": ...}`` from one PING;
        ``latency_ms`` is None when Redis did not answer."""
        return await self.registry.health()

    def __repr__(self) -> str:
        return f"<RedisBackend {self.registry!r}>"
