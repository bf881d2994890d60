"""Rate-limit hits on Redis, many to a round trip: :class:`RedisHits`.

Through ``limits``' async API, each hit on Redis is a command of its own, and redis-py spends
some 250 µs of CPU on one (a pool checkout, packing, timeouts, observability hooks). Here the
hits that connections make together are queued, and sent in one non-transactional pipeline:
about 300 µs a pipeline and 35-40 µs a hit in it. A hit runs the very script, with the very
keys and arguments, that ``limits``' own strategy would send, and its reply is read the same
way, so that processes using plain ``limits`` on the same Redis share the budgets.

Only what was checked against ``limits``' source is batched: its ``RedisStorage``,
``RedisClusterStorage`` and ``RedisSentinelStorage`` over redis-py, in a ``limits`` 5 whose
scripts are the ones read. :meth:`RedisHits.of` answers None for anything else, and the caller
keeps ``limits``' path.

On a Redis Cluster, each hit's keys share a slot (one key, or the sliding window's two, which
``limits`` puts under one hash tag), and redis-py's cluster pipeline sends the hits of a batch
to their nodes side by side: a batch still waits for one round trip, the slowest node's, and
costs one request per node it touches.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from limits import RateLimitItem
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["MAX_BATCH", "RedisHits"]

MAX_BATCH: Final = 256
"""Hits in one pipeline at most; more go in the next one."""

_LIMITS_MAJOR: Final = "5"
# SHA-1 of the scripts whose arguments and replies this module was written against: a
# ``limits`` that changes one of them is not batched.
_SCRIPTS: Final[dict[type[RateLimiter], tuple[str, str]]] = {
    MovingWindowRateLimiter: (
        "lua_acquire_moving_window",
        "741eab638ba93ed71020bb821c45c022d0fa02c4",
    ),
    FixedWindowRateLimiter: ("lua_incr_expire", "628bd136a573a06b346879695681af12ccef300f"),
    SlidingWindowCounterRateLimiter: (
        "lua_acquire_sliding_window",
        "e8ac2a60cb040b0dbb56815a1e9c6fd032ce62e7",
    ),
}

Keys = tuple[bytes, ...]
_Entry = tuple[Keys, int, "asyncio.Future[bool]"]


class RedisHits:
    """Hits of one rate (``item``) and strategy on one ``limits`` Redis storage, batched.

    :meth:`hit` queues a hit and returns a future of its decision. The first hit queued
    while no batch is out starts a flushing task (its first step is a ``loop.call_soon``),
    so every hit made in the same loop turn goes in its pipeline. Hits made while a
    pipeline is out go together in the next one, sent when its reply is in; the task ends
    when nothing is left. So: one pipeline out at a time (one Redis connection, however
    many clients wait), at most :data:`MAX_BATCH` hits in each, one task per busy spell; at
    most one Redis round trip per hit, usually one per loop turn for all of them, and fewer
    under load, when batches grow to what arrives during a round trip.

    A pipeline that fails (Redis down, a timeout) fails every hit in it with the error, for
    the caller's failure path, and the hits queued meanwhile with it. A pipeline that meets
    a Redis that lost the scripts (a restart) loads them and sends the refused hits again,
    in two more round trips. A hit whose waiter was cancelled before its batch went out is
    not sent; after, its reply is dropped.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        script: bytes,
        arguments: Callable[[], list[float]],
        allowed: Callable[[Any], bool],
        keys: Callable[[str], tuple[str, ...]],
    ) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script, usedforsecurity=False).hexdigest()  # as redis-py's
        self._arguments = arguments
        self._allowed = allowed
        self._keys = keys
        # Keys once per connection and arguments once per batch, as redis-py would encode
        # them for every command.
        encoder: Any = client.get_encoder  # untyped in redis-py
        self._encode: Callable[[Any], bytes] = encoder().encode
        self._pending: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, limiter: RateLimiter, item: RateLimitItem) -> RedisHits | None:
        """Batched hits for ``limiter`` at ``item``'s rate, or None where batching would not
        be exactly ``limiter.hit`` (then the caller keeps using ``limiter.hit``)."""
        from limits.aio.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage
        from limits.aio.storage.redis.redispy import RedispyBridge

        storage = limiter.storage
        kind = type(limiter)
        exactly = (RedisStorage, RedisClusterStorage, RedisSentinelStorage)
        if kind not in _SCRIPTS or not isinstance(storage, RedisStorage):
            return None
        if type(storage) not in exactly:  # a subclass may send something else
            return None
        bridge = storage.bridge
        if type(bridge) is not RedispyBridge or not _limits_read():
            return None
        from redis.asyncio import Redis
        from redis.asyncio.cluster import RedisCluster

        client = getattr(bridge, "storage", None)
        name, digest = _SCRIPTS[kind]
        text = getattr(getattr(bridge, name, None), "script", None)
        if (
            not isinstance(client, (Redis, RedisCluster))
            or not isinstance(text, bytes)
            or hashlib.sha1(text, usedforsecurity=False).hexdigest() != digest
        ):
            return None
        # What each strategy's hit sends (limits/aio/strategies.py and the redis-py bridge):
        # its key is item.key_for(*identifiers), prefixed by the bridge; its last argument,
        # the cost, is each hit's own.
        limit, expiry = item.amount, item.get_expiry()
        prefixed = bridge.prefixed_key
        if kind is MovingWindowRateLimiter:
            return cls(
                client,
                text,
                lambda: [time.time(), limit, expiry],  # the bridge reads the clock per hit
                bool,
                lambda name: (prefixed(item.key_for(name)),),
            )
        if kind is FixedWindowRateLimiter:
            return cls(
                client,
                text,
                lambda: [expiry],
                lambda count: int(count) <= limit,
                lambda name: (prefixed(item.key_for(name)),),
            )

        def window_keys(name: str) -> tuple[str, str]:
            key = item.key_for(name)
            return (
                prefixed(storage._previous_window_key(key)),
                prefixed(storage._current_window_key(key)),
            )

        return cls(client, text, lambda: [limit, expiry], bool, window_keys)

    def keys(self, name: str) -> Keys:
        """The Redis keys of the budget ``name`` (the strategy's identifier)."""
        return tuple(self._encode(key) for key in self._keys(name))

    def hit(self, keys: Keys, cost: int = 1) -> asyncio.Future[bool]:
        """Queue one hit of ``cost`` units on the budget at ``keys``: a future of whether
        they are allowed (all of them, or none: ``limits``' own semantics of ``cost``).

        The future fails with the storage's error when Redis does not answer.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((keys, cost, future))
        flusher = self._flusher
        # A flusher of a loop that has since stopped will never run again.
        if flusher is None or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush(loop))
        return future

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._pending:
                # Waiters that gave up (their connection closed) are not sent, nor hits
                # queued in a loop that has since stopped: they cannot be answered there.
                batch = [
                    entry
                    for entry in self._pending[:MAX_BATCH]
                    if not entry[2].done() and entry[2].get_loop() is loop
                ]
                del self._pending[:MAX_BATCH]
                if batch:
                    await self._send(batch)
        except BaseException:  # cancelled, as the loop ends: nobody is left waiting
            self._fail_pending(ConnectionError("the rate-limit flush was cancelled"))
            raise
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            replies = await self._replies(batch)
        except Exception as exc:
            # No answer; the hits queued meanwhile would wait as long for none.
            _fail(batch, exc)
            self._fail_pending(exc)
            return
        except BaseException:
            _fail(batch, ConnectionError("the rate-limit flush was cancelled"))
            raise
        allowed = self._allowed
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # cancelled while the batch was out
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(allowed(reply))

    def _fail_pending(self, error: Exception) -> None:
        loop = asyncio.get_running_loop()
        _fail([entry for entry in self._pending if entry[2].get_loop() is loop], error)
        self._pending.clear()

    async def _replies(self, batch: list[_Entry]) -> list[Any]:
        """The replies to ``batch``'s scripts, in one round trip while Redis has them.

        A reply is an exception for a hit that Redis refused; an exception raised is the
        whole batch's (no answer).
        """
        from redis.exceptions import NoScriptError, ResponseError

        arguments = self._encoded_arguments()
        # Not through limits' script objects (``script(client=pipe)``): a pipeline with
        # scripts asks Redis whether it has them first, a second round trip every time.
        # A NOSCRIPT reply instead says that the command did nothing.
        replies: list[Any]
        if len(batch) == 1:  # redis-py spends less on a lone command than on a pipeline
            keys, cost, _ = batch[0]
            try:
                replies = [
                    await self._client.evalsha(self._sha, len(keys), *keys, *arguments, cost)
                ]
            except ResponseError as exc:
                replies = [exc]
        else:
            replies = await self._pipelined(batch, arguments)
        missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # Redis restarted, or its scripts were flushed: load, and send again
            try:
                # Not in the pipeline: on a cluster, SCRIPT LOAD goes to every primary.
                await self._client.script_load(self._script)
                again = await self._pipelined(
                    [batch[index] for index in missing], self._encoded_arguments()
                )
            except Exception as exc:
                again = [exc for _ in missing]
            for index, reply in zip(missing, again, strict=True):
                replies[index] = reply
        return replies

    async def _pipelined(self, batch: list[_Entry], arguments: list[bytes]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, cost, _ in batch:
            # Not pipe.evalsha, which redis-py refuses in a cluster pipeline; NOSCRIPT replies
            # are handled by the caller.
            pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *arguments, cost)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def _encoded_arguments(self) -> list[bytes]:
        return [self._encode(value) for value in self._arguments()]


def _fail(entries: list[_Entry], error: Exception) -> None:
    for _, _, future in entries:
        if not future.done():
            future.set_exception(error)


def _limits_read() -> bool:
    """Whether the installed ``limits`` is the major version whose internals were read."""
    try:
        version = importlib.metadata.version("limits")
    except importlib.metadata.PackageNotFoundError:
        return False
    return version.split(".", 1)[0] == _LIMITS_MAJOR
