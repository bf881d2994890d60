"""The connection registry contract, run against every backend.

A new backend joins by adding one entry to ``BACKENDS``; every test here then runs against it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from tests.redis.server import redis_server
from wsgate.registry import Admission, MemoryRegistry, Registry

pytestmark = pytest.mark.anyio


def redis_registry(request: pytest.FixtureRequest) -> Registry:
    """A RedisRegistry on a real redis-server of the tests' own, emptied first."""
    server = request.getfixturevalue(redis_server.__name__)
    server.command("FLUSHALL")
    from wsgate.backends.redis import RedisRegistry

    return RedisRegistry(server.url, ttl=5)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Registry]] = {
    "memory": lambda request: MemoryRegistry(),
    "redis": redis_registry,
}

KEY = "wsgate:conn:user:alice"
OTHER = "wsgate:conn:user:bob"


@pytest.fixture(params=sorted(BACKENDS))
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    backend = BACKENDS[request.param](request)
    try:
        yield backend
    finally:
        await backend.aclose()


async def fill(registry: Registry, key: str, ids: list[str], limit: int = 100) -> None:
    for connection_id in ids:
        assert await registry.add(key, connection_id, limit=limit, policy="evict_oldest") == (
            Admission(True)
        )


async def test_empty(registry: Registry) -> None:
    assert await registry.count(KEY) == 0
    assert await registry.total() == 0


async def test_add_under_the_limit(registry: Registry) -> None:
    for n, policy in enumerate(("evict_oldest", "reject_new", "evict_oldest"), start=1):
        admission = await registry.add(KEY, f"c{n}", limit=3, policy=policy)  # type: ignore[arg-type]
        assert admission == Admission(admitted=True, close=())
        assert await registry.count(KEY) == n
    assert await registry.total() == 3


async def test_evict_oldest_pushes_out_the_oldest(registry: Registry) -> None:
    await fill(registry, KEY, ["c1", "c2", "c3"], limit=3)
    admission = await registry.add(KEY, "c4", limit=3, policy="evict_oldest")
    assert admission == Admission(admitted=True, close=("c1",))
    assert await registry.count(KEY) == 3
    # The evicted entry is gone already: removing it changes nothing.
    await registry.remove(KEY, "c1")
    assert await registry.count(KEY) == 3
    # The next oldest is c2.
    assert (await registry.add(KEY, "c5", limit=3, policy="evict_oldest")).close == ("c2",)


async def test_evictions_come_oldest_first(registry: Registry) -> None:
    await fill(registry, KEY, ["c1", "c2", "c3", "c4", "c5"])
    admission = await registry.add(KEY, "c6", limit=2, policy="evict_oldest")
    assert admission == Admission(admitted=True, close=("c1", "c2", "c3", "c4"))
    assert await registry.count(KEY) == 2
    assert await registry.total() == 2


async def test_order_is_the_order_of_adding(registry: Registry) -> None:
    await fill(registry, KEY, ["c1", "c2", "c3"], limit=3)
    await registry.remove(KEY, "c2")
    await fill(registry, KEY, ["c4"], limit=3)
    assert (await registry.add(KEY, "c5", limit=3, policy="evict_oldest")).close == ("c1",)
    assert (await registry.add(KEY, "c6", limit=3, policy="evict_oldest")).close == ("c3",)
    assert (await registry.add(KEY, "c7", limit=3, policy="evict_oldest")).close == ("c4",)


async def test_reject_new_refuses_and_does_not_register(registry: Registry) -> None:
    await fill(registry, KEY, ["c1", "c2", "c3"], limit=3)
    admission = await registry.add(KEY, "c4", limit=3, policy="reject_new")
    assert admission == Admission(admitted=False, close=("c4",))
    assert await registry.count(KEY) == 3
    # c4 was never registered, so only the old entries can free a slot.
    await registry.remove(KEY, "c4")
    assert await registry.count(KEY) == 3
    await registry.remove(KEY, "c2")
    assert await registry.add(KEY, "c5", limit=3, policy="reject_new") == Admission(True)
    # c1 is still the oldest.
    assert (await registry.add(KEY, "c6", limit=3, policy="evict_oldest")).close == ("c1",)


async def test_adding_a_registered_id_again_changes_nothing(registry: Registry) -> None:
    await fill(registry, KEY, ["c1", "c2", "c3"], limit=3)
    for policy in ("evict_oldest", "reject_new"):
        admission = await registry.add(KEY, "c1", limit=3, policy=policy)
        assert admission == Admission(True)
    assert await registry.count(KEY) == 3
    # c1 kept its place: still the oldest.
    assert (await registry.add(KEY, "c4", limit=3, policy="evict_oldest")).close == ("c1",)


