"""Revocations in Redis: a key per revoked user or token, and a pub/sub channel to tell workers.

* ``wsgate:{u:<user>}:revoked`` and ``wsgate:{j:<jti>}:revoked``: the end of the revocation
  (a Unix time, in seconds), expiring with it. The braces are a hash tag: each key is one
  slot of a Redis Cluster.
* channel ``wsgate:revoke``: ``{"key": "u:alice", "until": 1767225600.0}`` (JSON), published
  once the key is written. PUBLISH answers how many listeners received it: one per worker.

Each worker listens on the channel in a task of its own, started with its first handshake.
A message closes the worker's connections of that key at once, and is kept until it ends, so
that the worker refuses that user's next handshakes without asking Redis.

How exact it is: a handshake whose user this worker does not know to be revoked asks Redis
(one round trip, the keys of the user and of the token), so new handshakes are refused even
if a message was lost. A message lost while a worker was not listening (Redis restarting, a
network cut) would leave that worker's open connections of the user open: when the listener
subscribes again, the worker asks Redis about every user and token it holds connections of,
and closes the revoked ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from wsgate.backends.base import BackendPolicy
from wsgate.exceptions import BackendUnavailable
from wsgate.revocation import Revocations

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["CHANNEL", "RedisRevocations", "redis_key"]

logger = logging.getLogger("wsgate.redis")

CHANNEL: Final = "wsgate:revoke"
_PERIOD: Final = 1.0
"""Seconds one wait for a message lasts: how soon the listener sees it must stop."""
_RETRY: Final = 1.0
"""Seconds between two attempts to subscribe while Redis cannot be reached."""
_WARNING_PERIOD: Final = 60.0


def redis_key(key: str) -> str:
    """The Redis key of a revocation key: ``u:alice`` -> ``wsgate:{u:alice}:revoked``."""
    return f"wsgate:{{{key}}}:revoked"


class RedisRevocations(Revocations):
    """Revocations shared by every worker on one Redis.

    Args:
        client: The Redis client (the registry's: one set of connections to Redis).
        policy: ``"fail_open"`` lets a handshake in while Redis cannot say whether its user
            is revoked (a warning is logged at most once a minute); ``"fail_closed"`` refuses
            it with 1013 ``backend_unavailable``.
        errors: The exceptions by which the client says Redis cannot be reached.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        policy: BackendPolicy,
        errors: tuple[type[BaseException], ...],
    ) -> None:
        super().__init__()
        self.client = client
        self.policy = policy
        self.errors = errors
        self._until: dict[str, float] = {}  # what the channel told, until it ends
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._warned_at = -math.inf

    async def revoke(self, key: str, until: float) -> int:
        milliseconds = max(math.ceil((until - time.time()) * 1000), 1)
        message = orjson.dumps({"key": key, "until": until})
        try:
            await self.client.set(redis_key(key), repr(until), px=milliseconds)
            receivers = await self.client.publish(CHANNEL, message)
        except self.errors as exc:
            raise BackendUnavailable(f"Redis did not take the revocation of {key}: {exc}") from exc
        self._told(key, until)  # at once here; the channel's copy changes nothing
        return int(receivers)

    async def revoked(self, keys: tuple[str, ...]) -> bool:
        self._listen()
        if self.revoked_here(keys):
            return True
        try:
            values = await self._fetch(keys)
        except self.errors as exc:
            if self.policy == "fail_closed":
                raise BackendUnavailable(
                    f"Redis cannot say whether {keys[0]} is revoked: {exc}"
                ) from exc
            self._warn(exc)
            return False
        now = time.time()
        revoked = False
        for key, until in zip(keys, values, strict=True):
            if until is not None and until > now:
                self._until[key] = until
                revoked = True
        return revoked

    def revoked_here(self, keys: tuple[str, ...]) -> bool:
        if not self._until:
            return False
        now = time.time()
        for key in keys:
            until = self._until.get(key)
            if until is None:
                continue
            if until > now:
                return True
            del self._until[key]
        return False

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Hearing of revocations

    def _listen(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="wsgate-redis-revocations"
            )

    async def _run(self) -> None:
        """Listen until closed, subscribing again a second after Redis is lost."""
        subscribed_before = False
        while not self._closed:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if subscribed_before:
                    await self._catch_up()
                subscribed_before = True
                while not self._closed:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_PERIOD
                    )
                    if message is not None and message["type"] == "message":
                        self._received(message["data"])
            except self.errors as exc:
                self._warn(exc)
            finally:
                with contextlib.suppress(*self.errors):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._closed:
                await asyncio.sleep(_RETRY)

    def _received(self, data: Any) -> None:
        try:
            told = orjson.loads(data)
            key, until = told["key"], float(told["until"])
        except (ValueError, TypeError, KeyError):
            logger.warning("ignored a revocation message wsgate did not send: %r", data)
            return
        if isinstance(key, str):
            self._told(key, until)

    def _told(self, key: str, until: float) -> None:
        if until > time.time():
            self._until[key] = until
            self.close_local(key)

    async def _catch_up(self) -> None:
        """Ask Redis about every key this worker holds connections of: what was revoked
        while the listener was away closes them now."""
        keys = tuple(self._connections)
        if not keys:
            return
        now = time.time()
        for key, until in zip(keys, await self._fetch(keys), strict=True):
            if until is not None and until > now:
                self._told(key, until)

    async def _fetch(self, keys: tuple[str, ...]) -> list[float | None]:
        """The end of each key's revocation in Redis, or None: one round trip, each key
        read on its own slot."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(redis_key(key))
            values = await pipe.execute()
        return [None if value is None else float(value) for value in values]

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARNING_PERIOD:
            return
        self._warned_at = now
        logger.warning(
            "the revocation store in Redis failed (%s: %s); handshakes are %s until it "
            "answers, and revocations made meanwhile reach this worker when it does",
            type(exc).__name__,
            exc,
            "refused" if self.policy == "fail_closed" else "let in unchecked",
        )
