"""Backends: where a gate keeps the state its connections share.

A :class:`Backend` holds a connection registry and a rate-limit storage, and says what it can
do: whether it is shared by several processes, how it is doing (:meth:`Backend.health`), how
it hands over evictions that another process decided (:meth:`Backend.on_eviction`), and how to
release it (:meth:`Backend.aclose`). :func:`backend_from_uri` builds one from a storage URI:

* ``memory://``: :class:`MemoryBackend`, this process's memory (the default);
* ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` (a Redis Cluster),
  ``redis+sentinel://`` (the primary Sentinel names), the last two also as ``rediss+...``:
  :class:`~wsgate.backends.redis.RedisBackend`, shared by every worker process and host
  (the ``redis`` extra; imported only when used).

A backend that cannot answer and is told to fail closed raises :class:`BackendUnavailable`,
which the connection-limit layer turns into close 1013 ``backend_unavailable`` for the new
connection.
"""

from __future__ import annotations

from wsgate.backends._factory import SCHEMES, backend_from_uri, backend_kind
from wsgate.backends._rates import rate_storage
from wsgate.backends.base import BACKEND_POLICIES, Backend, BackendPolicy
from wsgate.backends.memory import MemoryBackend
from wsgate.exceptions import BackendUnavailable

__all__ = [
    "BACKEND_POLICIES",
    "SCHEMES",
    "Backend",
    "BackendPolicy",
    "BackendUnavailable",
    "MemoryBackend",
    "backend_from_uri",
    "backend_kind",
    "rate_storage",
]
