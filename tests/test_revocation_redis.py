"""Revoking a user across processes: two example-app workers on one real redis-server, and
``python -m wsgate revoke`` run as a process of its own. The user's connections on both
workers close with 4003 within a second, and both refuse it until the revocation ends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from websockets.exceptions import ConnectionClosed

from tests.redis.server import (
    ROOT,
    TOKENS,
    GateProcess,
    RedisServer,
    gate_env,
    own_redis,
    redis_server,
    start_all,
)
from tests.test_revocation import TOKENS as IN_PROCESS_TOKENS
from tests.test_revocation import echoes, gated, opened
from wsgate.testing import LiveServer, WSClient

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

__all__ = ["own_redis", "redis_server"]  # the fixtures, used here

REVOKED = (4003, "revoked")
RESUBSCRIBED = 2.0
"""Seconds within which a worker whose subscription was down applies a revocation made
meanwhile, once Redis answers: its listener's longest backoff (1 s), a connect and a load,
and slack for a loaded machine."""
HANDSHAKES = 20


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GateProcess, GateProcess]]:
    """Two example-app workers sharing the session's Redis."""
    directory = tmp_path_factory.mktemp("revoke-pair")
    env = gate_env(redis_server.url, max_connections_per_user="off")
    a, b = GateProcess(directory, "a", env), GateProcess(directory, "b", env)
    try:
        start_all(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


def revoke_command(storage: str, user: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgate", "revoke", user, "--storage", storage, *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def revoke_printed(storage: str, user: str, *options: str) -> tuple[str, float]:
    """Run ``python -m wsgate revoke`` as a process of its own, without blocking the event
    loop (the clients keep reading): what it printed, and when (``time.monotonic()``), which
    is right after Redis took the revocation."""
    argv = [sys.executable, "-m", "wsgate", "revoke", user, "--storage", storage, *options]
    with anyio.fail_after(30):
        async with await anyio.open_process(argv, cwd=ROOT) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            printed = ""
            async for text in TextReceiveStream(process.stdout):
                printed += text
                if "\n" in printed:
                    break
            at = time.monotonic()
            errors = "".join([text async for text in TextReceiveStream(process.stderr)])
            assert await process.wait() == 0, errors
    return printed, at


async def whoami(stack: AsyncExitStack, server: GateProcess, token: str) -> WSClient:
    ws = WSClient(server.ws(), token=token, open_timeout=30)
    await stack.enter_async_context(ws)
    await ws.send_json({"type": "whoami"})
    await ws.expect("whoami", timeout=15)
    return ws


async def test_the_command_line_closes_the_users_connections_on_every_worker(
    pair: tuple[GateProcess, GateProcess], redis_server: RedisServer
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        on_a = await whoami(stack, a, TOKENS.valid("rita"))
        on_b = await whoami(stack, b, TOKENS.valid("rita"))
        other = await whoami(stack, b, TOKENS.valid("sam"))
        printed, started = await revoke_printed(redis_server.url, "rita", "--for", "3")
        assert printed.startswith("revoked rita until ")
        assert "told 2 worker process(es)" in printed
        assert await on_a.wait_closed(timeout=1) == REVOKED
        assert await on_b.wait_closed(timeout=1) == REVOKED
        assert time.monotonic() - started < 1
        await other.send_json({"type": "whoami"})
        assert (await other.expect("whoami"))["payload"]["user"] == "sam"
        # Both workers refuse rita's new handshakes, then let her in once it ends.
        for server in (a, b):
            refused = WSClient(server.ws(), token=TOKENS.valid("rita"), open_timeout=30)
            await refused.connect()
            assert await refused.wait_closed(timeout=5) == REVOKED
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            again = WSClient(a.ws(), token=TOKENS.valid("rita"), open_timeout=30)
            await again.connect()
            try:
                await again.send_json({"type": "whoami"})
                await again.expect("whoami", timeout=5)
            except ConnectionClosed:  # still revoked
                assert (again.close_code, again.close_reason) == REVOKED
                continue
            await again.close()
            break
        else:
            raise AssertionError("rita was still refused 10 s after a 3 s revocation")


async def test_a_token_is_revoked_on_every_worker(
    pair: tuple[GateProcess, GateProcess], redis_server: RedisServer
) -> None:
    a, b = pair
    leaked, other = TOKENS.valid("tess", jti="leaked-9"), TOKENS.valid("tess", jti="fine-10")
    async with AsyncExitStack() as stack:
        with_leaked = await whoami(stack, a, leaked)
        with_other = await whoami(stack, b, other)
        done = revoke_command(redis_server.url, "tess", "--jti", "leaked-9", "--for", "60")
        assert done.returncode == 0, done.stderr
        assert await with_leaked.wait_closed(timeout=1) == REVOKED
        await with_other.send_json({"type": "whoami"})
        await with_other.expect("whoami")
        refused = WSClient(b.ws(), token=leaked, open_timeout=30)
        await refused.connect()
        assert await refused.wait_closed(timeout=5) == REVOKED


async def test_a_worker_that_missed_the_message_applies_the_revocation_when_it_resubscribes(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    worker = GateProcess(tmp_path, "worker", gate_env(own_redis.url))
    try:
        start_all(worker)
        async with AsyncExitStack() as stack:
            held = await whoami(stack, worker, TOKENS.valid("uri"))
            # The worker cannot listen while it is paused: Redis restarts empty meanwhile,
            # and the revocation is made on the new one with nobody subscribed.
            worker.pause()
            try:
                own_redis.stop()
                own_redis.start()
                done = revoke_command(own_redis.url, "uri", "--for", "60")
            finally:
                worker.resume()
            started = time.monotonic()
            assert done.returncode == 0, done.stderr
            assert "told 0 worker process(es)" in done.stdout
            # Its listener finds the subscription gone at its next read, subscribes again
            # (at once, or after its backoff of 1 s at most), and loads the revocations.
            assert await held.wait_closed(timeout=RESUBSCRIBED) == REVOKED
            assert time.monotonic() - started < RESUBSCRIBED
            refused = WSClient(worker.ws(), token=TOKENS.valid("uri"), open_timeout=30)
            await refused.connect()
            assert await refused.wait_closed(timeout=5) == REVOKED
    finally:
        worker.stop()
    assert "Traceback" not in worker.log


def calls(server: RedisServer) -> dict[str, int]:
    """How many times Redis ran each command, from INFO commandstats."""
    stats: Any = server.command("INFO", "commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


@pytest.mark.parametrize("limit", [None, 3])
async def test_a_handshake_sends_no_command_to_redis_for_revocations(
    own_redis: RedisServer, limit: int | None
) -> None:
    _, app = gated(storage=own_redis.url, max_connections_per_user=limit)
    with LiveServer(app) as server:
        # The first handshake starts the listener, which subscribes and loads once.
        first = await opened(server, IN_PROCESS_TOKENS.valid("nina"))
        assert await echoes(first)
        await first.close()
        before = calls(own_redis)
        for _ in range(HANDSHAKES):
            client = await opened(server, IN_PROCESS_TOKENS.valid("nina"))
            assert await echoes(client)
            await client.close()
        after = calls(own_redis)
    spent = {name: after[name] - before.get(name, 0) for name in after}
    spent = {name: count for name, count in spent.items() if count}
    if limit is None:  # nothing else needs Redis: no command but the second calls()'s own
        assert spent == {"hello": 1, "info": 1}, spent
        return
    # The registry's scripts (EVALSHA, and the commands they run), and its removals; the
    # revocations' commands (SUBSCRIBE, ZRANGEBYSCORE, and the GET of old) not once.
    assert spent["evalsha"] >= HANDSHAKES
    for name in ("subscribe", "zrangebyscore", "get", "mget"):
        assert name not in spent, spent


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_before_the_first_load_the_backend_policy_decides(policy: str) -> None:
    # Nobody listens on port 1; no connection limit, so that only the revocations need Redis.
    _, app = gated(storage="redis://127.0.0.1:1/0", backend_policy=policy)
    with LiveServer(app) as server:
        for _ in range(2):
            client = await opened(server, IN_PROCESS_TOKENS.valid("olga"))
            if policy == "fail_open":
                assert await echoes(client)
                await client.close()
            else:
                assert await client.wait_closed(timeout=5) == (1013, "backend_unavailable")
