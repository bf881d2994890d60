"""The redis-py clients wsgate builds from a storage URL, with wsgate's timeouts.

One Redis (``redis://``, ``rediss://``, ``unix://``) is reached through a connection pool that
the registry and the rate limits share. A Redis Cluster (``redis+cluster://``) is reached
through redis-py's :class:`~redis.asyncio.cluster.RedisCluster`, and a Sentinel-managed
primary (``redis+sentinel://``) through :class:`~redis.asyncio.sentinel.Sentinel`'s
``master_for``. The URL grammar of the last two is ``limits``': a comma-separated list of
``host:port``, a password before ``@``, and for Sentinel the service name as the path; an
``s`` after ``redis`` (``rediss+cluster://``) asks for TLS.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["TIMEOUTS", "Topology", "client", "connection_pool", "topology"]

# Timeouts
_CONNECT_TIMEOUT: Final = 1.0
"""Seconds to wait for a connection to Redis."""
_READ_TIMEOUT: Final = 2.0
"""Seconds to wait for Redis's answer to one command."""

TIMEOUTS: Final[dict[str, float]] = {
    "socket_connect_timeout": _CONNECT_TIMEOUT,
    "socket_timeout": _READ_TIMEOUT,
}
"""The timeouts every client gets, as redis-py's keyword arguments."""


def connection_pool(url: str) -> ConnectionPool:
    """A redis-py asyncio connection pool for one Redis at ``url``, with wsgate's timeouts.

    A connection attempt gives up after a second and an answer after two, and a failed
    command is retried once at once, on a fresh connection: enough to get past a connection
    that Redis closed when it restarted, never a wait that holds a connect or a message up.
    No connection is made until the first command.
    """
    from redis.asyncio import ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return ConnectionPool.from_url(url, retry=Retry(NoBackoff(), 1), **TIMEOUTS)


@dataclass(frozen=True)
class Topology:
    """What a ``redis+cluster://`` or ``redis+sentinel://`` URL says.

    Attributes:
        mode: ``"cluster"`` or ``"sentinel"``.
        locations: The ``(host, port)`` pairs: cluster nodes to start from, or sentinels.
        tls: Whether the scheme asked for TLS (``rediss+...``).
        auth: ``username`` and ``password`` as the URL gives them, for every connection.
        service: The Sentinel service name (the URL's path); empty for a cluster.
    """

    mode: str
    locations: tuple[tuple[str, int], ...]
    tls: bool
    auth: dict[str, str]
    service: str


def topology(scheme: str, url: str) -> Topology | None:
    """The topology of ``url`` whose scheme (lower case, no ``async+``) is ``scheme``; None
    for one Redis.

    Raises:
        ValueError: for a location without a host or a port, or a Sentinel URL without a
            service name, in a sentence that says what is valid.
    """
    base, plus, mode = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or mode not in ("cluster", "sentinel"):
        return None
    parts = urllib.parse.urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    locations = []
    for location in hosts.split(","):
        try:
            address = urllib.parse.urlsplit(f"//{location.strip()}")
            host, port = address.hostname, address.port
        except ValueError:
            host = port = None
        if not host or port is None:
            raise ValueError(
                f"{location.strip()!r} is not a host:port; write "
                f"'{scheme}://host:port[,host:port...]'"
            )
        locations.append((host, port))
    auth = {}
    if parts.username:
        auth["username"] = urllib.parse.unquote(parts.username)
    if parts.password:
        auth["password"] = urllib.parse.unquote(parts.password)
    service = parts.path.strip("/")
    if mode == "sentinel" and not service:
        raise ValueError(f"it names no service; write '{scheme}://host:port[,...]/service_name'")
    return Topology(mode, tuple(locations), base == "rediss", auth, service)


def client(url: str, shape: Topology | None) -> Redis | RedisCluster:
    """A redis-py asyncio client for ``url`` (without ``async+``), whose :func:`topology` is
    ``shape``, with wsgate's timeouts. No connection is made until the first command.

    Raises:
        ValueError: for a URL that redis-py cannot read.
    """
    from redis.asyncio import Redis

    if shape is None:
        return Redis(connection_pool=connection_pool(url))
    options: dict[str, Any] = {**shape.auth, **TIMEOUTS}
    if shape.tls:
        options["ssl"] = True
    if shape.mode == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(host, port) for host, port in shape.locations]
        return RedisCluster(startup_nodes=nodes, **options)
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(shape.locations), sentinel_kwargs=dict(options), **options
    )
    primary: Redis = sentinel.master_for(shape.service)
    return primary
