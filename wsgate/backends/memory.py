"""MemoryBackend: the state of one worker process, in its memory."""

from __future__ import annotations

from typing import Any

from wsgate._window import LocalStorage
from wsgate.backends.base import Backend
from wsgate.registry import MemoryRegistry
from wsgate.revocation import MemoryRevocations

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """The default backend, ``memory://``: limits kept in this process's memory.

    Each worker process has its own, so a user may hold ``max_connections_per_user``
    connections, and send at the ``rate_limit``, in every process; a Redis backend shares
    them. It never fails, and holds no connection.
    """

    kind = "memory"
    shared = False

    def __init__(self) -> None:
        self.registry = MemoryRegistry()
        self.rate_storage = LocalStorage()
        self.revocations = MemoryRevocations()

    async def health(self) -> dict[str, Any]:
        """Always ``{"kind": "memory", "status": "ok", "latency_ms": 0.0}``."""
        return {"kind": "memory", "status": "ok", "latency_ms": 0.0}

    def __repr__(self) -> str:
        return f"<MemoryBackend {self.registry!r}>"
