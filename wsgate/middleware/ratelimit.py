"""RateLimitMiddleware: a per-user budget of client messages, on the ``limits`` library.

The budget lives in a ``limits`` async storage: in process memory by default, or Redis so
that every worker process shares it. One storage can serve several middlewares (endpoints):
with the same rate, a user then has one budget across all of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from starlette.types import ASGIApp, Message, Scope

from wsgate import _options, close_codes
from wsgate._choices import RATE_STRATEGIES, RateStrategy
from wsgate._window import LocalStorage, LocalWindow
from wsgate.backends._ratebatch import Keys, RedisHits
from wsgate.backends._rates import rate_storage
from wsgate.connection import (
    PARSED_KEY,
    REJECTED_KEY,
    Connection,
    decoded,
    identity_key,
    message_id,
)
from wsgate.engine import DROP, CheckMiddleware, Verdict
from wsgate.error_frames import RATE_LIMITED
from wsgate.exceptions import ConfigurationError
from wsgate.middleware._lease import Lease, lease_terms

__all__ = ["RateLimitMiddleware", "RateState", "rate_storage"]

logger = logging.getLogger("wsgate.ratelimit")

_STRATEGIES: Final[dict[RateStrategy, type[RateLimiter]]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
_KEY_PREFIX: Final = "wsgate:rate:"
_WARNING_PERIOD: Final = 60.0
"""Seconds between two warnings about a failing storage."""
_RETRY_STEP: Final = 0.1
"""``retry_after`` is rounded up to this many seconds, and is never less."""
_STORAGE_RETRY: Final = 1.0
"""Seconds between two attempts to use a storage that failed."""


class RateLimitMiddleware(CheckMiddleware):
    """Let each user send at most ``rate`` messages; drop the rest with an error frame.

    A message over the limit never reaches the app: the client gets a ``rate_limited`` error
    frame with ``retry_after`` (seconds until a message would pass) and ``limit`` (the rate),
    carrying the message's ``id`` when it had one. The connection stays open.

    The budget belongs to the authenticated user (``scope["user"].identity``), so all of a
    user's connections draw from one budget. Connections without a user, and the
    development bypass user, are counted per client IP address. ``key`` replaces that choice.

    On Redis, messages that arrive together are counted together: the hits of one
    event-loop turn, or all those made while the previous batch was out, go in one pipeline
    (at most one Redis round trip per message, usually one per loop turn for all of them),
    with the scripts and keys of ``limits``' own strategies, so that other ``limits`` users
    of that Redis share the budgets. A user who sends fast gets a lease: a slice of the
    budget counted in one round trip and then spent in the worker, one unit a message,
    with none (see ``lease``).

    A storage failure (Redis down) never breaks a connection: while it lasts, messages are
    counted in ``fallback``, or pass unlimited without one, and a warning is logged at most
    once a minute. The storage is tried again every second, and takes over by itself.

    Args:
        app: The ASGI app to protect.
        rate: A ``limits`` rate string: ``"30/minute"``, ``"5/second"``, ``"1000 per hour"``.
        strategy: ``"moving-window"`` (the default: exact), ``"fixed-window"`` (cheapest; up
            to twice the rate across a window boundary) or ``"sliding-window-counter"``
            (an approximation of the moving window with two counters).
        storage: A storage URI (``"memory://"``, ``"redis://host:6379/0"``), or a
            ``limits.aio.storage.Storage`` shared with other middlewares.
        key: A function of the connection's scope that returns the budget's name, computed
            once per connection. None counts per user, else per client IP.
        close_after: Close the connection with 1008 ``rate_limit_abuse`` after this many
            refused messages in a row (a message that passes resets the count), or None
            (the default) to never close.
        fallback: Where to count while a shared ``storage`` fails: ``"memory://"`` (or a
            storage from :func:`rate_storage`) keeps the limit in each process; None (the
            default) lets messages pass unlimited. A :class:`~wsgate.Gate` on Redis falls
            back to memory.
        max_batch: On a JSON-RPC connection, a batch costs one unit per request,
            notifications included, up to this many (the format check refuses larger
            batches whole). Give it the format check's ``max_batch``.
        lease: On a shared storage, the most messages one worker counts in one round trip
            for a user who sends fast; never more than a tenth of the rate. 1 counts every
            message on its own, exactly. A lease lasts at most a second (a sixtieth of the
            window), and a fixed window counts each message on its own;
            ``docs/rate-limit.md`` says how exact the limit stays.

    A batch that does not fit whole keeps the requests that fit, from its start; each
    request that does not fit is answered with a ``rate_limited`` error object in the
    batch's response (notifications get none, as JSON-RPC requires). A batch of which
    nothing fits is refused like a single message over the limit: with an array of those
    error objects, or with one error frame when no request in it has an ``id``.
    """

    close_codes = (close_codes.RATE_LIMIT_ABUSE,)
    error_frames = (RATE_LIMITED,)

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: str = "30/minute",
        strategy: RateStrategy = "moving-window",
        storage: str | Storage | LocalStorage = "memory://",
        key: Callable[[Scope], str] | None = None,
        close_after: int | None = None,
        fallback: str | LocalStorage | None = None,
        max_batch: int = 50,
        lease: int = 16,
    ) -> None:
        self.rate = rate
        self.item = _options.rate("rate", rate)
        self.strategy = _options.choice("strategy", strategy, RATE_STRATEGIES)
        if isinstance(storage, str):
            storage = rate_storage(storage)
        elif not isinstance(storage, (Storage, LocalStorage)):
            raise ConfigurationError(
                f"storage must be a URI such as 'memory://' or 'redis://localhost:6379/0', or a "
                f"limits.aio.storage.Storage (an async one), not {storage!r}."
            )
        self.storage = storage
        self.local: LocalWindow | None = None
        shared: Storage
        if isinstance(storage, LocalStorage):
            self.local = storage.window(strategy, self.item.amount, self.item.get_expiry())
            shared = MemoryStorage()  # limits' own, for the async path nobody takes
        else:
            shared = storage
        try:
            self.limiter = _STRATEGIES[strategy](shared)
        except NotImplementedError:
            raise ConfigurationError(
                f"strategy {strategy!r} does not work with {type(storage).__name__}; use "
                "'fixed-window', or a memory or Redis storage."
            ) from None
        # Hits on limits' Redis storage go in pipelines; any other storage, through limits.
        self.batch = None if self.local is not None else RedisHits.of(self.limiter, self.item)
        if key is not None and not callable(key):
            raise ConfigurationError(
                f"key must be a function of the scope that returns a string, not {key!r}."
            )
        self.key = key
        self.close_after = (
            None if close_after is None else _options.count("close_after", close_after)
        )
        self.explanation = f"Over the rate limit of {rate}; the message was dropped."
        self.max_batch = _options.count("max_batch", max_batch)
        self.batch_explanation = (
            f"Over the rate limit of {rate}: each request of a batch costs one message, and "
            "this one did not fit; it was not run."
        )
        self.lease = _options.count("lease", lease)
        # Leases on a shared storage only: a window in this process costs no round trip. Not
        # on a fixed window either, where limits counts a refused hit: a lease that did not
        # fit would be lost.
        leased = self.local is None and strategy != "fixed-window"
        self._lease_cap, self._lease_ttl = lease_terms(
            self.item.amount, self.item.get_expiry(), self.lease if leased else 1
        )
        # Each user's lease in this worker, for as long as one of their connections holds it.
        self._leases: weakref.WeakValueDictionary[str, Lease] = weakref.WeakValueDictionary()
        self._failures = 0
        self._warned_at = -math.inf
        if fallback == "memory://":
            fallback = LocalStorage()
        elif fallback is not None and not isinstance(fallback, LocalStorage):
            raise ConfigurationError(
                f"fallback must be 'memory://', rate_storage('memory://') or None, not "
                f"{fallback!r}."
            )
        self.fallback: LocalWindow | None = (
            None
            if fallback is None
            else fallback.window(strategy, self.item.amount, self.item.get_expiry())
        )
        # While the storage fails: when to try it again (0.0 while it works).
        self._retry_at = 0.0
        self._alone(app)

    def key_of(self, scope: Scope) -> str:
        """The name of the budget a connection draws from, namespaced by kind."""
        return identity_key(scope, _KEY_PREFIX, self.key)

    # The hooks, in the order a connection meets them.

    def open(self, connection: Connection) -> RateState:
        """The state of a new connection: its budget, and no message refused yet."""
        key = self.key_of(connection.scope)
        state = RateState(connection, key, self.batch.keys(key) if self.batch is not None else ())
        if self._lease_cap > 1:
            lease = self._leases.get(key)
            if lease is None:
                lease = self._leases[key] = Lease()
            state.lease = lease
        return state

    def message(self, state: RateState, message: Message) -> Awaitable[Verdict] | None:
        """Count a message: None when it may pass, else the refusal to await."""
        if state.connection.protocol == "jsonrpc":
            batch = self.batch_of(state, message)
            if batch is not None:
                return self._batch(state, message, batch)
        local = self.local
        if local is None:
            lease = state.lease
            if lease is not None and lease.left and time.monotonic() < lease.until:
                lease.left -= 1  # counted in the storage when the lease was taken
                state.refused = 0
                return None
            return self._shared(state, message)
        if local.hit(state.rate_key):  # synchronous, atomic, cheap
            state.refused = 0
            return None
        return self._refused(state, message)

    async def _shared(self, state: RateState, message: Message) -> Verdict:
        if await self.allows(state):
            return None
        return await self._refused(state, message)

    async def _batch(self, state: RateState, message: Message, batch: list[Any]) -> Verdict:
        if await self.allows_batch(state, message, batch):
            return None
        return await self._refused(state, message)

    async def _refused(self, state: RateState, message: Message) -> Verdict:
        await self.refuse(state, message)
        return DROP

    async def allows(self, state: RateState) -> bool:
        """Count a message in the shared storage (in the fallback while it fails): whether
        it may pass."""
        if self._retry_at:
            allowed = await self._hit_while_failing(state)
        else:
            try:
                allowed = await self._hit(state)
            except Exception as exc:
                allowed = self._storage_down(exc, state.rate_key)
        if allowed:
            state.refused = 0
        return allowed

    def batch_of(self, state: RateState, message: Message) -> list[Any] | None:
        """The requests of a JSON-RPC batch, which cost a unit each; None for a message that
        costs one unit (anything else, or any array on a JSON endpoint)."""
        if state.connection.protocol != "jsonrpc":
            return None
        value = decoded(message)
        return value if type(value) is list and len(value) > 1 else None

    async def allows_batch(self, state: RateState, message: Message, batch: list[Any]) -> bool:
        """Count a batch, one unit per request: whether any of it may pass. When only its
        first requests fit, the message keeps those, and the others' ``rate_limited`` error
        objects join the batch's response (``message["wsgate.rejected"]``)."""
        if len(batch) > self.max_batch:
            # The format check refuses it whole; it costs what a batch can cost.
            return await self._hit_many(state, self.max_batch) > 0
        admitted = await self._hit_many(state, len(batch))
        if admitted == 0:
            return False
        state.refused = 0
        if admitted < len(batch):
            message[PARSED_KEY] = batch[:admitted]
            rejected = await self._batch_errors(state, batch[admitted:])
            message[REJECTED_KEY] = [*message.get(REJECTED_KEY, ()), *rejected]
        return True

    async def refuse(self, state: RateState, message: Message) -> bool:
        """Answer a message over the limit with an error frame. True when that was the
        ``close_after``-th in a row and the connection was closed: then the messages the
        server queued before the close must be dropped."""
        state.refused += 1
        key, connection = state.rate_key, state.connection
        batch = self.batch_of(state, message)
        if batch is None:
            await connection.send_error(
                RATE_LIMITED,
                self.explanation,
                to=message_id(decoded(message)),
                retry_after=await self._retry_after(key),
                limit=self.rate,
            )
        else:
            # Each request is counted once, there; a batch of notifications only gets one
            # frame (id null), so that the client learns why nothing ran.
            rejected = await self._batch_errors(state, batch)
            if not rejected:
                await connection.send_error(
                    RATE_LIMITED,
                    self.explanation,
                    count=False,
                    retry_after=await self._retry_after(key),
                    limit=self.rate,
                )
            else:
                with contextlib.suppress(OSError):  # gone; the next receive says so
                    await connection.send_text(orjson.dumps(rejected).decode())
        if self.close_after is not None and state.refused >= self.close_after:
            await connection.close(close_codes.RATE_LIMIT_ABUSE)
            return True
        return False

    async def _batch_errors(self, state: RateState, requests: list[Any]) -> list[dict[str, Any]]:
        """The ``rate_limited`` error objects of requests that did not fit, each counted; a
        notification (no valid ``id``) is counted but gets none."""
        connection = state.connection
        answered = [message_id(request) for request in requests[: self.max_batch]]
        for _ in answered:
            connection.count_error(RATE_LIMITED)
        if not any(request_id is not None for request_id in answered):
            return []
        retry_after = await self._retry_after(state.rate_key)
        return [
            connection.error_object(
                RATE_LIMITED,
                self.batch_explanation,
                to=request_id,
                count=False,  # each request was counted above, notifications too
                retry_after=retry_after,
                limit=self.rate,
            )
            for request_id in answered
            if request_id is not None
        ]

    async def _hit_many(self, state: RateState, cost: int) -> int:
        """Count up to ``cost`` units at once: how many fit."""
        key = state.rate_key
        if self.local is not None:
            return _hits(self.local, key, cost)
        if not self._retry_at:
            try:
                stats = await self.limiter.get_window_stats(self.item, key)
                take = min(cost, stats.remaining)
                if take > 0 and await self.limiter.hit(self.item, key, cost=take):
                    return take
                return 0
            except Exception as exc:
                self._storage_down(exc, key)
        return cost if self.fallback is None else _hits(self.fallback, key, cost)

    async def _hit(self, state: RateState) -> bool:
        lease = state.lease
        if lease is None:
            return await self._hit_cost(state, 1)
        size = lease.next_size(time.monotonic(), self._lease_cap)
        if size > 1:
            if await self._hit_cost(state, size):
                lease.grant(size, time.monotonic(), self._lease_ttl)
                return True
            # It does not fit in what is left of the budget: one unit, as without leases,
            # and so for the messages after it until a lease lapses.
            lease.refused(time.monotonic(), self._lease_ttl)
        if await self._hit_cost(state, 1):
            lease.grant(1, time.monotonic(), self._lease_ttl)
            return True
        lease.refused(time.monotonic(), self._lease_ttl)
        return False

    async def _hit_cost(self, state: RateState, cost: int) -> bool:
        if self.batch is not None:
            return await self.batch.hit(state.rate_keys, cost)
        return await self.limiter.hit(self.item, state.rate_key, cost=cost)

    async def _hit_while_failing(self, state: RateState) -> bool:
        """A hit while the storage fails: the storage is tried again once a second."""
        if time.monotonic() < self._retry_at:
            return self._fallback_hit(state.rate_key)
        try:
            allowed = await self._hit(state)
        except Exception as exc:
            return self._storage_down(exc, state.rate_key)
        self._retry_at = 0.0
        self._warned_at = -math.inf
        logger.warning("the rate-limit storage answers again; budgets are shared again")
        return allowed

    def _storage_down(self, exc: Exception, key: str) -> bool:
        self._storage_failed(exc)
        self._retry_at = time.monotonic() + _STORAGE_RETRY
        return self._fallback_hit(key)

    def _fallback_hit(self, key: str) -> bool:
        return True if self.fallback is None else self.fallback.hit(key)

    async def _retry_after(self, key: str) -> float:
        """Seconds until the budget has room again, rounded up to a tenth of a second."""
        window = self.item.get_expiry()
        if self.local is not None:
            return _rounded_up(min(self.local.retry_after(key), window))
        if self._retry_at and self.fallback is not None:
            return _rounded_up(min(self.fallback.retry_after(key), window))
        try:
            stats = await self.limiter.get_window_stats(self.item, key)
            # Never beyond one window, whatever the storage server's clock says.
            seconds = min(stats.reset_time - time.time(), window)
        except Exception as exc:
            self._storage_failed(exc)
            seconds = window  # a whole window is always enough
        return _rounded_up(seconds)

    def _storage_failed(self, exc: Exception) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._warned_at < _WARNING_PERIOD:
            return
        logger.warning(
            "the rate-limit storage failed %d time(s) (last: %s: %s); messages %s until it "
            "answers again",
            self._failures,
            type(exc).__name__,
            exc,
            "pass unlimited" if self.fallback is None else "are limited in each process",
        )
        self._failures = 0
        self._warned_at = now


class RateState:
    """A connection's draw on its budget: what the middleware keeps per connection.

    Attributes:
        connection: The connection.
        rate_key: The name of the budget the connection draws from.
        rate_keys: The budget's Redis keys when hits go in pipelines, else empty.
        refused: Messages refused in a row.
        lease: The user's lease in this worker, on a shared storage with leases; else None.
    """

    __slots__ = ("connection", "lease", "rate_key", "rate_keys", "refused")

    def __init__(self, connection: Connection, rate_key: str, rate_keys: Keys) -> None:
        self.connection = connection
        self.rate_key = rate_key
        self.rate_keys = rate_keys
        self.refused = 0
        self.lease: Lease | None = None


def _hits(window: LocalWindow, key: str, cost: int) -> int:
    """Hit ``window`` up to ``cost`` times, stopping at the first refusal: how many fit."""
    for admitted in range(cost):
        if not window.hit(key):
            return admitted
    return cost


def _rounded_up(seconds: float) -> float:
    """``seconds`` rounded up to a tenth of a second, and never less than one tenth."""
    steps = max(math.ceil(seconds / _RETRY_STEP), 1)
    return round(steps * _RETRY_STEP, 1)
