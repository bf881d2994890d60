"""RedisRegistry: the connection registry in Redis, shared by every worker process and host.

The layout in Redis and the scripts that change it are in ``_scripts``, the delivery of
evictions in ``_evictions``, the clients in ``_pool``, and the state of the link to Redis in
``_link``.
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
from wsgate.backends._factory import split_scheme
from wsgate.backends.base import BACKEND_POLICIES, BackendPolicy
from wsgate.backends.redis import _scripts
from wsgate.backends.redis._evictions import EvictionListener, push
from wsgate.backends.redis._link import Link
from wsgate.backends.redis._pool import client, topology
from wsgate.backends.redis._scripts import EVICTIONS, WORKERS, entries_key, leases_key
from wsgate.exceptions import BackendUnavailable, ConfigurationError
from wsgate.registry import POLICIES, Admission, Policy, Registry, _default_owner

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

__all__ = ["RedisRegistry"]

logger = logging.getLogger("wsgate.redis")

# Timeouts
_RETRY: Final = 1.0
"""Seconds between two attempts to reach Redis while it cannot be reached."""
_STOP_TIMEOUT: Final = 2.0
"""Seconds aclose() waits for the background tasks to stop."""

_LOST: Final = -1
"""What the add script answers when Redis no longer knows this worker under a key."""
_SYNC_KEYS: Final = 500
"""Registry keys in one sync script at most, so that no script holds Redis up for long."""

_Call = tuple["AsyncScript", list[str], list[Any]]


_IN_FLIGHT: Final = 50
"""Connect and disconnect commands out at once, at most: half of redis-py's default pool."""


