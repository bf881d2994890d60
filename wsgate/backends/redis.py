"""RedisRegistry: the connection registry in Redis, shared by every worker process and host.

What it keeps in Redis (give wsgate a database of its own, such as ``redis://host:6379/1``):

* ``<key>`` (``wsgate:conn:user:alice``): a sorted set of ``<owner>/<connection id>`` entries,
  scored by a counter so that the lowest score is the oldest. It expires ``ttl`` seconds after
  the last worker holding an entry in it stopped refreshing.
* ``wsgate:registry:owners``: a sorted set of worker ids scored by the end of their lease
  (milliseconds, Redis's clock). The entries of a worker whose lease has ended do not count.
* ``wsgate:registry:counts``: worker id -> how many entries it holds, for :meth:`total`.
* ``wsgate:registry:seq``: the counter that orders entries.
* channel ``wsgate:registry:evict:<owner>``: the connections another worker evicted.

Each change is one Lua script, run atomically by Redis. Only connects and disconnects talk to
Redis; messages never do. One background task per process renews the lease every ``ttl / 3``
seconds and checks this process's entries, and one listens for evictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from wsgate import _options
from wsgate.backends import BackendUnavailable
from wsgate.exceptions import ConfigurationError
from wsgate.registry import POLICIES, Admission, Policy, Registry, _default_owner

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis

__all__ = ["BACKEND_POLICIES", "BackendPolicy", "RedisRegistry", "connection_pool"]

logger = logging.getLogger("wsgate.redis")

BackendPolicy = Literal["fail_open", "fail_closed"]
"""What a gate does while its shared backend cannot be reached."""
BACKEND_POLICIES: Final[tuple[BackendPolicy, ...]] = ("fail_open", "fail_closed")

_NAMESPACE: Final = "wsgate:registry:"
_OWNERS: Final = _NAMESPACE + "owners"
_COUNTS: Final = _NAMESPACE + "counts"
_SEQ: Final = _NAMESPACE + "seq"
_CHANNEL: Final = _NAMESPACE + "evict:"

# Timeouts
_CONNECT_TIMEOUT: Final = 1.0
"""Seconds to wait for a connection to Redis."""
_READ_TIMEOUT: Final = 2.0
"""Seconds to wait for Redis's answer to one command."""
_RETRY: Final = 1.0
"""Seconds between two attempts to reach Redis while it cannot be reached."""
_STOP_TIMEOUT: Final = 2.0
"""Seconds aclose() waits for the background tasks to stop."""
_WARNING_PERIOD: Final = 60.0
"""Seconds between two log lines about the same outage."""

_LOST: Final = -1
"""What the add script answers when Redis no longer knows this worker."""

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_OWNER_OF = """
local function owner_of(entry)
  return string.sub(entry, 1, string.find(entry, '/', 1, true) - 1)
end
"""

# KEYS: the key, owners, counts, seq. ARGV: owner, connection id, limit, reject (0 or 1),
# ttl in ms, the eviction channel prefix.
# Answers {1, evicted entries...} when added, {0} when refused, {-1} when this worker's lease
# is gone (Redis restarted, or the worker missed its refreshes): sync, then add again.
_ADD = (
    _NOW
    + _OWNER_OF
    + """
local key, owners, counts, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local owner, limit, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
local lease = redis.call('ZSCORE', owners, owner)
if not lease or tonumber(lease) <= now then
  return {-1}
end
local member = owner .. '/' .. ARGV[2]
if redis.call('ZSCORE', key, member) then
  return {1}
end
local live, alive = {}, {}
for _, entry in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  local holder = owner_of(entry)
  if alive[holder] == nil then
    local until_ = redis.call('ZSCORE', owners, holder)
    alive[holder] = until_ ~= false and tonumber(until_) > now
  end
  if alive[holder] then
    live[#live + 1] = entry
  else
    redis.call('ZREM', key, entry)
  end
end
if ARGV[4] == '1' and #live >= limit then
  return {0}
end
redis.call('ZADD', key, redis.call('INCR', seq), member)
redis.call('HINCRBY', counts, owner, 1)
redis.call('PEXPIRE', key, ttl)
local answer = {1}
for i = 1, #live + 1 - limit do
  local entry = live[i]
  local holder = owner_of(entry)
  redis.call('ZREM', key, entry)
  redis.call('HINCRBY', counts, holder, -1)
  if holder ~= owner then
    local id = string.sub(entry, #holder + 2)
    redis.call('PUBLISH', ARGV[6] .. holder, cjson.encode({key, id}))
  end
  answer[#answer + 1] = entry
end
return answer
"""
)

