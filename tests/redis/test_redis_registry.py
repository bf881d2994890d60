"""RedisRegistry in one process: two registries with different owners stand for two workers.

The contract every registry fulfils is in ``tests/test_registry.py``, which runs against Redis
too; these are what only a shared registry does: evictions handed to another worker, entries
that outlive Redis outages, and the failure policy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import anyio
import pytest

from tests.redis.server import RedisServer, eventually, free_port
from wsgate import Gate, GateConfig
from wsgate.backends import BackendUnavailable
from wsgate.backends.redis import BackendPolicy, RedisRegistry
from wsgate.registry import Admission

pytestmark = pytest.mark.anyio

KEY = "wsgate:conn:user:alice"
SECRET = "redis-registry-tests-secret-0123456789abcdef"


class Evictions:
    """An eviction handler that records what it was handed, as the middleware's evict would."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._changed = anyio.Event()

    def __call__(self, connection_id: str) -> bool:
        self.ids.append(connection_id)
        self._changed.set()
        self._changed = anyio.Event()
        return True

    async def wait_for(self, *ids: str, within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while sorted(self.ids) != sorted(ids):
                await self._changed.wait()


@pytest.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[tuple[RedisRegistry, RedisRegistry]]:
    redis_server.command("FLUSHALL")
    a = RedisRegistry(redis_server.url, ttl=1.5, owner="worker-a")
    b = RedisRegistry(redis_server.url, ttl=1.5, owner="worker-b")
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_worker_holding_the_oldest_connection_is_told_through_its_list(
    redis_server: RedisServer,
) -> None:
    redis_server.command("FLUSHALL")
    # A TTL so long that no refresh can be what closes c1 during the test.
    a = RedisRegistry(redis_server.url, ttl=60, owner="worker-a")
    b = RedisRegistry(redis_server.url, ttl=60, owner="worker-b")
    try:
        evictions = Evictions()
        a.on_eviction(evictions)
        assert await a.add(KEY, "c1", limit=3, policy="evict_oldest") == Admission(True)
        assert await b.add(KEY, "c2", limit=3, policy="evict_oldest") == Admission(True)
        assert await b.add(KEY, "c3", limit=3, policy="evict_oldest") == Admission(True)
        # Another worker's connection comes back as owner/id: this process has no such id.
        assert await b.add(KEY, "c4", limit=3, policy="evict_oldest") == Admission(
            True, ("worker-a/c1",)
        )
        await evictions.wait_for("c1", within=5)
        assert await a.count(KEY) == await b.count(KEY) == 3
        # b's own connections at once; a sees them once b has refreshed (every ttl / 3).
        assert await b.total() == 3
        # c1 is gone from Redis already: ending it later changes nothing.
        await a.remove(KEY, "c1")
        assert await b.count(KEY) == 3
    finally:
        await a.aclose()
        await b.aclose()


async def test_simultaneous_connects_on_two_workers_never_exceed_the_limit(
    workers: tuple[RedisRegistry, RedisRegistry],
) -> None:
    a, b = workers
    admissions: list[Admission] = []

    async def add(registry: RedisRegistry, connection_id: str) -> None:
        admissions.append(await registry.add(KEY, connection_id, limit=3, policy="reject_new"))

    async with anyio.create_task_group() as group:
        for n in range(20):
            group.start_soon(add, a if n % 2 else b, f"c{n}")
    assert sum(admission.admitted for admission in admissions) == 3
    assert await a.count(KEY) == 3


async def test_a_worker_that_stops_refreshing_frees_its_slots_within_the_ttl(
    redis_server: RedisServer,
) -> None:
    redis_server.command("FLUSHALL")
    doomed = RedisRegistry(redis_server.url, ttl=1.0, owner="doomed")
    survivor = RedisRegistry(redis_server.url, ttl=1.0, owner="survivor")
    try:
        for n in range(3):
            await doomed.add(KEY, f"d{n}", limit=3, policy="reject_new")
        assert not (await survivor.add(KEY, "s1", limit=3, policy="reject_new")).admitted
        # What kill -9 leaves behind: entries, and nobody to refresh or remove them.
        for task in doomed._tasks:
            task.cancel()

        async def admitted() -> bool:
            return (await survivor.add(KEY, "s1", limit=3, policy="reject_new")).admitted

        assert await eventually(admitted) <= 1.0 + 2.0  # the TTL, and slack for a slow box
        assert await survivor.count(KEY) == 1
        assert await survivor.total() == 1
    finally:
        await survivor.aclose()
        await doomed.aclose()


async def test_a_lost_eviction_message_is_made_up_for_by_the_next_refresh(
    workers: tuple[RedisRegistry, RedisRegistry], redis_server: RedisServer
) -> None:
    a, _ = workers
    evictions = Evictions()
    a.on_eviction(evictions)
    await a.add(KEY, "c1", limit=3, policy="evict_oldest")
    await a.add(KEY, "c2", limit=3, policy="evict_oldest")
    # Another worker evicted c1, and the message never arrived.
    redis_server.command("ZREM", "{" + KEY + "}", "worker-a/c1")
    await evictions.wait_for("c1")  # within ttl / 3
    assert await a.count(KEY) == 1


async def test_entries_come_back_after_redis_forgets_them(
    workers: tuple[RedisRegistry, RedisRegistry], redis_server: RedisServer
) -> None:
    a, b = workers
    await a.add(KEY, "c1", limit=3, policy="evict_oldest")
    await a.add(KEY, "c2", limit=3, policy="evict_oldest")
    redis_server.command("FLUSHALL")  # what a restart without persistence leaves
    await eventually(lambda: b.count(KEY), 2)
    assert await b.total() == 2
    assert (await b.add(KEY, "c3", limit=2, policy="evict_oldest")).close == ("worker-a/c1",)


async def test_goodbye_frees_the_slots_at_once(
    workers: tuple[RedisRegistry, RedisRegistry],
) -> None:
    a, b = workers
    await a.add(KEY, "c1", limit=1, policy="reject_new")
    assert not (await b.add(KEY, "c2", limit=1, policy="reject_new")).admitted
    await a.aclose()
    assert (await b.add(KEY, "c2", limit=1, policy="reject_new")).admitted


async def test_a_storm_of_connects_and_disconnects_is_not_an_outage(
    workers: tuple[RedisRegistry, RedisRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    # Three times as many at once as redis-py's pool holds: without a bound on the commands
    # out at once, the overflow fails at once and the registry takes Redis for down.
    a, _ = workers
    storm = [f"storm-{n}" for n in range(300)]

    async def admit(key: str, connection_id: str) -> None:
        assert (await a.add(key, connection_id, limit=1, policy="reject_new")).admitted

    async with anyio.create_task_group() as group:
        for n, connection_id in enumerate(storm):
            group.start_soon(admit, f"{KEY}-{n}", connection_id)
    assert await a.total() == len(storm)
    async with anyio.create_task_group() as group:
        for n, connection_id in enumerate(storm):
            group.start_soon(a.remove, f"{KEY}-{n}", connection_id)
    assert " up, 0 connection(s)" in repr(a)  # never taken for down
    assert "cannot be reached" not in caplog.text
    assert await a.count(f"{KEY}-0") == 0  # the removals reached Redis


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_redis_down_follows_the_policy_and_recovery_is_automatic(
    own_redis: RedisServer, policy: BackendPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    registry = RedisRegistry(own_redis.url, ttl=1.5, policy=policy, owner="worker-a")
    other = RedisRegistry(own_redis.url, ttl=1.5, owner="worker-b")
    try:
        await registry.add(KEY, "before", limit=2, policy="evict_oldest")
        own_redis.stop()
        with caplog.at_level(logging.WARNING, logger="wsgate.redis"):
            if policy == "fail_closed":
                with pytest.raises(BackendUnavailable, match="fail_closed") as refused:
                    await registry.add(KEY, "during", limit=2, policy="evict_oldest")
                assert refused.value.refusal.close_code == 1013
                assert refused.value.refusal.reason == "backend_unavailable"
                expected = 1
            else:
                # The limit still holds, in this process.
                assert await registry.add(KEY, "d1", limit=2, policy="evict_oldest") == (
                    Admission(True)
                )
                assert await registry.add(KEY, "d2", limit=2, policy="evict_oldest") == (
                    Admission(True, ("before",))
                )
                expected = 2
            # Nothing raises: the other calls answer for this process.
            assert await registry.count(KEY) == expected
            assert await registry.total() == expected
            assert (await registry.health())["status"] == "down"
            own_redis.start()
            # Entries admitted meanwhile reach Redis, and evictions reach this worker again.
            await eventually(lambda: other.count(KEY), expected)
        errors = [record for record in caplog.records if record.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "cannot be reached (1 failure(s), last: ConnectionError" in errors[0].message
        assert policy in errors[0].message
        assert "answers again" in caplog.text
        health = await registry.health()
        assert health["status"] == "ok"
        assert isinstance(health["latency_ms"], float)
    finally:
        await registry.aclose()
        await other.aclose()


async def test_a_redis_that_never_answered_does_not_raise() -> None:
    registry = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", ttl=1.0, owner="alone")
    try:
        admission = await registry.add(KEY, "c1", limit=1, policy="evict_oldest")
        assert admission == Admission(True)
        assert (await registry.add(KEY, "c2", limit=1, policy="evict_oldest")).close == ("c1",)
        await registry.remove(KEY, "c2")
        assert await registry.count(KEY) == 0
        assert await registry.health() == {"kind": "redis", "status": "down", "latency_ms": None}
    finally:
        await registry.aclose()


async def test_a_gate_on_redis_shares_one_pool_and_reports_its_health(
    redis_server: RedisServer,
) -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET, storage=redis_server.url, registry_ttl=4.0))
    try:
        assert isinstance(gate.registry, RedisRegistry)
        assert gate.registry.ttl == 4.0
        assert gate.registry.policy == "fail_open"
        health = await gate.backend_health()
        assert health["kind"] == "redis"
        assert health["status"] == "ok"
    finally:
        await gate.aclose()


async def test_a_memory_gate_reports_the_same_keys() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET))
    assert await gate.backend_health() == {"kind": "memory", "status": "ok", "latency_ms": 0.0}
    await gate.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": 0}, "ttl must be a positive number of seconds, not 0."),
        ({"policy": "fail_sideways"}, "policy must be one of 'fail_open', 'fail_closed'"),
        ({"owner": "host/1"}, "owner must be a non-empty id without '/', not 'host/1'."),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RedisRegistry("redis://127.0.0.1:6379/0", **options)  # type: ignore[arg-type]


def test_the_password_stays_out_of_messages() -> None:
    registry = RedisRegistry("redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(registry)
    assert registry.shown_url == "redis://:***@127.0.0.1:6379/0"
