"""Evictions handed over through Redis lists: the connections another worker evicted from this
one.

A worker that evicts another worker's entry pushes ``[key, connection id]`` (JSON) on that
worker's list, ``wsgate:registry:evict:<owner>``, once the add script has answered: a script
may only touch keys of one slot on a Redis Cluster, and the list lives on the owner's. The
owner pops its list with a blocking pop. A message waits in the list while its owner is
briefly away, and the list expires ``ttl`` after the last push, so a dead worker's list goes
too. A message that never got pushed (the evicting worker died just after the script, or
Redis failed in between) is found by the owner's next sync instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

import orjson

from wsgate.backends.redis._scripts import EVICTIONS

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["EvictionListener", "push"]

logger = logging.getLogger("wsgate.redis")

_WAIT: Final = 1
"""Seconds one blocking pop waits for a message: less than a command's read timeout."""


async def push(client: Redis | RedisCluster, key: str, entries: Iterable[str], ttl_ms: int) -> None:
    """Tell the workers holding ``entries`` (``"<owner>/<connection id>"``, evicted under
    ``key``) to close them: one push a worker, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        owner, _, connection_id = entry.partition("/")
        pipe.rpush(EVICTIONS + owner, orjson.dumps([key, connection_id]))
        pipe.pexpire(EVICTIONS + owner, ttl_ms)
    await pipe.execute()


class EvictionListener:
    """Pops one worker's eviction list, and hands on what arrives.

    Args:
        client: The Redis client.
        owner: The worker's id.
        evicted: Called with ``(key, connection id)`` for each eviction that arrives.
        errors: The exceptions by which the client says Redis cannot be reached.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        owner: str,
        *,
        evicted: Callable[[str, str], None],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self.client = client
        self.list = EVICTIONS + owner
        self.evicted = evicted
        self.errors = errors

    async def run(self, *, retry: float, running: Callable[[], bool]) -> None:
        """Listen until ``running()`` is false, trying again ``retry`` seconds after Redis is
        lost."""
        while running():
            try:
                popped = await self.client.blpop([self.list], timeout=_WAIT)
            except self.errors:
                # The refresher reports the outage; listen again once Redis answers.
                await asyncio.sleep(retry)
                continue
            if popped is None:
                continue
            try:
                key, connection_id = orjson.loads(popped[1])
            except (ValueError, TypeError):
                logger.warning("ignored a message wsgate did not send: %r", popped[1])
                continue
            self.evicted(key, connection_id)