# KEYS: the key, counts. ARGV: owner, connection id.
_REMOVE = """
if redis.call('ZREM', KEYS[1], ARGV[1] .. '/' .. ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
end
return 0
"""

# KEYS: the key, owners. Counts the entries of live workers.
_COUNT = (
    _NOW
    + _OWNER_OF
    + """
local count, alive = 0, {}
for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local holder = owner_of(entry)
  if alive[holder] == nil then
    local until_ = redis.call('ZSCORE', KEYS[2], holder)
    alive[holder] = until_ ~= false and tonumber(until_) > now
  end
  if alive[holder] then
    count = count + 1
  end
end
return count
"""
)

# KEYS: owners, counts. The entries of every live worker.
_TOTAL = (
    _NOW
    + """
local total = 0
for _, owner in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  total = total + tonumber(redis.call('HGET', KEYS[2], owner) or 0)
end
return total
"""
)

# KEYS: owners, counts, seq, then one key per connection id in ARGV[5...].
# ARGV: owner, ttl in ms, how many removals, how many confirmed entries, then the connection
# ids: first the removals, then the entries Redis confirmed, then those it has not seen yet.
# Renews the lease. Answers {lost, key, id, key, id...}: lost is 1 when Redis had forgotten
# this worker (every entry is then registered again), and the pairs are confirmed entries
# Redis no longer has: another worker evicted them and the message did not arrive.
_SYNC = (
    _NOW
    + """
local owners, counts, seq = KEYS[1], KEYS[2], KEYS[3]
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local removals, confirmed = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease = redis.call('ZSCORE', owners, owner)
local lost = not lease or tonumber(lease) <= now
redis.call('ZADD', owners, now + ttl, owner)
local answer = {lost and 1 or 0}
for i = 4, #KEYS do
  local n, key, id = i - 3, KEYS[i], ARGV[i + 1]
  local member = owner .. '/' .. id
  if n <= removals then
    if redis.call('ZREM', key, member) == 1 and not lost then
      redis.call('HINCRBY', counts, owner, -1)
    end
  elseif n <= removals + confirmed and not lost then
    if redis.call('ZSCORE', key, member) then
      redis.call('PEXPIRE', key, ttl)
    else
      answer[#answer + 1] = key
      answer[#answer + 1] = id
    end
  else
    if redis.call('ZADD', key, 'NX', redis.call('INCR', seq), member) == 1 and not lost then
      redis.call('HINCRBY', counts, owner, 1)
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
if lost then
  redis.call('HSET', counts, owner, #KEYS - 3 - removals)
end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', owners, '-inf', now - ttl)) do
  redis.call('ZREM', owners, dead)
  redis.call('HDEL', counts, dead)
end
return answer
"""
)

# KEYS: owners, counts, then one key per connection id in ARGV[2...]. ARGV: owner, ids.
_GOODBYE = """
for i = 3, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1] .. '/' .. ARGV[i - 1])
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0
"""