async def test_remove_is_idempotent(registry: Registry) -> None:
    await fill(registry, KEY, ["c1", "c2"])
    await registry.remove(KEY, "c1")
    await registry.remove(KEY, "c1")
    await registry.remove(KEY, "never-added")
    await registry.remove("wsgate:conn:user:nobody", "c2")
    assert await registry.count(KEY) == 1
    assert await registry.total() == 1
    await registry.remove(KEY, "c2")
    assert await registry.count(KEY) == 0
    assert await registry.total() == 0


async def test_keys_are_independent(registry: Registry) -> None:
    await fill(registry, KEY, ["a1", "a2", "a3"], limit=3)
    await fill(registry, OTHER, ["b1", "b2"], limit=3)
    assert await registry.total() == 5
    assert (await registry.add(KEY, "a4", limit=3, policy="evict_oldest")).close == ("a1",)
    assert await registry.add(OTHER, "b3", limit=3, policy="reject_new") == Admission(True)
    assert (await registry.count(KEY), await registry.count(OTHER)) == (3, 3)
    # The same connection id under two keys is two entries.
    await registry.remove(OTHER, "a2")
    assert await registry.count(KEY) == 3
    assert await registry.total() == 6


async def test_simultaneous_adds_with_evict_oldest(registry: Registry) -> None:
    ids = [f"c{n}" for n in range(50)]
    admissions: dict[str, Admission] = {}

    async def add(connection_id: str) -> None:
        admissions[connection_id] = await registry.add(
            KEY, connection_id, limit=3, policy="evict_oldest"
        )

    async with anyio.create_task_group() as group:
        for connection_id in ids:
            group.start_soon(add, connection_id)
    assert all(admission.admitted for admission in admissions.values())
    closed = [closed for admission in admissions.values() for closed in admission.close]
    assert len(closed) == len(set(closed)) == 47  # each one exactly once
    survivors = set(ids) - set(closed)
    assert len(survivors) == 3
    assert await registry.count(KEY) == 3
    assert await registry.total() == 3
    for connection_id in ids:
        await registry.remove(KEY, connection_id)
    assert await registry.total() == 0


async def test_simultaneous_adds_with_reject_new(registry: Registry) -> None:
    admissions: list[Admission] = []

    async def add(connection_id: str) -> None:
        admissions.append(await registry.add(KEY, connection_id, limit=3, policy="reject_new"))

    async with anyio.create_task_group() as group:
        for n in range(50):
            group.start_soon(add, f"c{n}")
    admitted = [admission for admission in admissions if admission.admitted]
    assert len(admitted) == 3
    assert all(admission.close == () for admission in admitted)
    assert all(len(admission.close) == 1 for admission in admissions if not admission.admitted)
    assert await registry.count(KEY) == 3


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
async def test_a_bad_limit_is_refused(registry: Registry, limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        await registry.add(KEY, "c1", limit=limit, policy="evict_oldest")  # type: ignore[arg-type]
    assert await registry.total() == 0


async def test_an_unknown_policy_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="policy"):
        await registry.add(KEY, "c1", limit=3, policy="evict_newest")  # type: ignore[arg-type]
    assert await registry.total() == 0


async def test_aclose_can_be_called_twice(registry: Registry) -> None:
    await fill(registry, KEY, ["c1"])
    await registry.aclose()
    await registry.aclose()


async def test_entries_carry_an_owner(registry: Registry) -> None:
    assert isinstance(registry.owner, str)
    assert registry.owner


# The memory backend


def test_memory_owner_is_the_process_by_default() -> None:
    assert MemoryRegistry().owner.endswith(f":{os.getpid()}")
    assert MemoryRegistry(owner="worker-7").owner == "worker-7"


async def test_memory_forgets_empty_keys() -> None:
    registry = MemoryRegistry()
    await fill(registry, KEY, ["c1"])
    await registry.remove(KEY, "c1")
    assert repr(registry) == "<MemoryRegistry 0 connection(s) under 0 key(s)>"


def test_local_connections_belong_to_each_registry() -> None:
    first, second = MemoryRegistry(), MemoryRegistry()
    assert first.local_connections == {}
    assert first.local_connections is first.local_connections
    assert first.local_connections is not second.local_connections
