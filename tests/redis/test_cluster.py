"""Scale-out on a Redis Cluster and through Sentinel, over real processes: the example app
under uvicorn, two servers sharing a three-primary cluster (or a Sentinel-managed primary),
talked to over real sockets; and a worker, a cluster primary or the Sentinel primary lost
during the test.

Every server runs with a 2 s registry TTL, 3 connections per user and 10 messages a minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.redis.cluster import LocalCluster, LocalSentinel
from tests.redis.server import GateProcess, eventually, gate_env, start_all
from tests.redis.test_scale_out import LIMITED, TTL, connect, join, send_echoes
from tests.test_revocation_redis import REVOKED, revoke_printed

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def pair(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GateProcess, GateProcess]]:
    """Two servers on different ports sharing the session's cluster."""
    cluster.flush()
    directory = tmp_path_factory.mktemp("cluster-pair")
    a = GateProcess(directory, "a", gate_env(cluster.url))
    b = GateProcess(directory, "b", gate_env(cluster.url))
    try:
        start_all(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


async def test_the_connection_limit_holds_across_processes_on_a_cluster(
    pair: tuple[GateProcess, GateProcess], cluster: LocalCluster
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        first = await connect(stack, a, "uma")
        second = await connect(stack, b, "uma")
        third = await connect(stack, a, "uma")
        fourth = await connect(stack, b, "uma")  # the oldest lives on a, which closes it
        assert await first.wait_closed(timeout=10) == LIMITED
        fifth = await connect(stack, a, "uma")  # and the other way round
        assert await second.wait_closed(timeout=10) == LIMITED
        for ws in (third, fourth, fifth):
            await ws.send_json({"type": "whoami"})
            assert (await ws.expect("whoami", timeout=15))["payload"]["user"] == "uma"
        # One slot holds all of uma's registry keys.
        node = cluster.node_of("{wsgate:conn:user:uma}")
        assert node.command("ZCARD", "{wsgate:conn:user:uma}") == 3
        assert node.command("HLEN", "{wsgate:conn:user:uma}:leases") == 2


async def test_the_rate_limit_is_exactly_n_across_processes_on_a_cluster(
    pair: tuple[GateProcess, GateProcess],
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        sockets = [await connect(stack, a, "rhea"), await connect(stack, b, "rhea")]
        answers = await send_echoes(sockets, 12)
    assert answers == ["echo"] * 8 + ["rate_limited"] * 4


async def test_revoke_closes_the_users_connections_on_both_processes_within_a_second(
    pair: tuple[GateProcess, GateProcess], cluster: LocalCluster
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        on_a, on_b = await connect(stack, a, "vera"), await connect(stack, b, "vera")
        other = await connect(stack, b, "walt")
        printed, started = await revoke_printed(cluster.url, "vera", "--for", "60")
        # Both workers listen on the node that serves the set of revocations, where the
        # revocation is published: PUBLISH counts them both.
        assert "told 2 worker process(es)" in printed
        assert await on_a.wait_closed(timeout=1) == REVOKED
        assert await on_b.wait_closed(timeout=1) == REVOKED
        assert time.monotonic() - started < 1
        await other.send_json({"type": "whoami"})
        assert (await other.expect("whoami", timeout=15))["payload"]["user"] == "walt"
        for server in (a, b):
            ws, answer = await join(stack, server, "vera")
            assert answer is None
            assert (ws.close_code, ws.close_reason) == REVOKED
        node = cluster.node_of("wsgate:revocations")
        assert node.command("ZSCORE", "wsgate:revocations", "u:vera") is not None


async def test_kill_9_of_a_worker_frees_the_users_slots_within_the_ttl_on_a_cluster(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    victim = GateProcess(tmp_path, "victim", gate_env(cluster.url))
    survivor = GateProcess(
        tmp_path, "survivor", gate_env(cluster.url, connection_policy="reject_new")
    )
    try:
        start_all(victim, survivor)
        async with AsyncExitStack() as stack:
            held = [await connect(stack, victim, "kai") for _ in range(3)]
            ws, answer = await join(stack, survivor, "kai")
            assert answer is None
            assert (ws.close_code, ws.close_reason) == LIMITED
            victim.kill()
            for ws in held:
                assert (await ws.wait_closed(timeout=10))[0] == 1006

            async def admitted() -> bool:
                return (await join(stack, survivor, "kai"))[1] is not None

            assert await eventually(admitted, within=15) <= TTL + 3
        assert survivor.alive
    finally:
        victim.stop()
        survivor.stop()


async def test_kill_9_of_a_cluster_primary_follows_the_policy_then_recovers(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path)
    env = gate_env(cluster.url, backend_policy="fail_closed")
    a = GateProcess(tmp_path, "a", env)
    b = GateProcess(tmp_path, "b", env)
    try:
        cluster.start()
        start_all(a, b)
        async with AsyncExitStack() as stack:
            held = [await connect(stack, a, "ines"), await connect(stack, a, "ines")]
            node = cluster.node_of("{wsgate:conn:user:ines}")
            node.kill()  # no replica takes over: its slots are gone until it is back

            # Open connections keep working; a new one is refused with 1013, "try later".
            for ws in held:
                await ws.send_json({"type": "whoami"})
                assert (await ws.expect("whoami", timeout=15))["payload"]["user"] == "ines"
            ws, answer = await join(stack, b, "ines")
            assert answer is None
            assert (ws.close_code, ws.close_reason) == (1013, "backend_unavailable")

            node.start()  # the same port and nodes.conf: the same slots, and no data
            cluster.wait_ok()

            async def admitted() -> bool:
                ws, answer = await join(stack, b, "ines")
                await ws.close()
                return answer is not None

            await eventually(admitted, within=20)

            # a registered its connections again on the empty primary, oldest first...
            async def entries() -> object:
                return node.command("ZCARD", "{wsgate:conn:user:ines}")

            await eventually(entries, 2)
            # ...so the limit holds across processes again.
            third = await connect(stack, b, "ines")
            fourth = await connect(stack, b, "ines")
            assert await held[0].wait_closed(timeout=10) == LIMITED
            for ws in (held[1], third, fourth):
                await ws.send_json({"type": "whoami"})
                assert (await ws.expect("whoami", timeout=15))["payload"]["user"] == "ines"
    finally:
        a.stop()
        b.stop()
        cluster.stop()
    logs = a.log + b.log
    assert "Traceback" not in logs
    assert "answers again" in logs


async def test_two_processes_hold_the_limit_through_a_sentinel_failover(
    sentinel: LocalSentinel, tmp_path: Path
) -> None:
    a = GateProcess(tmp_path, "a", gate_env(sentinel.url))
    b = GateProcess(tmp_path, "b", gate_env(sentinel.url))
    try:
        start_all(a, b)
        async with AsyncExitStack() as stack:
            sockets = [
                await connect(stack, a, "sara"),
                await connect(stack, b, "sara"),
                await connect(stack, a, "sara"),
            ]
            old_primary = sentinel.primary.port
            sentinel.failover()
            assert sentinel.primary.port != old_primary
            # The entries were replicated: on the new primary, the fourth connection still
            # evicts the oldest, on the other process.
            fourth = await connect(stack, b, "sara")
            assert await sockets[0].wait_closed(timeout=10) == LIMITED
            await fourth.send_json({"type": "whoami"})
            assert (await fourth.expect("whoami", timeout=15))["payload"]["user"] == "sara"
            assert sentinel.primary.command("ZCARD", "{wsgate:conn:user:sara}") == 3
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


async def test_revoke_through_sentinel_reaches_a_worker_after_a_failover(
    sentinel: LocalSentinel, tmp_path: Path
) -> None:
    worker = GateProcess(tmp_path, "worker", gate_env(sentinel.url))
    try:
        start_all(worker)
        async with AsyncExitStack() as stack:
            before = await connect(stack, worker, "yann")
            sentinel.failover()

            # The listener finds the new primary by asking Sentinel again, every 5 s at most.
            async def subscribed() -> object:
                return sentinel.primary.command("PUBSUB", "NUMSUB", "wsgate:revoke")

            await eventually(subscribed, [b"wsgate:revoke", 1], within=10)
            after = await connect(stack, worker, "yann")
            printed, started = await revoke_printed(sentinel.url, "yann", "--for", "60")
            assert "told 1 worker process(es)" in printed
            for ws in (before, after):
                assert await ws.wait_closed(timeout=1) == REVOKED
            assert time.monotonic() - started < 1
            ws, answer = await join(stack, worker, "yann")
            assert answer is None
            assert (ws.close_code, ws.close_reason) == REVOKED
    finally:
        worker.stop()
    assert "Traceback" not in worker.log
