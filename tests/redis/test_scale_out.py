"""Scale-out over real processes: the example app under uvicorn, several servers sharing one
real redis-server, talked to over real sockets.

Every server runs with a 2 s registry TTL, 3 connections per user and 10 messages a minute.
Each test uses users of its own, so the servers shared by a module never mix their budgets.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.redis.server import (
    ROOT,
    TOKENS,
    GateProcess,
    RedisServer,
    eventually,
    free_port,
    gate_env,
    start_all,
)
from wsgate.testing import WSClient

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TTL = 2.0
LIMITED = (4008, "connection_limit")


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GateProcess, GateProcess]]:
    """Two servers on different ports sharing the session's Redis."""
    directory = tmp_path_factory.mktemp("pair")
    a = GateProcess(directory, "a", gate_env(redis_server.url))
    b = GateProcess(directory, "b", gate_env(redis_server.url))
    try:
        start_all(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


async def join(stack: AsyncExitStack, server: GateProcess, user: str) -> tuple[WSClient, Any]:
    """Connect as ``user`` and ask whoami: the answer, or None when the gate closed the new
    connection instead (the client then has the close code)."""
    ws = WSClient(server.ws(), token=TOKENS.valid(user), open_timeout=30)
    await stack.enter_async_context(ws)
    try:
        await ws.send_json({"type": "whoami"})
        return ws, await ws.expect("whoami", timeout=15)
    except ConnectionClosed:
        return ws, None


async def connect(stack: AsyncExitStack, server: GateProcess, user: str) -> WSClient:
    """A connection of ``user`` that the gate admitted and counts."""
    ws, answer = await join(stack, server, user)
    assert answer is not None, f"refused with {ws.close_code} {ws.close_reason}"
    assert answer["payload"]["user"] == user
    return ws


async def send_echoes(sockets: list[WSClient], count: int) -> list[str]:
    """Send ``count`` echo messages round-robin over ``sockets``; the answers' types or error
    codes, in order."""
    answers = []
    for n in range(count):
        ws = sockets[n % len(sockets)]
        await ws.send_json({"type": "echo", "payload": n})
        answer = await ws.receive_json(timeout=15)
        answers.append(answer["error"]["code"] if answer["type"] == "error" else answer["type"])
    return answers


async def test_the_connection_limit_holds_across_processes(
    pair: tuple[GateProcess, GateProcess],
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        first = await connect(stack, a, "uma")
        second = await connect(stack, b, "uma")
        third = await connect(stack, a, "uma")
        # The fourth lands on b; the oldest lives on a, which closes it.
        fourth = await connect(stack, b, "uma")
        assert await first.wait_closed(timeout=10) == LIMITED
        # And the other way round.
        fifth = await connect(stack, a, "uma")
        assert await second.wait_closed(timeout=10) == LIMITED
        for ws in (third, fourth, fifth):
            await ws.send_json({"type": "whoami"})
            assert (await ws.expect("whoami", timeout=15))["payload"]["user"] == "uma"


async def test_the_rate_limit_is_exactly_n_across_processes(
    pair: tuple[GateProcess, GateProcess],
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        # Two whoami answers, then echoes alternating between the two servers.
        sockets = [await connect(stack, a, "rhea"), await connect(stack, b, "rhea")]
        answers = await send_echoes(sockets, 12)
    assert answers == ["echo"] * 8 + ["rate_limited"] * 4


async def test_kill_9_frees_the_users_slots_within_the_ttl(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    victim = GateProcess(tmp_path, "victim", gate_env(redis_server.url))
    survivor = GateProcess(
        tmp_path, "survivor", gate_env(redis_server.url, connection_policy="reject_new")
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
                assert (await ws.wait_closed(timeout=10))[0] == 1006  # no close frame

            async def admitted() -> bool:
                return (await join(stack, survivor, "kai"))[1] is not None

            # The victim's lease ends at most TTL after its last refresh; slack for a slow box.
            assert await eventually(admitted, within=15) <= TTL + 3
        assert survivor.alive
    finally:
        victim.stop()
        survivor.stop()


async def test_redis_down_follows_the_policy_and_the_gate_recovers(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    fail_open = GateProcess(tmp_path, "open", gate_env(redis.url, backend_policy="fail_open"))
    fail_closed = GateProcess(tmp_path, "closed", gate_env(redis.url, backend_policy="fail_closed"))
    try:
        start_all(fail_open, fail_closed)
        async with AsyncExitStack() as stack:
            pia = [await connect(stack, fail_open, "pia"), await connect(stack, fail_closed, "pia")]
            redis.stop()

            # Open connections keep working under both policies.
            for ws in pia:
                await ws.send_json({"type": "whoami"})
                assert (await ws.expect("whoami", timeout=15))["payload"]["user"] == "pia"

            # fail_closed: new connections are refused with 1013, which says "try later".
            ws, answer = await join(stack, fail_closed, "quinn")
            assert answer is None
            assert (ws.close_code, ws.close_reason) == (1013, "backend_unavailable")

            # fail_open: the limits hold in each process.
            wes = [await connect(stack, fail_open, "wes") for _ in range(4)]
            assert await wes[0].wait_closed(timeout=10) == LIMITED
            # 4 whoami answers so far, then 6 more messages pass the 10 a minute.
            assert await send_echoes(wes[1:], 8) == ["echo"] * 6 + ["rate_limited"] * 2

            assert fail_open.alive
            assert fail_closed.alive
            redis.start()  # the same port, empty, as after a restart without persistence

            async def quinn_admitted() -> bool:
                return (await join(stack, fail_closed, "quinn"))[1] is not None

            await eventually(quinn_admitted, within=15)

            # The workers registered their connections again, those opened during the outage
            # too, so the limit holds across processes again.
            async def entries_of_wes() -> object:
                return redis.command("ZCARD", "{wsgate:conn:user:wes}")

            await eventually(entries_of_wes, 3, within=15)
            await connect(stack, fail_closed, "wes")
            assert await wes[1].wait_closed(timeout=10) == LIMITED
    finally:
        fail_open.stop()
        fail_closed.stop()
        redis.stop()
    logs = fail_open.log + fail_closed.log
    assert "Traceback" not in logs
    assert "fail_open: each worker counts connection limits on its own" in fail_open.log
    assert "fail_closed: new connections are refused with 1013" in fail_closed.log
    assert "answers again" in fail_open.log
    assert "answers again" in fail_closed.log


async def test_the_demo_serves_several_workers_that_share_the_limits(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    server = GateProcess(
        tmp_path,
        "workers",
        gate_env(redis_server.url),
        command=["examples.run", "--port", str(port), "--workers", "2"],
        ready=2,
    )
    try:
        start_all(server)
        async with AsyncExitStack() as stack:
            sockets = [await connect(stack, server, "walt") for _ in range(4)]
            assert await sockets[0].wait_closed(timeout=10) == LIMITED
            assert await send_echoes(sockets[1:], 8) == ["echo"] * 6 + ["rate_limited"] * 2
    finally:
        server.stop()
    assert "2 workers sharing redis://" in server.log


def test_the_demo_refuses_several_workers_without_redis() -> None:
    env = gate_env("memory://")
    result = subprocess.run(
        [sys.executable, "-m", "examples.run", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers 2 needs a shared storage" in result.stderr
    assert "WSGATE_STORAGE=redis://127.0.0.1:6379/0" in result.stderr
