"""Revoking a user across processes: two example-app workers on one real redis-server, and
``python -m wsgate revoke`` run as a process of its own. The user's connections on both
workers close with 4003 within a second, and both refuse it until the revocation ends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest
from websockets.exceptions import ConnectionClosed

from tests.redis.server import (
    ROOT,
    TOKENS,
    GateProcess,
    RedisServer,
    gate_env,
    redis_server,
    start_all,
)
from wsgate.testing import WSClient

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

__all__ = ["redis_server"]  # the fixture, used here

REVOKED = (4003, "revoked")


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
        done = revoke_command(redis_server.url, "rita", "--for", "3")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("revoked rita until ")
        assert "told 2 worker process(es)" in done.stdout
        started = time.monotonic()
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
