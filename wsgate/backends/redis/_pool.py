"""The redis-py clients wsgate builds from a storage URL, with wsgate's timeouts.

One Redis (``redis://``, ``rediss://``, ``unix://``) is reached through a connection pool that
the registry and the rate limits share. A Redis Cluster (``redis+cluster://``) is reached
through redis-py's :class:`~redis.asyncio.cluster.RedisCluster`, and a Sentinel-managed
primary (``redis+sentinel://``) through :class:`~redis.asyncio.sentinel.Sentinel`'s
``master_for``. The URL grammar of the last two is ``limits``': a comma-separated list of
``host:port``, a password before ``@``, and for Sentinel the service name as the path; an
``s`` after ``redis`` (``rediss+cluster://``) asks for TLS.

TLS is set up by the query parameters of redis-py's ``rediss://`` URLs, read the same way on
all three: ``ssl_ca_certs`` (the CA file to trust, for a private CA), ``ssl_cert_reqs``
(``required``, the default, ``optional`` or ``none``), ``ssl_check_hostname``
(``true``/``false``), and ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate, for a
server that asks for one). :func:`connection_options` hands them to every connection wsgate
opens: the registry's client, the rate-limit storage's, and the revocation listener's.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = [
    "TIMEOUTS",
    "TLS_OPTIONS",
    "Topology",
    "client",
    "connection_options",
    "connection_pool",
    "topology",
]

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


def _file(name: str, value: str) -> str:
    if not os.path.isfile(value):
        raise ValueError(f"{name}={value!r} names no file; give the path of a PEM file")
    return value


def _cert_reqs(name: str, value: str) -> str:
    if value not in ("required", "optional", "none"):
        raise ValueError(f"{name} must be 'required', 'optional' or 'none', not {value!r}")
    return value


def _flag(name: str, value: str) -> bool:
    flags = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if value.lower() not in flags:
        raise ValueError(f"{name} must be 'true' or 'false', not {value!r}")
    return flags[value.lower()]


TLS_OPTIONS: Final[dict[str, Callable[[str, str], object]]] = {
    "ssl_ca_certs": _file,
    "ssl_cert_reqs": _cert_reqs,
    "ssl_check_hostname": _flag,
    "ssl_certfile": _file,
    "ssl_keyfile": _file,
}
"""The TLS query parameters of a storage URL, each with what reads and checks its value."""


def _tls_options(scheme: str, query: str, *, only_tls: bool) -> dict[str, object]:
    """The TLS options in the query string of a URL whose scheme is ``scheme``, checked.

    Args:
        only_tls: Refuse any other parameter (a cluster or Sentinel URL); one Redis leaves
            the others to redis-py.

    Raises:
        ValueError: for a parameter that is not one of :data:`TLS_OPTIONS` (with
            ``only_tls``), a bad value, or a TLS option on a URL without TLS.
    """
    options: dict[str, object] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        read = TLS_OPTIONS.get(name)
        if read is None:
            if only_tls:
                raise ValueError(
                    f"{name!r} is not a query parameter wsgate reads on a cluster or Sentinel "
                    f"URL; it reads {', '.join(TLS_OPTIONS)}"
                )
            continue
        options[name] = read(name, value)
    if options and scheme.partition("+")[0] != "rediss":
        raise ValueError(
            f"{', '.join(options)} set(s) up TLS, which a '{scheme}://' URL does not use; "
            "TLS takes 'rediss://', 'rediss+cluster://' or 'rediss+sentinel://'"
        )
    return options


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

    parts = urllib.parse.urlsplit(url)
    _tls_options(parts.scheme.lower(), parts.query, only_tls=False)  # redis-py reads them
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
        tls_options: The TLS query parameters (:data:`TLS_OPTIONS`), read.
    """

    mode: str
    locations: tuple[tuple[str, int], ...]
    tls: bool
    auth: dict[str, str]
    service: str
    tls_options: dict[str, object] = field(default_factory=dict)


def topology(scheme: str, url: str) -> Topology | None:
    """The topology of ``url`` whose scheme (lower case, no ``async+``) is ``scheme``; None
    for one Redis.

    Raises:
        ValueError: for a location without a host or a port, a Sentinel URL without a
            service name, or a query parameter that is not a TLS option of
            :data:`TLS_OPTIONS` (or is one on a URL without TLS), in a sentence that says
            what is valid.
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
    tls_options = _tls_options(scheme, parts.query, only_tls=True)
    return Topology(mode, tuple(locations), base == "rediss", auth, service, tls_options)


def connection_options(shape: Topology) -> dict[str, Any]:
    """redis-py's keyword arguments for every connection to a node or Sentinel of
    ``shape``: the URL's credentials, wsgate's timeouts, TLS with its options, and with
    Sentinel, one retry at once (see :func:`connection_pool`)."""
    options: dict[str, Any] = {**shape.auth, **TIMEOUTS}
    if shape.tls:
        options["ssl"] = True
        options.update(shape.tls_options)
    if shape.mode == "sentinel":
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # As on one Redis: one retry, at once. redis-py's default for a client (three,
        # backing off for seconds) held each command five seconds while the Sentinels
        # refused the password. A cluster client's retry is its own, and answers at once.
        options["retry"] = Retry(NoBackoff(), 1)
    return options


def client(url: str, shape: Topology | None) -> Redis | RedisCluster:
    """A redis-py asyncio client for ``url`` (without ``async+``), whose :func:`topology` is
    ``shape``, with wsgate's timeouts. No connection is made until the first command.

    Raises:
        ValueError: for a URL that redis-py cannot read.
    """
    from redis.asyncio import Redis

    if shape is None:
        return Redis(connection_pool=connection_pool(url))
    options = connection_options(shape)
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
