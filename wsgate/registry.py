"""The connection registry: who has which connections open, shared by every endpoint.

:class:`ConnectionLimitMiddleware <wsgate.middleware.connections.ConnectionLimitMiddleware>`
keeps one entry per open connection under a key (a user, or a client address). A
:class:`Registry` is the small contract a backend fulfils; :class:`MemoryRegistry` keeps the
entries in this process. A shared backend (Redis) fulfils the same contract for several worker
processes, each call of :meth:`Registry.add` being one atomic script on the server.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Final

from wsgate._choices import CONNECTION_POLICIES, ConnectionPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from wsgate.connection import Connection

__all__ = ["POLICIES", "Admission", "MemoryRegistry", "Policy", "Registry"]

Policy = ConnectionPolicy
"""What :meth:`Registry.add` does when a key already has ``limit`` entries."""
POLICIES: Final = CONNECTION_POLICIES


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Registry.add` decided.

    Attributes:
        admitted: True when the connection was registered; False when ``reject_new`` refused
            it, and it was not registered.
        close: The ids of the connections that must be closed, oldest first: for
            ``evict_oldest`` the entries pushed out (already removed from the registry), for a
            refused ``reject_new`` the new connection itself. Empty when nothing must close.
    """

    admitted: bool
    close: tuple[str, ...] = ()


class Registry(ABC):
    """The contract of a connection registry backend.

    Entries are connection ids under a key, kept in the order they were added, so the first
    one is the oldest. Every method is a coroutine and each call is atomic: a backend shared
    by several processes does each :meth:`add` in one round trip (one Lua script for Redis),
    so that simultaneous connects of one user never leave more than ``limit`` entries.

    Subclass it to write your own backend; ``wsgate``'s test suite for the contract
    (``tests/test_registry.py``) runs against any backend added to its fixture.

    Attributes:
        owner: The id entries are recorded under: this worker process. A shared backend uses
            it to hand an eviction to the process that holds the connection.
    """

    owner: str

    @cached_property
    def local_connections(self) -> dict[str, Connection]:
        """The open connections this process holds, by id.

        Filled and emptied by the middleware, and read to close an evicted connection; a
        backend does not touch it. Every endpoint that shares the registry shares it, so an
        eviction finds a connection whichever endpoint it was opened on.
        """
        return {}

    @abstractmethod
    async def add(self, key: str, connection_id: str, *, limit: int, policy: Policy) -> Admission:
        """Register ``connection_id`` under ``key``, keeping at most ``limit`` entries there.

        With ``evict_oldest`` the new entry is always added, and the oldest entries beyond
        ``limit`` are removed and returned in ``Admission.close``, oldest first. With
        ``reject_new`` a key that already has ``limit`` entries is left unchanged and the
        new id comes back refused. Adding an id that is already registered under ``key``
        changes nothing and admits it.

        Raises:
            ValueError: For a ``limit`` below 1 or an unknown ``policy``.
        """

    @abstractmethod
    async def remove(self, key: str, connection_id: str) -> None:
        """Forget ``connection_id`` under ``key``; nothing happens when it is not there."""

    @abstractmethod
    async def count(self, key: str) -> int:
        """How many entries ``key`` has."""

    @abstractmethod
    async def total(self) -> int:
        """How many entries there are under all keys, for health checks and metrics."""

    def on_eviction(self, handler: Callable[[str], bool]) -> None:  # noqa: B027 - optional
        """Have ``handler(connection_id)`` close this process's connections that another
        process evicted; it returns True when it closed one. The connection-limit middleware
        registers its ``evict``. A registry that no other process shares never evicts for
        another, so by default this does nothing."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Release what the backend holds (a client, a connection pool). Call it once, at
        shutdown."""


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class MemoryRegistry(Registry):
    """A registry in this process's memory: the default, for one worker process.

    Every call runs without yielding to the event loop, so each is atomic. Several worker
    processes each have their own registry, so a user may then hold ``limit`` connections
    per process; share the entries with a Redis registry instead.

    Args:
        owner: The id to record entries under; defaults to ``"<hostname>:<pid>"``.
    """

    def __init__(self, *, owner: str | None = None) -> None:
        self.owner = owner if owner is not None else _default_owner()
        # key -> {connection id: owner}; a dict keeps insertion order, oldest first.
        self._entries: dict[str, dict[str, str]] = {}
        # Kept up to date rather than summed, so total() never iterates a dict that the
        # server's thread may be changing.
        self._total = 0

    async def add(self, key: str, connection_id: str, *, limit: int, policy: Policy) -> Admission:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}.")
        if policy not in POLICIES:
            raise ValueError(f"policy must be 'evict_oldest' or 'reject_new', not {policy!r}.")
        entries = self._entries.setdefault(key, {})
        if connection_id in entries:
            return Admission(True)
        if policy == "reject_new" and len(entries) >= limit:
            return Admission(False, (connection_id,))
        entries[connection_id] = self.owner
        self._total += 1
        evicted: list[str] = []
        while len(entries) > limit:
            oldest = next(iter(entries))
            del entries[oldest]
            evicted.append(oldest)
        self._total -= len(evicted)
        return Admission(True, tuple(evicted))

    async def remove(self, key: str, connection_id: str) -> None:
        entries = self._entries.get(key)
        if entries is None or entries.pop(connection_id, None) is None:
            return
        self._total -= 1
        if not entries:
            del self._entries[key]

    async def count(self, key: str) -> int:
        return len(self._entries.get(key, ()))

    async def total(self) -> int:
        return self._total

    async def aclose(self) -> None:
        self._entries.clear()
        self._total = 0

    def __repr__(self) -> str:
        return f"<MemoryRegistry {self._total} connection(s) under {len(self._entries)} key(s)>"
