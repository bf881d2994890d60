"""The redis-py connection pool that wsgate's registry and rate limits share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool

__all__ = ["connection_pool"]

# Timeouts
_CONNECT_TIMEOUT: Final = 1.0
"""Seconds to wait for a connection to Redis."""
_READ_TIMEOUT: Final = 2.0
"""Seconds to wait for Redis's answer to one command."""


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