class RedisRegistry(Registry):
    """A connection registry in Redis, shared by every worker process and host that uses it.

    A user's limit then holds across all of them: when the fourth connection lands on one
    worker and the oldest lives on another, that other worker closes it with 4008
    ``connection_limit``, told through its eviction list in Redis.

    Each entry carries the id of the worker holding the connection, and each key the leases
    of the workers holding entries under it. A worker renews its leases every ``ttl / 3``
    seconds (one task per process, whatever the number of connections); when a worker dies
    without saying goodbye (``kill -9``, a lost host), its entries stop counting once its
    lease runs out, at most ``ttl`` seconds later. Every script touches the keys of one slot,
    so the same holds on a Redis Cluster, on every shard.

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
        url: ``redis://host:6379/0``, ``rediss://...`` (TLS), ``unix:///path/redis.sock``,
            ``redis+cluster://host:port[,host:port...]`` (a Redis Cluster) or
            ``redis+sentinel://host:port[,host:port...]/service`` (the primary that Sentinel
            names), the last two also as ``rediss+...`` (TLS).
        ttl: How long a dead worker's entries keep counting, at most, in seconds.
        policy: ``"fail_open"`` (the default) or ``"fail_closed"``.
        owner: The id to record entries under; defaults to ``"<hostname>:<pid>:<random>"``,
            new for each process. It may not contain ``/``.

    Attributes:
        pool: The connection pool of one Redis, which the gate's rate-limit storage shares;
            None for a Cluster or Sentinel, whose clients hold a pool per server.
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
            from redis.exceptions import RedisClusterException, RedisError
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
        scheme, rest = split_scheme(url)
        try:
            shape = topology(scheme, scheme + rest)
            self._client: Redis | RedisCluster = client(scheme + rest, shape)
        except (ValueError, RedisError) as exc:
            raise ConfigurationError(
                f"storage {self.shown_url!r} is not a Redis URL: {exc}"
            ) from None
        self.pool: ConnectionPool | None = None
        if shape is None and isinstance(self._client, Redis):
            self.pool = self._client.connection_pool
        self._sharded = shape is not None and shape.mode == "cluster"
        # A cluster client that reaches no node (all down, or the password refused) raises
        # RedisClusterException, which is not a RedisError; under uvloop, a pipeline that
        # writes to a node's connection as the node dies raises RuntimeError ("the handler is
        # closed"): the same outage, not a bug to log with a traceback.
        self._errors: tuple[type[BaseException], ...] = (
            RedisError,
            OSError,
            RedisClusterException,
            RuntimeError,
        )
        self._add = self._client.register_script(_scripts.ADD)
        self._count = self._client.register_script(_scripts.COUNT)
        self._total = self._client.register_script(_scripts.TOTAL)
        self._sync_script = self._client.register_script(_scripts.SYNC)
        self._worker = self._client.register_script(_scripts.WORKER)
        self._ttl_ms = max(round(self.ttl * 1000), 1)
        self._period = self.ttl / 3
        # key -> {connection id: whether Redis has the entry}, oldest first. Entries admitted
        # while Redis was away are pushed to it by the next sync.
        self._entries: dict[str, dict[str, bool]] = {}
        # Entries this process ended that Redis may still have.
        self._removals: set[tuple[str, str]] = set()
        # Connections whose add script is out, and those of them that another add of this
        # process evicted before their own answer came back.
        self._adding: set[str] = set()
        self._overtaken: set[str] = set()
        self._handler: Callable[[str], bool] | None = None
        self._syncs = 0
        self._sync_lock = asyncio.Lock()
        # Commands of connects and disconnects out at once, at most: a storm of either waits
        # here instead of exhausting redis-py's pool, whose overflow fails a command at once
        # (MaxConnectionsError) and would look like an outage.
        self._in_flight = asyncio.Semaphore(_IN_FLIGHT)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._link = Link(self.shown_url, policy, retry=min(self._period, _RETRY))
        self._listener = EvictionListener(
            self._client,
            self.owner,
            evicted=lambda key, connection_id: self._evicted(
                key, connection_id, "told through its eviction list"
            ),
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
            self._adding.add(connection_id)
            try:
                if not self._link.up:
                    await self._resync(self._syncs)
                seen = self._syncs
                async with self._in_flight:
                    reply = await self._run_add(key, connection_id, limit, policy)
                if reply[0] == _LOST:
                    await self._resync(seen)
                    async with self._in_flight:
                        reply = await self._run_add(key, connection_id, limit, policy)
                if reply[0] != _LOST:
                    return await self._admitted(key, connection_id, reply)
            except self._errors as exc:
                self._link.failed(exc)
            finally:
                self._adding.discard(connection_id)
                self._overtaken.discard(connection_id)
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
                async with self._in_flight:
                    await self._client.zrem(entries_key(key), f"{self.owner}/{connection_id}")
            except self._errors as exc:
                self._link.failed(exc)
            else:
                return
        # The next sync removes it; an entry not yet confirmed may be on its way there.
        self._removals.add((key, connection_id))

    async def count(self, key: str) -> int:
        if self._link.reachable():
            try:
                return int(await self._count(keys=[entries_key(key), leases_key(key)]))
            except self._errors as exc:
                self._link.failed(exc)
        return len(self._entries.get(key, ()))

    async def total(self) -> int:
        """This process's connections, and those the other live workers held at their last
        refresh (at most ``ttl / 3`` seconds ago)."""
        here = sum(len(entries) for entries in self._entries.values())
        if self._link.reachable():
            try:
                return here + int(await self._total(keys=[WORKERS], args=[self.owner]))
            except self._errors as exc:
                self._link.failed(exc)
        return here

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
            self._removals.update(
                (key, cid) for key, entries in self._entries.items() for cid in entries
            )
            self._entries.clear()
            with contextlib.suppress(*self._errors):
                await self._run(self._key_calls(self._pending_by_key()))
                await self._client.hdel(WORKERS, self.owner)
                await self._client.delete(EVICTIONS + self.owner)
        self._entries.clear()
        self._removals.clear()
        await self._client.aclose()
        if self.pool is not None:
            await self.pool.disconnect()
        pool = getattr(self._client, "connection_pool", None)
        sentinels = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(sentinels, "sentinels", ()):
            await sentinel.aclose()

    # Talking to Redis

    async def _run_add(
        self, key: str, connection_id: str, limit: int, policy: Policy
    ) -> Sequence[Any]:
        held = self._entries.get(key)
        reply: Sequence[Any] = await self._add(
            keys=[entries_key(key), leases_key(key)],
            args=[
                self.owner,
                connection_id,
                limit,
                1 if policy == "reject_new" else 0,
                self._ttl_ms,
                1 if held is not None and any(held.values()) else 0,
            ],
        )
        return reply

    async def _admitted(self, key: str, connection_id: str, reply: Sequence[Any]) -> Admission:
        if reply[0] == 0:
            return Admission(False, (connection_id,))
        entries = self._entries.setdefault(key, {})
        if connection_id not in self._overtaken:
            entries[connection_id] = True
        mine = self.owner + "/"
        closed: list[str] = []
        others: list[str] = []
        for raw in reply[1:]:
            entry = raw.decode() if isinstance(raw, bytes) else str(raw)
            if entry.startswith(mine):
                entry = entry[len(mine) :]
                if entries.pop(entry, None) is None and entry in self._adding:
                    self._overtaken.add(entry)
            else:
                others.append(entry)
            closed.append(entry)
        if not entries:
            del self._entries[key]
        if others:
            try:
                await push(self._client, key, others, self._ttl_ms)
            except self._errors as exc:  # their owners' next sync finds the evictions
                logger.info("could not tell the eviction of %s: %s", ", ".join(others), exc)
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
        """Renew the leases, push what Redis has not seen, and find lost evictions."""
        removals = set(self._removals)
        by_key = self._pending_by_key()
        held = sum(len(entries) for entries in self._entries.values())
        calls = self._key_calls(by_key)
        worker: _Call = (self._worker, [WORKERS], [self.owner, self._ttl_ms, held])
        replies = await self._run([worker, *calls])
        self._syncs += 1
        self._link.recovered()
        self._removals.difference_update(removals)
        again = 0
        for (_, keys, _), reply in zip(calls, replies[1:], strict=True):
            again += int(reply[0])
            for pair, raw_id in zip(reply[1::2], reply[2::2], strict=True):
                key = keys[2 * int(pair) - 2][1:-1]  # "{key}" -> key
                self._evicted(key, raw_id.decode(), "its eviction message was lost")
        for key, (_, _, pending) in by_key.items():
            entries = self._entries.get(key)
            for connection_id in pending:
                if entries is not None and connection_id in entries:
                    entries[connection_id] = True
        if again:
            logger.warning(
                "Redis at %s had forgotten this worker (it restarted, or this worker missed its "
                "refreshes for longer than ttl=%g s): %d connection(s) registered again",
                self.shown_url,
                self.ttl,
                again,
            )

    def _pending_by_key(self) -> dict[str, tuple[list[str], list[str], list[str]]]:
        """Registry key -> (removals, entries Redis confirmed, entries it has not seen)."""
        by_key: dict[str, tuple[list[str], list[str], list[str]]] = {}
        for key, connection_id in self._removals:
            by_key.setdefault(key, ([], [], []))[0].append(connection_id)
        for key, entries in self._entries.items():
            for connection_id, in_redis in entries.items():
                by_key.setdefault(key, ([], [], []))[1 if in_redis else 2].append(connection_id)
        return by_key

    def _key_calls(self, by_key: dict[str, tuple[list[str], list[str], list[str]]]) -> list[_Call]:
        """The sync scripts for ``by_key``: one a slot on a cluster (every key of a script
        must hash to one slot), and no more than :data:`_SYNC_KEYS` keys in one."""
        from redis.crc import key_slot

        groups: dict[int, list[str]] = {}
        for key in by_key:
            slot = key_slot(entries_key(key).encode()) if self._sharded else 0
            groups.setdefault(slot, []).append(key)
        calls: list[_Call] = []
        for group in groups.values():
            for start in range(0, len(group), _SYNC_KEYS):
                keys: list[str] = []
                args: list[Any] = [self.owner, self._ttl_ms]
                for key in group[start : start + _SYNC_KEYS]:
                    removals, confirmed, pending = by_key[key]
                    keys += [entries_key(key), leases_key(key)]
                    args += [len(removals), len(confirmed), len(pending)]
                    args += [*removals, *confirmed, *pending]
                calls.append((self._sync_script, keys, args))
        return calls

    async def _run(self, calls: list[_Call]) -> list[Any]:
        """The replies to ``calls``, in one pipeline (one round trip per server). A script
        that Redis lost (a restart) is loaded and run again; any other error is raised."""
        from redis.exceptions import NoScriptError

        pipe = self._client.pipeline(transaction=False)
        for script, keys, args in calls:
            # Not pipe.evalsha, which redis-py refuses in a cluster pipeline (a script may be
            # missing on some node); a NOSCRIPT reply is handled below instead.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for index, ((script, keys, args), reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                replies[index] = await script(keys=keys, args=args)
            elif isinstance(reply, Exception):
                raise reply
        return replies

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
        listening = self._listener.run(retry=self._link.retry, running=lambda: not self._closed)
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
