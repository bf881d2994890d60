"""RedisBackend: the connection registry and the rate limits in Redis, on one pool."""

from __future__ import annotations

import contextlib
from typing import Any

from wsgate.backends._factory import split_scheme
from wsgate.backends._rates import rate_storage
from wsgate.backends.base import Backend, BackendPolicy
from wsgate.backends.redis._pool import topology
from wsgate.backends.redis._revocations import RedisRevocations
from wsgate.backends.redis.registry import RedisRegistry

__all__ = ["RedisBackend"]


class RedisBackend(Backend):
    """State shared by every worker process and host that uses the same Redis.

    On one Redis, the registry and the rate-limit storage share one connection pool, so that
    a gate holds one set of connections to Redis; on a Cluster or through Sentinel, each has
    redis-py's client of its own. What happens while Redis cannot be reached is the
    registry's ``policy`` (see :class:`~wsgate.backends.redis.RedisRegistry`).

    Args:
        url: ``redis://host:6379/0``, ``rediss://...`` (TLS), ``unix:///path/redis.sock``,
            ``redis+cluster://host:port[,host:port...]`` or
            ``redis+sentinel://host:port[,host:port...]/service`` (``rediss+...`` for TLS).
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
        # On the registry's client: one set of connections to Redis.
        scheme, rest = split_scheme(url)
        self.revocations = RedisRevocations(
            self.registry._client,
            topology=topology(scheme, scheme + rest),  # the registry has read it already
            shown_url=self.registry.shown_url,
            policy=backend_policy,
            errors=self.registry._errors,
        )

    async def health(self) -> dict[str, Any]:
        """``{"kind": "redis", "status": "ok" | "down", "latency_ms": ...}`` from one PING;
        ``latency_ms`` is None when Redis did not answer."""
        return await self.registry.health()

    async def aclose(self) -> None:
        """Release the registry, and the clients of a Cluster or Sentinel rate-limit storage
        (on one Redis, the registry's pool is the storage's, and closing it is enough)."""
        await super().aclose()
        if self.registry.pool is not None:
            return
        # limits' storages have no close of their own: their redis-py clients, as its
        # redis-py bridge keeps them.
        bridge = getattr(self.rate_storage, "bridge", None)
        sentinel = getattr(bridge, "sentinel", None)
        clients = [getattr(bridge, "storage", None), getattr(bridge, "storage_replica", None)]
        clients += getattr(sentinel, "sentinels", [])
        for client in clients:
            if client is not None:
                with contextlib.suppress(*self.registry._errors):
                    await client.aclose()

    def __repr__(self) -> str:
        return f"<RedisBackend {self.registry!r}>"
