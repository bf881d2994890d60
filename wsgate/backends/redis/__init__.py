"""The Redis backend: state shared by every worker process and host (the ``redis`` extra).

One Redis (``redis://``, ``rediss://``, ``unix://``), a Redis Cluster (``redis+cluster://``)
or the primary that Sentinel names (``redis+sentinel://``), through redis-py's own clients.

What it keeps in Redis, for a registry key ``K`` such as ``wsgate:conn:user:alice`` (give
wsgate a database of its own, such as ``redis://host:6379/1``, where there are databases):

* ``{K}``: a sorted set of ``<owner>/<connection id>`` entries, oldest first (each new one
  is scored one above the newest). The braces make ``K`` the hash tag, so that every key of
  one user lives in one slot, on one shard of a cluster.
* ``{K}:leases``: owner -> the end of that worker's lease under ``K`` (milliseconds, by the
  clock of the Redis holding it). An entry whose owner's lease here has ended does not
  count, and the next add drops it. Both keys expire ``ttl`` after the last lease written.
* ``wsgate:registry:evict:<owner>``: a list, the connections other workers evicted from
  that worker, as ``[K, connection id]``; it expires ``ttl`` after the last push.
* ``wsgate:registry:workers``: owner -> ``"<end of its lease> <connections held>"``, read by
  ``total()`` alone.
* ``LIMITS:...``: the rate-limit budgets, as ``limits``' own strategies keep them.
* ``wsgate:revocations``: a sorted set of the revoked users (``u:<user>``) and tokens
  (``j:<jti>``), scored by the end of each revocation, written by ``revoke.lua`` together
  with a message on the channel ``wsgate:revoke``; each worker keeps a copy, loaded when it
  subscribes (``_revocations``).

Each change to the registry is one Lua script (the ``.lua`` files of this package), run
atomically by Redis on the keys of one slot. Only connects and disconnects talk to Redis for
the registry; messages never do.

Leases: an add renews its worker's lease under ``K``, and reads the leases under ``K`` only:
a script cannot read another slot. Every ``ttl / 3`` seconds, one task per process renews
the worker's lease under every key where it holds entries (one script per slot, in one
pipeline), pushes the entries Redis has not seen, and finds the entries Redis no longer has.
A worker that dies stops renewing, so its entries stop counting at most ``ttl`` after its
last renewal, on whichever shard they live. A key where the worker's own lease is missing
was forgotten by Redis (a restart without persistence, or a worker that missed its renewals
for longer than ``ttl``): its entries are registered again.

Evictions: a script may not push to the owner's list (another slot), so the add script
answers with the entries it evicted, and the evicting worker pushes each to its owner's
list, in one pipeline, from Python. The owner pops its list with a blocking pop and closes
the connection with 4008. A push that never happens (the evicting worker died in between, or
Redis failed) is made up for by the owner's next renewal, which finds its entry gone while
its lease is there, and closes the connection: within ``ttl / 3`` seconds.

The modules, one concept each: :mod:`.backend` (:class:`RedisBackend`), :mod:`.registry`
(:class:`RedisRegistry`), ``_pool`` (:func:`connection_pool` and the clients for each URL),
``_scripts`` (the Lua and the keys), ``_evictions`` (the eviction lists), ``_revocations``
(the revoked users and tokens, and the listener that keeps a worker's copy) and ``_link``
(the state of the link to Redis). Importing this package does not import the Redis client;
building a registry does.
"""

from __future__ import annotations

from wsgate.backends.base import BACKEND_POLICIES, BackendPolicy
from wsgate.backends.redis._pool import connection_pool
from wsgate.backends.redis.backend import RedisBackend
from wsgate.backends.redis.registry import RedisRegistry

__all__ = ["BACKEND_POLICIES", "BackendPolicy", "RedisBackend", "RedisRegistry", "connection_pool"]
