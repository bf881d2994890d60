"""Revocations in Redis: one sorted set of the active revocations, a channel that tells the
workers, and a copy of the set in each worker, which handshakes read without asking Redis.

* ``wsgate:revocations``: a sorted set, member ``u:<user>`` or ``j:<jti>``, score the end of
  the revocation (a Unix time, in seconds). It is one key, so one slot of a Redis Cluster,
  and it expires with its last revocation.
* channel ``wsgate:revoke``: ``{"key": "u:alice", "until": 1767225600.0}`` (JSON).

A revocation is one script (``revoke.lua``), atomic on the set's slot: ZADD, drop the ended
members, move the set's expiry, and PUBLISH, whose count (the subscribers on that node) is
what ``python -m wsgate revoke`` reports.

Each worker keeps its copy current in a task of its own, started by its first handshake:
it subscribes to the channel, then loads the active revocations (ZRANGEBYSCORE now +inf),
which replace its copy, then applies each message as it arrives, closing its connections
of that key. Subscribing first means a revocation is either in the load or in a message
after it. When the subscription drops and comes back (a reconnection of redis-py's own, or
one of the task's), the worker loads again: a revocation published while it was not
listening is found then. The task tries again after 0.1 s, doubling up to
:data:`_RETRY_MAX` (1 s), while Redis cannot be reached.

A handshake reads the copy only: no round trip, and no wait while Redis is down. Until the
first load has succeeded, the backend policy decides (``fail_open`` lets the handshake in,
``fail_closed`` refuses it with 1013); the handshakes that arrive during the first attempt
wait for it, bounded by the connect and read timeouts, and the later ones never wait.

Where the task subscribes:

* one Redis: on the registry's connection pool;
* Sentinel: on the registry's client, whose connections ask the Sentinels for the primary
  each time they connect. Sentinel closes the clients of a demoted primary, but one that
  reconnects at once may be told the old address again, so the listener also asks the
  Sentinels every :data:`_FOLLOW_PERIOD` (5 s) and subscribes again when the primary moved.
  Meanwhile, a demoted primary replicates the new one, PUBLISH included: nothing is lost.
* Redis Cluster: on a plain :class:`redis.asyncio.Redis` connection to one node, with the
  cluster URL's credentials, TLS and TLS options (``_pool.connection_options``), first the
  node that serves ``wsgate:revocations`` and, after each failure, the next node. On a
  cluster, PUBLISH on any node is broadcast to every node, so a plain SUBSCRIBE anywhere
  receives every revocation; and since the script
  publishes on the set's node, where every worker subscribes while it answers, its count is
  the workers told. redis-py's ``RedisCluster.pubsub()`` is not used: it routes SUBSCRIBE by
  the channel's slot and fails at shutdown (a KeyError in redis-py 8.1); sharded pub/sub
  (SSUBSCRIBE) reaches only the shard that owns the channel, so the listener would have to
  follow slot moves itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

import orjson

from wsgate.backends.base import BackendPolicy
from wsgate.backends.redis._pool import TIMEOUTS, Topology, connection_options
from wsgate.exceptions import BackendUnavailable
from wsgate.revocation import Revocations

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import Connection

__all__ = ["CHANNEL", "INDEX", "RedisRevocations"]

logger = logging.getLogger("wsgate.redis")

INDEX: Final = "wsgate:revocations"
"""The sorted set of the active revocations: member ``u:<user>`` or ``j:<jti>``, score the
end."""
CHANNEL: Final = "wsgate:revoke"
REVOKE: Final = files(__package__).joinpath("revoke.lua").read_text(encoding="utf-8")

# Timeouts
_PERIOD: Final = 1.0
"""Seconds one wait for a message lasts: how soon the listener sees it must stop."""
_RETRY_FIRST: Final = 0.1
"""Seconds before the first new attempt to subscribe after a failure; it doubles."""
_RETRY_MAX: Final = 1.0
"""Seconds between two attempts to subscribe, at most, while Redis cannot be reached."""
_FIRST_WAIT: Final = TIMEOUTS["socket_connect_timeout"] + TIMEOUTS["socket_timeout"]
"""Seconds the handshakes wait for the first load, at most: a connect and an answer."""
_FOLLOW_PERIOD: Final = 5.0
"""Seconds between two questions to Sentinel about where the primary is, at most."""
_STOP_TIMEOUT: Final = 2.0
"""Seconds aclose() waits for the listener to stop."""
_WARNING_PERIOD: Final = 60.0


class RedisRevocations(Revocations):
    """Revocations shared by every worker on one Redis, a Cluster, or Sentinel's primary.

    Args:
        client: The Redis client (the registry's: one set of connections to Redis).
        topology: What a cluster or Sentinel URL says; None for one Redis.
        shown_url: The URL to name in log lines, its password redacted.
        policy: What a handshake meets before the first load from Redis has succeeded:
            ``"fail_open"`` lets it in (a warning is logged at most once a minute);
            ``"fail_closed"`` refuses it with 1013 ``backend_unavailable``.
        errors: The exceptions by which the client says Redis cannot be reached.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        topology: Topology | None,
        shown_url: str,
        policy: BackendPolicy,
        errors: tuple[type[BaseException], ...],
    ) -> None:
        super().__init__()
        self.client = client
        self.topology = topology
        self.shown_url = shown_url
        self.policy = policy
        self.errors = errors
        self._script = client.register_script(REVOKE)
        self._loaded = False
        self._attempted = asyncio.Event()  # the first attempt to load is over
        self._reload = False  # redis-py connected the subscription again by itself
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._lost_at: float | None = None  # when the listener lost Redis (monotonic)
        self._warned_at = {"lost": -math.inf, "unchecked": -math.inf}

    async def revoke(self, key: str, until: float) -> int:
        message = orjson.dumps({"key": key, "until": until})
        try:
            receivers = await self._script(
                keys=[INDEX], args=[key, repr(until), repr(time.time()), CHANNEL, message]
            )
        except self.errors as exc:
            raise BackendUnavailable(f"Redis did not take the revocation of {key}: {exc}") from exc
        self._told(key, until)  # at once here; the channel's copy changes nothing
        return int(receivers)

    async def revoked(self, keys: tuple[str, ...]) -> bool:
        if not self._loaded:
            self._listen()
            if not self._attempted.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._attempted.wait(), timeout=_FIRST_WAIT)
            if not self._loaded:
                return self._unknown(keys)
        return self.revoked_here(keys)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: before Python 3.12 a timeout inside redis-py can swallow the
            # cancellation, and the loop then ends at its next turn, on _closed.
            await asyncio.wait([task], timeout=_STOP_TIMEOUT)

    def _unknown(self, keys: tuple[str, ...]) -> bool:
        """The policy's answer for a handshake before the first load."""
        if self.policy == "fail_closed":
            raise BackendUnavailable(
                f"the revocations are not loaded from Redis at {self.shown_url} yet, and the "
                f"backend policy is fail_closed: {keys[0]} is refused until they are."
            )
        self._warn(
            "unchecked",
            "the revocations are not loaded from Redis at %s yet; fail_open: handshakes are "
            "let in unchecked until they are, and the revoked ones among them are closed then",
            self.shown_url,
        )
        return False

    # Hearing of revocations

    def _listen(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="wsgate-redis-revocations"
            )

    async def _run(self) -> None:
        """Subscribe, load, and apply the messages, until closed; subscribe and load again
        after Redis is lost, trying again after 0.1 s, 0.2 s... and at most every second."""
        failures = 0
        while not self._closed:
            own: Redis | None = None
            pubsub: PubSub | None = None
            try:
                own, pubsub = await self._subscribe(failures)
                await self._load()
                failures = 0
                asked = time.monotonic()
                while not self._closed:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_PERIOD
                    )
                    if self._reload:
                        await self._load()
                    if message is not None and message["type"] == "message":
                        self._received(message["data"])
                    if time.monotonic() - asked >= _FOLLOW_PERIOD:
                        asked = time.monotonic()
                        if await self._moved(pubsub):
                            break  # subscribe again, on the new primary
            except self.errors as exc:
                failures += 1
                self._lost(exc)
            except Exception:  # a bug must not stop the listener: the copy would go stale
                failures += 1
                logger.exception("the revocation listener failed")
            finally:
                self._attempted.set()
                await self._release(own, pubsub)
            if not self._closed:
                await asyncio.sleep(min(_RETRY_FIRST * 2 ** (failures - 1), _RETRY_MAX))

    async def _subscribe(self, failures: int) -> tuple[Redis | None, PubSub]:
        """A subscription to the channel: on the client, or on a connection of its own to
        a cluster node (returned first, to be closed with it)."""
        from redis.asyncio import Redis
        from redis.asyncio.cluster import RedisCluster
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        own = None
        if isinstance(self.client, RedisCluster) and self.topology is not None:
            host, port = await self._node(self.client, self.topology, failures)
            # No retry: a node that fails is left for the next one.
            options = connection_options(self.topology)
            own = Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **options)
            pubsub = own.pubsub(ignore_subscribe_messages=True)
        else:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
        except BaseException:
            await self._release(own, pubsub)
            raise
        if pubsub.connection is not None:
            pubsub.connection.register_connect_callback(self._reconnected)
        return own, pubsub

    async def _release(self, own: Redis | None, pubsub: PubSub | None) -> None:
        """Close a subscription, and the node connection it was made on."""
        with contextlib.suppress(*self.errors):
            if pubsub is not None:
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._reconnected)
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            if own is not None:
                await own.aclose()

    @staticmethod
    async def _node(cluster: RedisCluster, shape: Topology, failures: int) -> tuple[str, int]:
        """The cluster node to subscribe on: the one that serves :data:`INDEX`, then, after
        each failure, the next one."""
        await cluster.initialize()  # at once when the client knows the cluster
        nodes = sorted((node.host, int(node.port)) for node in cluster.get_nodes())
        nodes = nodes or sorted(shape.locations)
        home = cluster.get_node_from_key(INDEX)
        if home is not None and (home.host, int(home.port)) in nodes:
            nodes.remove((home.host, int(home.port)))
            nodes.insert(0, (home.host, int(home.port)))
        return nodes[failures % len(nodes)]

    async def _moved(self, pubsub: PubSub) -> bool:
        """Whether Sentinel names another primary than the one ``pubsub`` listens on; always
        False without Sentinel, or while it does not answer."""
        from redis.asyncio.sentinel import SentinelConnectionPool

        pool = getattr(self.client, "connection_pool", None)
        if not isinstance(pool, SentinelConnectionPool) or pubsub.connection is None:
            return False
        try:
            host, port = await pool.get_master_address()
        except self.errors:
            return False
        here = (getattr(pubsub.connection, "host", None), getattr(pubsub.connection, "port", None))
        return here != (host, int(port))

    async def _reconnected(self, connection: Connection) -> None:
        """redis-py connected the subscription again, and subscribed again: what was
        published meanwhile is missed, so load again."""
        self._reload = True

    async def _load(self) -> None:
        """Replace the copy with Redis's active revocations, and close this worker's
        connections of each: those let in before it knew, or revoked while it was away."""
        self._reload = False
        now = time.time()
        rows: list[Any] = await self.client.zrangebyscore(
            INDEX, f"({now!r}", "+inf", withscores=True
        )
        # Redis holds the truth: what it forgot (a restart without persistence) goes here too.
        self._until = {member.decode(): float(until) for member, until in rows}
        self.close_local(*self._until)  # one pass over this worker's connections
        self._loaded = True
        self._attempted.set()
        if self._lost_at is not None:
            logger.warning(
                "the revocation listener hears Redis at %s again after %.1f s; %d active "
                "revocation(s) loaded",
                self.shown_url,
                time.monotonic() - self._lost_at,
                len(rows),
            )
            self._lost_at = None
            self._warned_at["lost"] = -math.inf

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

    def _lost(self, exc: BaseException) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        self._warn(
            "lost",
            "the revocation listener cannot reach Redis at %s (%s: %s); it tries again every "
            "second at most, and loads the revocations made meanwhile when it subscribes again",
            self.shown_url,
            type(exc).__name__,
            exc,
        )

    def _warn(self, what: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at[what] >= _WARNING_PERIOD:
            self._warned_at[what] = now
            logger.warning(message, *args)
