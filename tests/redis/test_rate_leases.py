"""Rate-limit leases across real processes: two example apps under uvicorn on one real
redis-server, one user sending fast through both.

Each worker counts a fast sender's messages a lease at a time; together they must never let
the user past the rate, and they may lose at most a lease per worker to units they counted
and did not spend (docs/rate-limit.md, "Leases on a shared storage").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest

from tests.redis.server import TOKENS, GateProcess, RedisServer, gate_env, start_all
from tests.redis.test_ratelimit_batch import RedisCounters
from wsgate.testing import WSClient

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RATE = 100  # a minute: leases of at most 10 units
LEASE = 10
MESSAGES = 130
WITHIN = 60
"""The first messages, well within the budget, whose round trips are counted."""


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GateProcess, GateProcess]]:
    directory = tmp_path_factory.mktemp("leases")
    env = gate_env(redis_server.url, rate_limit=f"{RATE}/minute")
    a, b = GateProcess(directory, "a", env), GateProcess(directory, "b", env)
    try:
        start_all(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


def evalsha_calls(server: RedisServer) -> int:
    counters = RedisCounters(server)
    try:
        return counters.read()[1]
    finally:
        counters.close()


async def test_two_workers_leasing_hold_the_rate_together(
    pair: tuple[GateProcess, GateProcess], redis_server: RedisServer
) -> None:
    a, b = pair
    async with AsyncExitStack() as stack:
        sockets = []
        for server in (a, b):
            ws = WSClient(server.ws(), token=TOKENS.valid("lena"), open_timeout=30)
            sockets.append(await stack.enter_async_context(ws))
        answers = []
        hits = 0
        # Ten messages through one worker, then ten through the other, so that each
        # spends its leases; the answers are awaited one by one.
        for n in range(MESSAGES):
            if n == 0:
                before = evalsha_calls(redis_server)
            ws = sockets[(n // 10) % 2]
            await ws.send_json({"type": "echo", "payload": n})
            answer = await ws.receive_json(timeout=15)
            answers.append(answer["type"] if answer["type"] == "echo" else answer["error"]["code"])
            if n == WITHIN - 1:
                hits = evalsha_calls(redis_server) - before
    echoed = answers.count("echo")
    assert answers[:WITHIN] == ["echo"] * WITHIN
    assert answers.count("rate_limited") == MESSAGES - echoed
    # Never past the rate; at most a lease per worker lost to units counted and not spent.
    assert RATE - 2 * (LEASE - 1) <= echoed <= RATE
    # Within the budget, far fewer round trips than messages: leases of 1, 2, 4 and 8 units
    # for each worker's first ten, then of 10 (the connections were made before counting).
    assert hits <= WITHIN // 3
