"""The Redis backend: state shared by every worker process and host (the ``redis`` extra).

What it keeps in Redis (give wsgate a database of its own, such as ``redis://host:6379/1``):

* ``<key>`` (``wsgate:conn:user:alice``): a sorted set of ``<owner>/<connection id>`` entries,
  scored by a counter so that the lowest score is the oldest. It expires ``ttl`` seconds after
  the last worker holding an entry in it stopped refreshing.
* ``wsgate:registry:owners``: a sorted set of worker ids scored by the end of their lease
  (milliseconds, Redis's clock). The entries of a worker whose lease has ended do not count.
* ``wsgate:registry:counts``: worker id -> how many entries it holds, for ``total()``.
* ``wsgate:registry:seq``: the counter that orders entries.
* channel ``wsgate:registry:evict:<owner>``: the connections another worker evicted.
* ``wsgate:rate:...``: the rate-limit budgets, as ``limits``' own strategies keep them.

Each change to the registry is one Lua script (the ``.lua`` files of this package), run
atomically by Redis. Only connects and disconnects talk to Redis for the registry; messages
never do. One background task per process renews the lease every ``ttl / 3`` seconds and
checks this process's entries, and one listens for evictions.

The modules, one concept each: :mod:`.backend` (:class:`RedisBackend`), :mod:`.registry`
(:class:`RedisRegistry`), ``_pool`` (:func:`connection_pool`), ``_scripts`` (the Lua and the
keys), ``_evictions`` (the pub/sub listener) and ``_link`` (the state of the link to Redis).
Importing this package does not import the Redis client; building a registry does.
"""

from __future__ import annotations

from wsgate.backends.base import BACKEND_POLICIES, BackendPolicy
from wsgate.backends.redis._pool import connection_pool
from wsgate.backends.redis.backend import RedisBackend
from wsgate.backends.redis.registry import RedisRegistry

__all__ = ["BACKEND_POLICIES", "BackendPolicy", "RedisBackend", "RedisRegistry", "connection_pool"]
