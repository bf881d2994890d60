"""RateLimitMiddleware on a real Redis: hits go out together, in pipelines, with the scripts
and keys of ``limits``' own strategies, so that plain ``limits`` users share the budgets."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from limits.aio.storage import (
    MemoryStorage,
    RedisStorage,
    Storage,
)
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.storage import storage_from_string
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from tests.middleware.test_ratelimit import echo  # the same endpoint, on Redis here
from tests.redis.server import HOST, RedisServer, eventually, free_port
from wsgate._choices import RateStrategy
from wsgate.backends import _ratebatch
from wsgate.backends._ratebatch import MAX_BATCH, RedisHits
from wsgate.middleware.ratelimit import RateLimitMiddleware, rate_storage
from wsgate.testing import LiveServer, WSClient

pytestmark = pytest.mark.anyio

STRATEGIES: dict[RateStrategy, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


# Every Redis storage a test makes, whose connections are closed when it ends.
opened: list[RedisStorage] = []


Execute = Callable[[], Awaitable[Any]]


def intercept_pipelines(
    monkeypatch: pytest.MonkeyPatch,
    batch: RedisHits,
    hook: Callable[[Any, Execute], Awaitable[Any]],
) -> None:
    """Run every pipeline the batcher sends through ``hook(pipe, execute)``; ``execute()``
    sends the pipeline to Redis, and ``hook`` may call it or not."""
    client: Any = batch._client
    pipeline = client.pipeline

    def opened(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        async def hooked(*args: Any, **kwargs: Any) -> Any:
            return await hook(pipe, lambda: execute(*args, **kwargs))

        pipe.execute = hooked
        return pipe

    monkeypatch.setattr(client, "pipeline", opened)


def limited(url: str, name: str, **options: Any) -> RateLimitMiddleware:
    """A middleware on Redis whose connections all draw from the budget ``name``."""
    if "storage" not in options:
        options["storage"] = rate_storage(url)
        opened.append(options["storage"])
    return RateLimitMiddleware(echo, key=lambda scope: name, **options)


def batcher(url: str, **options: Any) -> RedisHits:
    """The pipelined hits of a middleware on Redis, for the tests that drive them directly."""
    batch = limited(url, "unused", **options).batch
    assert batch is not None
    return batch


def plain(url: str, strategy: RateStrategy) -> RateLimiter:
    """What another process that uses ``limits`` alone has: its strategy on its own client."""
    storage = storage_from_string(f"async+{url}", implementation="redispy")
    assert isinstance(storage, RedisStorage)
    opened.append(storage)
    return STRATEGIES[strategy](storage)


def identifier(name: str) -> str:
    """What the middleware hands ``limits`` for a budget named ``name`` by its key function."""
    return f"wsgate:rate:key:{name}"


def fresh() -> str:
    return f"batch-{uuid.uuid4().hex}"


Serve = Callable[[RateLimitMiddleware], LiveServer]


async def close(storage: object) -> None:
    """Close a Redis storage's connections, in the loop that opened them."""
    if isinstance(storage, RedisStorage):
        client: Any = storage.bridge.storage  # type: ignore[attr-defined]
        await client.aclose()
        await client.connection_pool.disconnect()


@pytest.fixture(autouse=True)
async def close_storages() -> AsyncIterator[None]:
    """Close the connections that the test's storages opened in its loop (a server's close
    theirs when it stops, first)."""
    yield
    while opened:
        await close(opened.pop())


@pytest.fixture
def server_of() -> Iterator[Serve]:
    """Serve a middleware at /ws over real sockets; every server stops with the test, and
    closes its storage's connections as it does."""
    servers: list[LiveServer] = []

    def serve(middleware: RateLimitMiddleware) -> LiveServer:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await close(middleware.storage)

        app = Starlette(routes=[WebSocketRoute("/ws", middleware)], lifespan=lifespan)
        live = LiveServer(app)
        live.start()
        servers.append(live)
        return live

    yield serve
    for live in servers:
        live.stop()


class RedisCounters:
    """Redis's own counters, read on one connection that stays open: how many commands of
    a kind ran, and how many reads (requests arriving, a pipeline being one) it processed."""

    def __init__(self, server: RedisServer) -> None:
        self.client = redis.Redis(host=HOST, port=server.port, socket_timeout=5)
        self.client.ping()

    def read(self) -> tuple[int, int]:
        """(reads processed, EVALSHA calls) so far; this INFO is one read."""
        info = self.client.info("everything")
        evalsha = info.get("cmdstat_evalsha", {}).get("calls", 0)
        return int(info["total_reads_processed"]), int(evalsha)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def counters(redis_server: RedisServer) -> Iterator[RedisCounters]:
    counters = RedisCounters(redis_server)
    yield counters
    counters.close()


