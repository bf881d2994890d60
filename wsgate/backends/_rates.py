"""rate_storage: the rate-limit storage that a storage URI names."""

from __future__ import annotations

import importlib.util
from typing import Any, cast

from limits.aio.storage import Storage
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string

from wsgate import _options
from wsgate._window import LocalStorage
from wsgate.backends._factory import invalid_storage, split_scheme
from wsgate.exceptions import ConfigurationError

__all__ = ["rate_storage"]


def rate_storage(uri: str, *, connection_pool: Any = None) -> Storage | LocalStorage:
    """The storage for ``uri``: windows in this process for ``memory://``, else ``limits``'.

    In one process, ``limits``' own memory storage costs 8-12 µs a message; the in-process
    windows (:mod:`wsgate._window`) give the same answers in well under one. On ``limits``'
    Redis storage, the middleware sends the hits made together in one pipeline, with the
    scripts and keys of ``limits``' own strategies; any other storage goes through
    ``limits``' async API, a call per message.

    Accepts what users write, ``memory://``, ``redis://host:6379/0``, ``rediss://...``,
    ``unix:///path/redis.sock``, ``redis+cluster://host:port,...`` or
    ``redis+sentinel://host:port,.../service`` (``rediss+`` for TLS), as well as the
    ``limits`` spelling (``async+redis://...``). A Cluster or a Sentinel gets ``limits``' own
    storage for it, over redis-py's cluster or sentinel client; the hits on it are batched
    too. Redis needs the ``redis`` package (``pip install 'wsgate[redis]'``); no connection
    is made until the first message. A Redis command gives up after a couple of seconds
    rather than hold messages up (see :func:`wsgate.backends.redis.connection_pool`).

    Args:
        connection_pool: A redis-py asyncio connection pool to share with one Redis, such as
            a :class:`~wsgate.backends.redis.RedisRegistry`'s; by default Redis gets its own.
            A Cluster or Sentinel storage always builds its own clients.

    TLS takes redis-py's query parameters on every Redis URL, such as
    ``rediss+cluster://:secret@host:port?ssl_ca_certs=/etc/wsgate/ca.pem`` (see
    :data:`wsgate.backends.redis._pool.TLS_OPTIONS`).

    Raises:
        ConfigurationError: for an unknown scheme, a URL that cannot be read, or a missing
            Redis client.
    """
    scheme, rest = split_scheme(uri)
    if scheme == "memory":
        return LocalStorage()
    if scheme == "unix":
        scheme = "redis+unix"
    options: dict[str, Any] = {"wrap_exceptions": True}
    if scheme.startswith("redis"):
        if importlib.util.find_spec("redis") is None:
            raise ConfigurationError(
                f"storage {_options.redacted_url(uri)!r} needs the Redis client: "
                "pip install 'wsgate[redis]'."
            )
        options["implementation"] = "redispy"  # the client the wsgate[redis] extra installs
        if scheme.endswith(("+cluster", "+sentinel")):
            from wsgate.backends.redis._pool import connection_options, topology

            try:
                shape = topology(scheme, scheme + rest)
            except ValueError as exc:
                raise ConfigurationError(
                    f"storage {_options.redacted_url(uri)!r} is not a Redis URL: {exc}"
                ) from None
            assert shape is not None  # a +cluster or +sentinel scheme
            # The registry's options: credentials (unquoted, which limits does not do),
            # timeouts, and TLS with the URL's query parameters, which limits ignores.
            connection = connection_options(shape)
            options.update(connection)
            # limits has no rediss+ scheme: TLS is an option.
            scheme = scheme.replace("rediss", "redis", 1)
            if scheme.endswith("+sentinel"):
                options["sentinel_kwargs"] = connection
                # Every decision on the primary: a replica may lag behind it.
                options["use_replicas"] = False
        else:
            if connection_pool is None:
                from wsgate.backends.redis import connection_pool as redis_pool

                client_scheme = "unix" if scheme == "redis+unix" else scheme
                try:
                    connection_pool = redis_pool(client_scheme + rest)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"storage {_options.redacted_url(uri)!r} is not a Redis URL: {exc}"
                    ) from None
            options["connection_pool"] = connection_pool
    try:
        storage = storage_from_string(f"async+{scheme}{rest}", **options)
    except LimitsConfigurationError:
        raise invalid_storage(uri) from None
    return cast(Storage, storage)  # an async+ scheme always builds an async storage
