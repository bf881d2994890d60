"""Evictions told over pub/sub: the connections another worker evicted from this one.

The add script publishes ``[key, connection id]`` (JSON) on ``wsgate:registry:evict:<owner>``
when it pushes out an entry that another worker holds. A message published while this worker
was not subscribed is lost; the registry's next sync finds that eviction instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from wsgate.backends.redis._scripts import CHANNEL

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["EvictionListener"]

logger = logging.getLogger("wsgate.redis")


class EvictionListener:
    """Listens on one worker's eviction channel, and hands on what arrives.

    Args:
        client: The Redis client.
        owner: The worker's id.
        evicted: Called with ``(key, connection id)`` for each eviction that arrives.
        resubscribed: Called each time the listener subscribed again after losing Redis:
            what was published meanwhile must be looked for another way.
        errors: The exceptions by which the client says Redis cannot be reached.
    """

    def __init__(
        self,
        client: Redis,
        owner: str,
        *,
        evicted: Callable[[str, str], None],
        resubscribed: Callable[[], None],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self.client = client
        self.channel = CHANNEL + owner
        self.evicted = evicted
        self.resubscribed = resubscribed
        self.errors = errors

    async def run(self, *, period: float, retry: float, running: Callable[[], bool]) -> None:
        """Listen until ``running()`` is false, subscribing again ``retry`` seconds after
        Redis is lost; ``period`` is how long one wait for a message lasts, in seconds."""
        subscribed_before = False
        while running():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if subscribed_before:
                    self.resubscribed()
                subscribed_before = True
                while running():
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=period
                    )
                    if message is None or message["type"] != "message":
                        continue
                    try:
                        key, connection_id = orjson.loads(message["data"])
                    except (ValueError, TypeError):
                        logger.warning("ignored a message wsgate did not send: %r", message)
                        continue
                    self.evicted(key, connection_id)
            except self.errors:
                pass  # the refresher reports the outage; listen again once Redis answers
            finally:
                with contextlib.suppress(*self.errors):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(retry)