async def send_one(ws: WSClient, n: int) -> dict[str, Any]:
    await ws.send_json({"type": "echo", "payload": n, "id": n})
    answer: dict[str, Any] = await ws.receive_json(timeout=15)
    return answer


async def all_at_once(sockets: list[WSClient]) -> list[dict[str, Any]]:
    """One message on each socket, sent together; the answers, in socket order."""
    answers: list[dict[str, Any]] = [{} for _ in sockets]

    async def one(index: int) -> None:
        answers[index] = await send_one(sockets[index], index)

    async with anyio.create_task_group() as group:
        for index in range(len(sockets)):
            group.start_soon(one, index)
    return answers


def kinds(answers: list[dict[str, Any]]) -> list[str]:
    return [
        answer["type"] if answer["type"] == "echo" else answer["error"]["code"]
        for answer in answers
    ]


# Which storages are batched


@pytest.mark.parametrize(
    "url",
    [
        f"redis://{HOST}:{free_port()}/0",  # no connection is made to build them
        f"redis+cluster://{HOST}:{free_port()},{HOST}:{free_port()}",
        f"redis+sentinel://{HOST}:{free_port()}/main",
    ],
)
async def test_limits_own_redis_storages_are_batched_for_every_strategy(url: str) -> None:
    for strategy in STRATEGIES:
        middleware = RateLimitMiddleware(echo, strategy=strategy, storage=rate_storage(url))
        assert isinstance(middleware.batch, RedisHits), strategy


