"""A connection leaves nothing for the garbage collector, however it ends.

Reference cycles (the scope and the connection holding each other, say) are freed by the
collector alone, and in a server with many objects its passes cost more per connection than
the whole gate does. Objects of wsgate found in the collector's garbage mean a cycle came
back: these tests keep everything it finds (``gc.DEBUG_SAVEALL``) while real connections, over
real sockets, open and end every way they can.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.websockets import WebSocket

from tests.redis.server import eventually
from wsgate import Gate, GateConfig, GatedEndpoint
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "garbage-test-secret-that-is-long-enough-0123456789"
TOKENS = TokenFactory(SECRET)


class Echo(GatedEndpoint):
    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> None:
        await websocket.send_json({"type": "echo", "payload": message.get("payload")})


@pytest.fixture
def server() -> Iterator[tuple[LiveServer, Gate]]:
    config = GateConfig(
        jwt_secret=SECRET,
        allow_missing_origin=True,
        max_connections_per_user=1,
        max_message_bytes=256,
        message_size_policy="close",
    )
    gate = Gate(config)
    app = Starlette(routes=[gate.route("/ws", Echo)])
    with LiveServer(app) as live:
        yield live, gate


def wsgate_garbage() -> list[str]:
    """Collect, and name the objects of wsgate the collector found unreachable."""
    gc.collect()
    found = sorted(
        f"{type(item).__module__}.{type(item).__qualname__}"
        for item in gc.garbage
        if type(item).__module__.startswith("wsgate")
    )
    gc.garbage.clear()
    return found


@pytest.fixture
def saved_garbage() -> Iterator[None]:
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_connections_that_end_every_way_leave_no_cycles(
    server: tuple[LiveServer, Gate], saved_garbage: None
) -> None:
    live, gate = server
    # Served, then closed by the client.
    for n in range(5):
        async with WSClient(live.ws("/ws"), token=TOKENS.valid(f"user-{n}")) as ws:
            await ws.send_json({"type": "echo", "payload": n})
            assert (await ws.receive_json())["payload"] == n
    # Refused at the handshake: a bad token.
    async with WSClient(live.ws("/ws"), token="not-a-token") as refused:
        assert (await refused.wait_closed())[0] == 1008
    # Evicted by the same user's next connection (one connection per user).
    async with WSClient(live.ws("/ws"), token=TOKENS.valid("eve")) as first:
        await first.send_json({"type": "echo", "payload": 1})
        await first.receive_json()
        async with WSClient(live.ws("/ws"), token=TOKENS.valid("eve")) as second:
            assert await first.wait_closed() == (4008, "connection_limit")
            # Closed by the gate for a message over the size limit.
            await second.send_json({"type": "echo", "payload": "x" * 300})
            assert await second.wait_closed() == (1009, "message_too_large")
    await eventually(gate.backend.registry.total, 0)  # every connection has ended
    assert wsgate_garbage() == []