def connection_pool(url: str) -> ConnectionPool:
    """A redis-py asyncio connection pool for ``url``, with wsgate's timeouts.

    A connection attempt gives up after a second and an answer after two, and a failed
    command is retried once at once, on a fresh connection: enough to get past a connection
    that Redis closed when it restarted, never a wait that holds a connect or a message up.
    No connection is made until the first command.
    """
    from redis.asyncio import ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return ConnectionPool.from_url(
        url,
        socket_connect_timeout=_CONNECT_TIMEOUT,
        socket_timeout=_READ_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


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
        self._add = self._client.register_script(_ADD)
        self._remove = self._client.register_script(_REMOVE)
        self._count = self._client.register_script(_COUNT)
        self._total = self._client.register_script(_TOTAL)
        self._sync_script = self._client.register_script(_SYNC)
        self._goodbye = self._client.register_script(_GOODBYE)
        self._ttl_ms = max(round(self.ttl * 1000), 1)
        self._period = self.ttl / 3
        # key -> {connection id: whether Redis has the entry}, oldest first. Entries admitted
        # while Redis was away are pushed to it by the next sync.
        self._entries: dict[str, dict[str, bool]] = {}
        # Entries this process ended that Redis may still have.
        self._removals: set[tuple[str, str]] = set()
        self._handler: Callable[[str], bool] | None = None
        # State of the link to Redis
        self._up = False  # True once a sync went through, until a command fails
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._failures = 0
        self._warned_at = -math.inf
        self._syncs = 0
        self._sync_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

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
        if self._down_since is None or (
            # While Redis is away, try again once a second, and never queue behind a sync.
            time.monotonic() >= self._retry_at and not self._sync_lock.locked()
        ):
            try:
                if not self._up:
                    await self._resync(self._syncs)
                seen = self._syncs
                reply = await self._run_add(key, connection_id, limit, policy)
                if reply[0] == _LOST:
                    await self._resync(seen)
                    reply = await self._run_add(key, connection_id, limit, policy)
            except self._errors as exc:
                self._failed(exc)
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
        if in_redis and self._up:
            try:
                await self._remove(keys=[key, _COUNTS], args=[self.owner, connection_id])
            except self._errors as exc:
                self._failed(exc)
            else:
                return
        # The next sync removes it; an entry not yet confirmed may be on its way there.
        self._removals.add((key, connection_id))

    async def count(self, key: str) -> int:
        if self._reachable():
            try:
                return int(await self._count(keys=[key, _OWNERS]))
            except self._errors as exc:
                self._failed(exc)
        return len(self._entries.get(key, ()))

    async def total(self) -> int:
        if self._reachable():
            try:
                return int(await self._total(keys=[_OWNERS, _COUNTS]))
            except self._errors as exc:
                self._failed(exc)
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
                    keys=[_OWNERS, _COUNTS, *(key for key, _ in pairs)],
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
            keys=[key, _OWNERS, _COUNTS, _SEQ],
            args=[
                self.owner,
                connection_id,
                limit,
                1 if policy == "reject_new" else 0,
                self._ttl_ms,
                _CHANNEL,
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
            keys=[_OWNERS, _COUNTS, _SEQ, *(key for key, _ in pairs)],
            args=[
                self.owner,
                self._ttl_ms,
                len(removals),
                len(confirmed),
                *(connection_id for _, connection_id in pairs),
            ],
        )
        self._syncs += 1
        self._recovered()
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
        self._tasks = [
            loop.create_task(self._refresh_forever(), name="wsgate-redis-refresh"),
            loop.create_task(self._listen_forever(), name="wsgate-redis-evictions"),
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
                self._failed(exc)
            except Exception:  # a bug must not stop the refreshes: the lease would end
                logger.exception("refreshing the connection registry failed")
            delay = self._period if self._up else min(self._period, _RETRY)

    async def _listen_forever(self) -> None:
        subscribed_before = False
        while not self._closed:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(_CHANNEL + self.owner)
                if subscribed_before:
                    self._wake.set()  # what was published meanwhile is found by a sync
                subscribed_before = True
                while not self._closed:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self._period
                    )
                    if message is None or message["type"] != "message":
                        continue
                    try:
                        key, connection_id = orjson.loads(message["data"])
                    except (ValueError, TypeError):
                        logger.warning("ignored a message wsgate did not send: %r", message)
                        continue
                    self._evicted(key, connection_id, "told over pub/sub")
            except self._errors:
                pass  # the refresher reports the outage; listen again once Redis answers
            finally:
                with contextlib.suppress(*self._errors):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(min(self._period, _RETRY))

    # The state of the link

    def _reachable(self) -> bool:
        return self._up or time.monotonic() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._retry_at = now + min(self._period, _RETRY)
        self._failures += 1
        self._up = False
        if self._down_since is None:
            self._down_since = now
        if now - self._warned_at < _WARNING_PERIOD:
            return
        if self.policy == "fail_open":
            consequence = (
                "fail_open: each worker counts connection limits on its own until it answers again"
            )
        else:
            consequence = (
                "fail_closed: new connections are refused with 1013 backend_unavailable until "
                "it answers again; open connections keep working"
            )
        logger.error(
            "Redis at %s cannot be reached (%d failure(s), last: %s: %s); %s",
            self.shown_url,
            self._failures,
            type(exc).__name__,
            exc,
            consequence,
        )
        self._failures = 0
        self._warned_at = now

    def _recovered(self) -> None:
        self._up = True
        if self._down_since is None:
            return
        logger.warning(
            "Redis at %s answers again after %.1f s; connection limits are shared again",
            self.shown_url,
            time.monotonic() - self._down_since,
        )
        self._down_since = None
        self._failures = 0
        self._warned_at = -math.inf

    def __repr__(self) -> str:
        state = "up" if self._up else "down" if self._down_since is not None else "not started"
        held = sum(len(entries) for entries in self._entries.values())
        return f"<RedisRegistry {self.shown_url} {state}, {held} connection(s) held here>"


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, a bounded time: a task that swallowed its
    cancellation still ends by itself, at its next turn, once the registry is closed."""
    for task in tasks:
        task.cancel()
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
        for task in pending:
            logger.warning("the registry's task %s did not stop in time", task.get_name())
