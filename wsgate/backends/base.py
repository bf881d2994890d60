"""The contract of a backend: where a gate keeps the state its connections share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from wsgate._choices import BACKEND_POLICIES, BackendPolicy

if TYPE_CHECKING:
    from limits.aio.storage import Storage

    from wsgate._window import LocalStorage
    from wsgate.registry import Registry
    from wsgate.revocation import Revocations

__all__ = ["BACKEND_POLICIES", "Backend", "BackendPolicy"]


"""What a gate does while its shared backend cannot be reached."""


class Backend(ABC):
    """The state a gate's connections share: a connection registry and a rate-limit storage,
    kept together so that one URI chooses both, and one call reports on them or closes them.

    :func:`~wsgate.backends.backend_from_uri` builds one: a
    :class:`~wsgate.backends.MemoryBackend` for ``memory://``, or a
    :class:`~wsgate.backends.redis.RedisBackend` for a Redis URL.

    Attributes:
        kind: What the backend is, as the health check and ``/ws/config`` name it:
            ``"memory"`` or ``"redis"``.
        shared: True when several worker processes (and hosts) share the state, so that a
            gate needs a fallback in its own memory while the backend cannot be reached.
        registry: The connection registry, for
            :class:`~wsgate.middleware.connections.ConnectionLimitMiddleware`.
        rate_storage: The storage for
            :class:`~wsgate.middleware.ratelimit.RateLimitMiddleware`'s ``storage``: the
            in-process windows for memory, a ``limits`` async storage for Redis.
        revocations: The revoked users and tokens, and how this process hears of new ones
            (:mod:`wsgate.revocation`).
    """

    kind: ClassVar[str]
    shared: ClassVar[bool]
    registry: Registry
    rate_storage: Storage | LocalStorage
    revocations: Revocations

    def on_eviction(self, handler: Callable[[str], bool]) -> None:
        """Have ``handler(connection_id)`` close this process's connections that another
        process evicted; it returns True when it closed one. Nothing ever calls it on a
        backend that is not shared."""
        self.registry.on_eviction(handler)

    @abstractmethod
    async def health(self) -> dict[str, Any]:
        """``{"kind": ..., "status": "ok" | "down", "latency_ms": ...}``: whether the backend
        answers, and how long it took in milliseconds (None when it did not answer)."""

    async def aclose(self) -> None:
        """Release what the backend holds (connections, background tasks). Call it once, at
        shutdown."""
        await self.revocations.aclose()
        await self.registry.aclose()