async def test_anything_else_keeps_the_per_message_path(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://{HOST}:{free_port()}/0"

    class Audited(RedisStorage):  # a user's storage of another class, even a close one
        pass

    others: list[str | Storage] = [
        "memory://",
        MemoryStorage(),
        Audited(f"async+{url}", implementation="redispy"),
    ]
    for storage in others:
        assert RateLimitMiddleware(echo, storage=storage).batch is None, storage
    # A limits whose scripts are not the ones read...
    changed = rate_storage(url)
    assert isinstance(changed, RedisStorage)
    bridge: Any = changed.bridge
    bridge.lua_acquire_moving_window = bridge.storage.register_script(b"return 1")
    assert RateLimitMiddleware(echo, storage=changed).batch is None
    # ...or of another major version.
    monkeypatch.setattr(_ratebatch, "_LIMITS_MAJOR", "6")
    assert RateLimitMiddleware(echo, storage=rate_storage(url)).batch is None


async def test_the_per_message_path_still_limits_on_redis(
    redis_server: RedisServer, server_of: Serve
) -> None:
    calls = 0

    class Audited(RedisStorage):
        async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
            nonlocal calls
            calls += 1
            return await super().acquire_entry(key, limit, expiry, amount)

    storage = Audited(f"async+{redis_server.url}", implementation="redispy")
    live = server_of(limited(redis_server.url, fresh(), rate="5/day", storage=storage))
    sockets = [WSClient(live.ws("/ws")) for _ in range(12)]
    for ws in sockets:
        await ws.connect()
    try:
        answers = await all_at_once(sockets)
    finally:
        for ws in sockets:
            await ws.close()
    assert sorted(kinds(answers)) == ["echo"] * 5 + ["rate_limited"] * 7
    assert calls == 12  # limits' own call, once per message


# Exactly limits' decisions, on limits' keys


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_concurrent_connections_get_exactly_the_limit_and_share_it_with_limits(
    redis_server: RedisServer, server_of: Serve, strategy: RateStrategy
) -> None:
    name = fresh()
    middleware = limited(redis_server.url, name, rate="15/day", strategy=strategy)
    live = server_of(middleware)
    other = plain(redis_server.url, strategy)  # another process, on plain limits
    # Both spend from one budget: 4 here, then 3 there...
    async with WSClient(live.ws("/ws")) as ws:
        assert kinds([await send_one(ws, n) for n in range(4)]) == ["echo"] * 4
    assert [await other.hit(middleware.item, identifier(name)) for _ in range(3)] == [True] * 3
    # ...then 40 connections at once, for the 8 left.
    sockets = [WSClient(live.ws("/ws")) for _ in range(40)]
    for ws in sockets:
        await ws.connect()
    try:
        answers = await all_at_once(sockets)
        assert all(ws.state == "open" for ws in sockets)  # refusing never disconnects
    finally:
        for ws in sockets:
            await ws.close()
    assert sorted(kinds(answers)) == ["echo"] * 8 + ["rate_limited"] * 32
    # limits sees the budget spent, and refuses too.
    assert (await other.get_window_stats(middleware.item, identifier(name))).remaining == 0
    assert await other.hit(middleware.item, identifier(name)) is False


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_decisions_and_keys_are_those_of_limits_own_strategy(
    redis_server: RedisServer, strategy: RateStrategy
) -> None:
    """The same sequence of hits, once through limits alone and once with batches of the
    middleware interleaved, gives the same decisions and leaves the same Redis state."""
    middleware = limited(redis_server.url, "unused", rate="10/day", strategy=strategy)
    batch = middleware.batch
    assert batch is not None
    other = plain(redis_server.url, strategy)
    item = middleware.item
    alone, mixed = fresh(), fresh()

    reference = [await other.hit(item, identifier(alone)) for _ in range(25)]
    decisions: list[bool] = []
    keys = batch.keys(identifier(mixed))
    for _ in range(5):  # 5 x (4 batched in one pipeline, then 1 through limits)
        decisions += await asyncio.gather(*[batch.hit(keys) for _ in range(4)])
        decisions.append(await other.hit(item, identifier(mixed)))
    assert reference == [True] * 10 + [False] * 15
    assert decisions == reference

    stats = [await other.get_window_stats(item, identifier(name)) for name in (alone, mixed)]
    assert stats[0].remaining == stats[1].remaining == 0
    # The batches wrote to limits' keys, and left them as limits alone did.
    client = redis.Redis(host=HOST, port=redis_server.port, socket_timeout=5)
    try:
        found = _keys(client, mixed)
        assert found
        assert set(found) <= set(keys)  # a sliding window's previous key may wait
        contents = [
            sorted(
                (key.replace(name.encode(), b"NAME"), _content(client, key))
                for key in _keys(client, name)
            )
            for name in (alone, mixed)
        ]
    finally:
        client.close()
    assert contents[0] == contents[1]


def _keys(client: redis.Redis, name: str) -> list[bytes]:
    """The keys in Redis whose name has ``name`` in it."""
    return [key for key in client.keys(f"*{name}*") if isinstance(key, bytes)]


def _content(client: redis.Redis, key: bytes) -> object:
    """A key's content, less what differs from run to run (timestamps, TTLs)."""
    if client.type(key) == b"list":  # the moving window's entries
        return ("list", client.llen(key))
    return ("counter", client.get(key))


# Batching


async def test_hits_of_one_loop_turn_are_one_round_trip(
    redis_server: RedisServer, counters: RedisCounters
) -> None:
    batch = batcher(redis_server.url, rate="1000/day")
    keys = batch.keys(identifier(fresh()))
    assert await batch.hit(keys)  # the connection to Redis is open from here on
    reads, evalsha = counters.read()
    decisions = await asyncio.gather(*[batch.hit(keys) for _ in range(50)])
    after = counters.read()
    assert decisions == [True] * 50
    assert after[1] - evalsha == 50
    assert after[0] - reads - 1 == 1  # one request for the 50 (the 1 is the INFO)


async def test_a_batch_holds_at_most_max_batch_hits(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batcher(redis_server.url, rate="1000/day")
    sizes: list[int] = []

    async def counted(pipe: Any, execute: Execute) -> Any:
        sizes.append(len(pipe.command_stack))
        return await execute()

    intercept_pipelines(monkeypatch, batch, counted)
    keys = batch.keys(identifier(fresh()))
    decisions = await asyncio.gather(*[batch.hit(keys) for _ in range(MAX_BATCH + 44)])
    assert decisions == [True] * (MAX_BATCH + 44)
    assert sizes == [MAX_BATCH, 44]


async def test_many_connections_send_fewer_round_trips_than_messages(
    redis_server: RedisServer, server_of: Serve, counters: RedisCounters
) -> None:
    # Without leases, which would save most of the hits: each message is one.
    live = server_of(limited(redis_server.url, fresh(), rate="1000/day", lease=1))
    sockets = [WSClient(live.ws("/ws")) for _ in range(50)]
    for ws in sockets:
        await ws.connect()
    try:
        assert kinds([await send_one(sockets[0], 0)]) == ["echo"]  # Redis connected
        reads, evalsha = counters.read()
        answers = await all_at_once(sockets)
        after = counters.read()
    finally:
        for ws in sockets:
            await ws.close()
    assert kinds(answers) == ["echo"] * 50
    assert after[1] - evalsha == 50
    # Fewer requests than messages: how many fewer depends on how the messages fall into
    # the server's loop turns (3 to 25 here); the exact count is the test above's.
    assert after[0] - reads - 1 < 50


# Redis losing its scripts, going away, coming back


async def test_scripts_that_redis_lost_are_loaded_again(redis_server: RedisServer) -> None:
    for strategy in STRATEGIES:
        batch = batcher(redis_server.url, rate="5/day", strategy=strategy)
        keys = batch.keys(identifier(fresh()))
        redis_server.command("SCRIPT", "FLUSH")
        decisions = await asyncio.gather(*[batch.hit(keys) for _ in range(7)])
        assert decisions == [True] * 5 + [False] * 2
        redis_server.command("SCRIPT", "FLUSH")
        assert await batch.hit(keys) is False  # a lone hit, too
        assert redis_server.command("SCRIPT", "EXISTS", batch._sha) == [1]


async def test_a_batch_fails_as_a_whole_when_redis_does_not_answer() -> None:
    batch = batcher(f"redis://{HOST}:{free_port()}/0", rate="5/day")
    keys = batch.keys(identifier(fresh()))
    with anyio.fail_after(15):
        results = await asyncio.gather(*[batch.hit(keys) for _ in range(5)], return_exceptions=True)
    assert all(isinstance(result, redis.ConnectionError) for result in results), results


async def test_hits_queued_while_a_batch_fails_fail_with_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batcher(redis_server.url, rate="5/day")
    keys = batch.keys(identifier(fresh()))
    queued: list[asyncio.Future[bool]] = []
    sent = 0

    async def failing(pipe: Any, execute: Execute) -> Any:
        nonlocal sent
        sent += 1
        queued.extend(batch.hit(keys) for _ in range(3))  # while the batch is out
        raise redis.TimeoutError("Timeout reading from 127.0.0.1")

    intercept_pipelines(monkeypatch, batch, failing)
    first = await asyncio.gather(*[batch.hit(keys) for _ in range(5)], return_exceptions=True)
    then = await asyncio.gather(*queued, return_exceptions=True)
    assert [type(result) for result in first + then] == [redis.TimeoutError] * 8
    assert sent == 1  # the queued hits were not sent to a Redis that does not answer
    assert (batch._pending, batch._flusher) == ([], None)


async def test_a_redis_restart_falls_back_then_shares_the_budget_again(
    tmp_path: Path, server_of: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    own = RedisServer(tmp_path)
    own.start()
    try:
        name = fresh()
        middleware = limited(own.url, name, rate="100/day", fallback="memory://")
        live = server_of(middleware)
        key = identifier(name)
        async with WSClient(live.ws("/ws")) as ws:
            assert kinds([await send_one(ws, n) for n in range(3)]) == ["echo"] * 3
            stats = await plain(own.url, "moving-window").get_window_stats(middleware.item, key)
            assert stats.remaining == 97

            own.stop()  # mid-traffic: messages go on, counted in this process
            assert kinds([await send_one(ws, n) for n in range(3, 10)]) == ["echo"] * 7
            assert ws.state == "open"

            own.start()  # the same port, empty, without the scripts
            other = plain(own.url, "moving-window")  # a fresh client: the old one's died

            async def redis_counts_again() -> bool:
                assert kinds([await send_one(ws, 0)]) == ["echo"]
                return (await other.get_window_stats(middleware.item, key)).remaining < 100

            await eventually(redis_counts_again, within=15)
            # The new Redis had none of limits' scripts: the middleware loaded its own.
            assert middleware.batch is not None
            assert own.command("SCRIPT", "EXISTS", middleware.batch._sha) == [1]
            # The budget is shared again: limits spends all but one of it...
            remaining = (await other.get_window_stats(middleware.item, key)).remaining
            for _ in range(remaining - 1):
                assert await other.hit(middleware.item, key)
            # ...and the middleware sees what is left.
            answers = [await send_one(ws, n) for n in range(3)]
            assert kinds(answers) == ["echo", "rate_limited", "rate_limited"]
            assert await other.hit(middleware.item, key) is False
            assert ws.state == "open"
        assert "the rate-limit storage failed" in caplog.text
        assert "answers again" in caplog.text
    finally:
        own.stop()


# Connections that go away while their hit is queued


async def test_a_waiter_cancelled_before_the_flush_is_not_sent(redis_server: RedisServer) -> None:
    middleware = limited(redis_server.url, "unused", rate="100/day")
    batch = middleware.batch
    assert batch is not None
    name = identifier(fresh())
    keys = batch.keys(name)
    errors = _loop_errors()

    tasks = [asyncio.create_task(_hit(batch, keys)) for _ in range(10)]
    await asyncio.sleep(0)  # one loop turn: every task queues its hit, the flush comes next
    for task in tasks[:3]:
        task.cancel()
    assert await asyncio.gather(*tasks[3:]) == [True] * 7
    assert all(task.cancelled() for task in tasks[:3])
    stats = await plain(redis_server.url, "moving-window").get_window_stats(middleware.item, name)
    assert stats.remaining == 100 - 7
    assert (batch._pending, batch._flusher, errors) == ([], None, [])


async def test_a_waiter_cancelled_while_its_batch_is_out_breaks_nothing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    middleware = limited(redis_server.url, "unused", rate="100/day")
    batch = middleware.batch
    assert batch is not None
    name = identifier(fresh())
    keys = batch.keys(name)
    errors = _loop_errors()
    tasks: list[asyncio.Task[bool]] = []

    async def cancelling(pipe: Any, execute: Execute) -> Any:
        for task in tasks[:3]:  # their connections close while Redis works
            task.cancel()
        return await execute()

    intercept_pipelines(monkeypatch, batch, cancelling)
    tasks += [asyncio.create_task(_hit(batch, keys)) for _ in range(10)]
    assert await asyncio.gather(*tasks[3:]) == [True] * 7
    assert all(task.cancelled() for task in tasks[:3])
    stats = await plain(redis_server.url, "moving-window").get_window_stats(middleware.item, name)
    assert stats.remaining == 100 - 10  # sent before they gave up: counted, as limits would
    assert (batch._pending, batch._flusher, errors) == ([], None, [])


async def _hit(batch: RedisHits, keys: tuple[bytes, ...]) -> bool:
    return await batch.hit(keys)


def _loop_errors() -> list[dict[str, Any]]:
    """What the running loop reports from here on (a future's exception never retrieved, a
    result set twice...)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


# Leases: a fast sender's units counted several at a time


async def test_a_fast_sender_spends_leases_instead_of_round_trips(
    redis_server: RedisServer, server_of: Serve, counters: RedisCounters
) -> None:
    name = fresh()
    live = server_of(limited(redis_server.url, name, rate="1000/day"))
    async with WSClient(live.ws("/ws")) as ws:
        _, evalsha = counters.read()
        answers = [await send_one(ws, n) for n in range(100)]
        after = counters.read()
    assert kinds(answers) == ["echo"] * 100
    # Leases of 1, 2, 4, 8 and then 16 units: 10 hits for 100 messages while each lease is
    # spent within its second; a machine slow enough to let one lapse starts again at 1.
    assert after[1] - evalsha < 50
    client = redis.Redis(host=HOST, port=redis_server.port)
    try:
        [key] = _keys(client, name)
        # Every message was counted before it passed, and at most one lease is unspent.
        assert 100 <= client.llen(key) < 116
    finally:
        client.close()


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter", "fixed-window"])
async def test_the_last_units_of_a_budget_are_counted_one_message_at_a_time(
    redis_server: RedisServer, server_of: Serve, strategy: RateStrategy
) -> None:
    # Leases of at most 5 units (a tenth of the rate; none on a fixed window); the last
    # units of the budget do not fit in one, and are counted one a message: the limit is
    # exact in one worker.
    live = server_of(limited(redis_server.url, fresh(), rate="50/minute", strategy=strategy))
    async with WSClient(live.ws("/ws")) as ws:
        answers = [await send_one(ws, n) for n in range(60)]
    assert kinds(answers) == ["echo"] * 50 + ["rate_limited"] * 10


async def test_lease_1_counts_every_message(
    redis_server: RedisServer, server_of: Serve, counters: RedisCounters
) -> None:
    live = server_of(limited(redis_server.url, fresh(), rate="1000/day", lease=1))
    async with WSClient(live.ws("/ws")) as ws:
        assert kinds([await send_one(ws, 0)]) == ["echo"]
        _, evalsha = counters.read()
        answers = [await send_one(ws, n) for n in range(20)]
        after = counters.read()
    assert kinds(answers) == ["echo"] * 20
    assert after[1] - evalsha == 20
