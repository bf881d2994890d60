"""RedisRegistry: the connection registry in Redis, shared by every worker process and host.

The layout in Redis and the scripts that change it are in ``_scripts``, the pub/sub side
of evictions in ``_evictions``, and the state of the link to Redis in ``_link``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from wsgate import _options
from wsgate.backends.base import BACKEND_POLICIES, BackendPolicy
from wsgate.backends.redis import _scripts
from wsgate.backends.redis._evictions import EvictionListener
from wsgate.backends.redis._link import Link
from wsgate.backends.redis._pool import connection_pool
from wsgate.backends.redis._scripts import CHANNEL, COUNTS, OWNERS, SEQ
from wsgate.exceptions import BackendUnavailable, ConfigurationError
from wsgate.registry import POLICIES, Admission, Policy, Registry, _default_owner

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisRegistry"]

logger = logging.getLogger("wsgate.redis")

# Timeouts
_RETRY: Final = 1.0
"""Seconds between two attempts to reach Redis while it cannot be reached."""
_STOP_TIMEOUT: Final = 2.0
"""Seconds aclose() waits for the background tasks to stop."""

_LOST: Final = -1
"""What the add script answers when Redis no longer knows this worker."""


class RedisRegistry(Registry):
    """A connection registry in Redis, shared by every worker process and host that uses it.

    A user's limit then holds across all of them: when the fourth connection lands on one
    worker and the oldest lives on another, that other worker closes it with 4008
    ``connection_limit``, told over Redis pub/sub.

    Each entry carries the id of the worker holding the connection. A worker renews its lease
    every ``ttl / 3`` seconds (one task per process, whatever the number of connections); when
    a worker dies without saying goodbye (``kill -9``, a lost host), its entries stop counting
    once its lease runs out, at most ``ttl`` seconds later.

    While Redis cannot be reached, ``policy`` decides: ``"fail_open"`` counts each user's
    connections in this process only, and ``"fail_closed"`` makes :meth:`add` raise
    :class:`~wsgate.backends.BackendUnavailable`, which refuses new connections with 1013
    ``backend_unavailable``. Either way, open connections keep working, and when Redis answers
    again, this process registers its connections again by itself. Nothing here ever raises a
    Redis error: :meth:`remove` queues what it could not do, and :meth:`count` and
    :meth:`total` answer for this process alone while Redis is away.

    :attr:`Admission.close <wsgate.registry.Admission.close>` names this process's
    connections by their id and another worker's as ``"<owner>/<id>"``, which that worker
    closes.

    Args:
        url: ``redis://host:6379/0``, ``rediss://...`` (TLS) or ``unix:///path/redis.sock``.
        ttl: How long a dead worker's entries keep counting, at most, in seconds.
        policy: ``"fail_open"`` (the default) or ``"fail_closed"``.
        owner: The id to record entries under; defaults to ``"<hostname>:<pid>:<random>"``,
            new for each process. It may not contain ``/``.

    Attributes:
        pool: The connection pool; the gate's rate-limit storage shares it.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 30.0,
        policy: BackendPolicy = "fail_open",
        owner: str | None = None,
    ) -> None:
        self.shown_url = _options.redacted_url(url)
        try:
            from redis.asyncio import Redis
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigurationError(
                f"storage {self.shown_url!r} needs the Redis client: pip install 'wsgate[redis]'."
            ) from None
        self.ttl = _options.seconds("ttl", ttl, positive=True)
        _options.choice("policy", policy, BACKEND_POLICIES)
        self.policy: BackendPolicy = policy
        self.owner = owner if owner is not None else f"{_default_owner()}:{secrets.token_hex(4)}"
        if not self.owner or "/" in self.owner:
            raise ConfigurationError(f"owner must be a non-empty id without '/', not {owner!r}.")
        try:
            self.pool = connection_pool(url)
        except ValueError as exc:
            raise ConfigurationError(
                f"storage {self.shown_url!r} is not a Redis URL: {exc}"
            ) from None
        self._client: Redis = Redis(connection_pool=self.pool)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._add = self._client.register_script(_scripts.ADD)
        self._remove = self._client.register_script(_scripts.REMOVE)
        self._count = self._client.register_script(_scripts.COUNT)
        self._total = self._client.register_script(_scripts.TOTAL)
        self._sync_script = self._client.register_script(_scripts.SYNC)
        self._goodbye = self._client.register_script(_scripts.GOODBYE)
        self._ttl_ms = max(round(self.ttl * 1000), 1)
        self._period = self.ttl / 3
        # key -> {connection id: whether Redis has the entry}, oldest first. Entries admitted
        # while Redis was away are pushed to it by the next sync.
        self._entries: dict[str, dict[str, bool]] = {}
        # Entries this process ended that Redis may still have.
        self._removals: set[tuple[str, str]] = set()
        self._handler: Callable[[str], bool] | None = None
        self._syncs = 0
        self._sync_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._link = Link(self.shown_url, policy, retry=min(self._period, _RETRY))
        self._listener = EvictionListener(
            self._client,
            self.owner,
            evicted=lambda key, connection_id: self._evicted(
                key, connection_id, "told over pub/sub"
            ),
            resubscribed=self._wake.set,  # what was published meanwhile is found by a sync
            errors=self._errors,
        )

    def on_eviction(self, handler: Callable[[str], bool]) -> None:
        """Have ``handler(connection_id)`` close this process's connections that another
        worker evicted; it returns True when it closed one. The connection-limit middleware
        registers its ``evict``."""
        self._handler = handler

    async def add(self, key: str, connection_id: str, *, limit: int, policy: Policy) -> Admission:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}.")
        if policy not in POLICIES:
            raise ValueError(f"policy must be 'evict_oldest' or 'reject_new', not {policy!r}.")
        entries = self._entries.get(key)
        if entries is not None and connection_id in entries:
            return Admission(True)
        if not self._tasks and not self._closed:
            self._start()
        if self._link.down_since is None or (
            # While Redis is away, try again once a second, and never queue behind a sync.
            time.monotonic() >= self._link.retry_at and not self._sync_lock.locked()
        ):
            try:
                if not self._link.up:
                    await self._resync(self._syncs)
                seen = self._syncs
                reply = await self._run_add(key, connection_id, limit, policy)
                if reply[0] == _LOST:
                    await self._resync(seen)
                    reply = await self._run_add(key, connection_id, limit, policy)
            except self._errors as exc:
                self._link.failed(exc)
            else:
                if reply[0] != _LOST:
                    return self._admitted(key, connection_id, reply)
        if self.policy == "fail_closed":
            raise BackendUnavailable(
                f"Redis at {self.shown_url} cannot be reached and the backend policy is "
                "fail_closed: new connections are refused until it answers again."
            )
        return self._admit_locally(key, connection_id, limit, policy)

    async def remove(self, key: str, connection_id: str) -> None:
        entries = self._entries.get(key)
        if entries is None or connection_id not in entries:
            return
        in_redis = entries.pop(connection_id)
        if not entries:
            del self._entries[key]
        if in_redis and self._link.up:
            try:
                await self._remove(keys=[key, COUNTS], args=[self.owner, connection_id])
            except self._errors as exc:
                self._link.failed(exc)
            else:
                return
        # The next sync removes it; an entry not yet confirmed may be on its way there.
        self._removals.add((key, connection_id))

    async def count(self, key: str) -> int:
        if self._link.reachable():
            try:
                return int(await self._count(keys=[key, OWNERS]))
            except self._errors as exc:
                self._link.failed(exc)
        return len(self._entries.get(key, ()))

    async def total(self) -> int:
        if self._link.reachable():
            try:
                return int(await self._total(keys=[OWNERS, COUNTS]))
            except self._errors as exc:
                self._link.failed(exc)
        return sum(len(entries) for entries in self._entries.values())

    async def health(self) -> dict[str, Any]:
        """``{"kind": "redis", "status": "ok" | "down", "latency_ms": ...}`` from one PING;
        ``latency_ms`` is None when Redis did not answer."""
        started = time.perf_counter()
        try:
            await self._client.ping()
        except self._errors:
            return {"kind": "redis", "status": "down", "latency_ms": None}
        latency = (time.perf_counter() - started) * 1000
        return {"kind": "redis", "status": "ok", "latency_ms": round(latency, 3)}

    async def aclose(self) -> None:
        """Stop the background tasks, forget this process's entries in Redis at once (so its
        users get their slots back without waiting for the TTL), and close the connections."""
        if self._closed:
            return
        self._closed = True
        await _stop(self._tasks)
        self._tasks.clear()
        if self._syncs:
            pairs = [(key, cid) for key, entries in self._entries.items() for cid in entries]
            pairs.extend(self._removals)
            with contextlib.suppress(*self._errors):
                await self._goodbye(
                    keys=[OWNERS, COUNTS, *(key for key, _ in pairs)],
                    args=[self.owner, *(cid for _, cid in pairs)],
                )
        self._entries.clear()
        self._removals.clear()
        await self._client.aclose()
        await self.pool.disconnect()

    # Talking to Redis

    async def _run_add(
        self, key: str, connection_id: str, limit: int, policy: Policy
    ) -> Sequence[Any]:
        reply: Sequence[Any] = await self._add(
            keys=[key, OWNERS, COUNTS, SEQ],
            args=[
                self.owner,
                connection_id,
                limit,
                1 if policy == "reject_new" else 0,
                self._ttl_ms,
                CHANNEL,
            ],
        )
        return reply

    def _admitted(self, key: str, connection_id: str, reply: Sequence[Any]) -> Admission:
        if reply[0] == 0:
            return Admission(False, (connection_id,))
        entries = self._entries.setdefault(key, {})
        entries[connection_id] = True
        mine = self.owner + "/"
        closed: list[str] = []
        for raw in reply[1:]:
            entry = raw.decode() if isinstance(raw, bytes) else str(raw)
            if entry.startswith(mine):
                entry = entry[len(mine) :]
                entries.pop(entry, None)
            closed.append(entry)
        return Admission(True, tuple(closed))

    def _admit_locally(self, key: str, connection_id: str, limit: int, policy: Policy) -> Admission:
        """``fail_open`` while Redis is away: the limit, counted in this process."""
        entries = self._entries.setdefault(key, {})
        if policy == "reject_new" and len(entries) >= limit:
            return Admission(False, (connection_id,))
        entries[connection_id] = False
        evicted = list(itertools.islice(entries, max(len(entries) - limit, 0)))
        for old in evicted:
            del entries[old]
            self._removals.add((key, old))
        return Admission(True, tuple(evicted))

    async def _resync(self, seen: int) -> None:
        """Sync, unless another task did since ``seen`` was read from ``self._syncs``."""
        async with self._sync_lock:
            if self._syncs == seen:
                await self._sync()

    async def _sync(self) -> None:
        """Renew the lease, push what Redis has not seen, and find lost evictions."""
        removals = list(self._removals)
        confirmed: list[tuple[str, str]] = []
        pending: list[tuple[str, str]] = []
        for key, entries in self._entries.items():
            for connection_id, in_redis in entries.items():
                (confirmed if in_redis else pending).append((key, connection_id))
        pairs = removals + confirmed + pending
        reply: list[Any] = await self._sync_script(
            keys=[OWNERS, COUNTS, SEQ, *(key for key, _ in pairs)],
            args=[
                self.owner,
                self._ttl_ms,
                len(removals),
                len(confirmed),
                *(connection_id for _, connection_id in pairs),
            ],
        )
        self._syncs += 1
        self._link.recovered()
        self._removals.difference_update(removals)
        for key, connection_id in pending:
            held = self._entries.get(key)
            if held is not None and connection_id in held:
                held[connection_id] = True
        if reply[0] == 1 and self._syncs > 1 and (confirmed or pending):
            logger.warning(
                "Redis at %s had forgotten this worker (it restarted, or this worker missed its "
                "refreshes for longer than ttl=%g s): %d connection(s) registered again",
                self.shown_url,
                self.ttl,
                len(confirmed) + len(pending),
            )
        for raw_key, raw_id in zip(reply[1::2], reply[2::2], strict=True):
            self._evicted(raw_key.decode(), raw_id.decode(), "its eviction message was lost")

    def _evicted(self, key: str, connection_id: str, why: str) -> None:
        """Another worker evicted this process's ``connection_id``: close it."""
        entries = self._entries.get(key)
        if entries is None or not entries.get(connection_id):
            return  # it ended meanwhile, or Redis has not seen it yet
        del entries[connection_id]
        if not entries:
            del self._entries[key]
        if self._handler is not None and self._handler(connection_id):
            logger.info(
                "closed connection %s of %s with 4008 connection_limit: another worker "
                "evicted it (%s)",
                connection_id,
                key,
                why,
            )

    # Background tasks, one of each per process

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        listening = self._listener.run(
            period=self._period, retry=self._link.retry, running=lambda: not self._closed
        )
        self._tasks = [
            loop.create_task(self._refresh_forever(), name="wsgate-redis-refresh"),
            loop.create_task(listening, name="wsgate-redis-evictions"),
        ]

    # Both loops also end on _closed: before Python 3.12, a wait_for that times out as the
    # task is cancelled can swallow the cancellation.

    async def _refresh_forever(self) -> None:
        delay = self._period
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            if self._closed:
                return
            self._wake.clear()
            try:
                await self._resync(self._syncs)
            except self._errors as exc:
                self._link.failed(exc)
            except Exception:  # a bug must not stop the refreshes: the lease would end
                logger.exception("refreshing the connection registry failed")
            delay = self._period if self._link.up else self._link.retry

    def __repr__(self) -> str:
        held = sum(len(entries) for entries in self._entries.values())
        return f"<RedisRegistry {self.shown_url} {self._link!r}, {held} connection(s) held here>"


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, a bounded time: a task that swallowed its
    cancellation still ends by itself, at its next turn, once the registry is closed."""
    for task in tasks:
        task.cancel()
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
        for task in pending:
            logger.warning("the registry's task %s did not stop in time", task.get_name())
