"""The engine: the checks a gate builds, run as one ASGI app."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

import wsgate
from wsgate import (
    AuthMiddleware,
    ConnectionLimitMiddleware,
    FormatMiddleware,
    Gate,
    GateConfig,
    HeartbeatMiddleware,
    MessageSizeMiddleware,
    MetricsMiddleware,
    OriginMiddleware,
    RateLimitMiddleware,
    RevocationMiddleware,
)
from wsgate.engine import Engine
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "pipeline-test-secret-that-is-long-enough-0123456789"
PACKAGE = str(Path(wsgate.__file__).parent)


class Recorder:
    """Accepts, then keeps the text of every message it is handed until the client leaves."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.ended = threading.Event()  # set from the server's thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.ended.set()
                return
            self.texts.append(message["text"])


def test_the_gate_runs_the_layers_it_built_in_the_chains_order() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET))
    app = gate.wrap(Recorder(), path="/ws")
    assert isinstance(app, Engine)
    assert [type(layer) for layer in app.checks] == [
        OriginMiddleware,
        AuthMiddleware,
        RevocationMiddleware,
        ConnectionLimitMiddleware,
        MessageSizeMiddleware,
        HeartbeatMiddleware,
        RateLimitMiddleware,
        FormatMiddleware,
    ]
    assert gate.layers(HeartbeatMiddleware) == [app.checks[5]]
    assert isinstance(app.metrics, MetricsMiddleware)

    bare = Gate(GateConfig(jwt_secret=SECRET, rate_limit=None, max_connections_per_user=None))
    app = bare.wrap(Recorder(), protocol=None)
    assert isinstance(app, Engine)
    assert [type(layer) for layer in app.checks] == [
        OriginMiddleware,
        AuthMiddleware,
        RevocationMiddleware,
        MessageSizeMiddleware,
        HeartbeatMiddleware,
    ]


async def test_an_idle_connection_holds_one_frame_of_the_gate_and_its_receive() -> None:
    app = Gate(GateConfig(jwt_secret=SECRET, allow_missing_origin=True)).wrap(Recorder())
    token = TokenFactory(SECRET).valid("erin")
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/ws",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
        "extensions": {},
    }
    queue: asyncio.Queue[Message] = asyncio.Queue()
    queue.put_nowait({"type": "websocket.connect"})
    idle = asyncio.Event()

    async def receive() -> Message:
        if queue.empty():
            idle.set()  # the app waits for the client: the connection is open and idle
        return await queue.get()

    async def send(message: Message) -> None:
        pass

    async def serve() -> None:
        await app(scope, receive, send)

    task = asyncio.create_task(serve())
    await asyncio.wait_for(idle.wait(), timeout=5)
    awaiting: Any = task.get_coro()
    gate_frames = []
    while awaiting is not None and hasattr(awaiting, "cr_code"):
        if awaiting.cr_code.co_filename.startswith(PACKAGE):
            gate_frames.append(awaiting.cr_code.co_name)
        awaiting = awaiting.cr_await
    # The handshake's checks returned before the app started; no layer left a frame behind.
    assert gate_frames == ["__call__", "receive"]
    queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, timeout=5)


@pytest.mark.parametrize("limit", [3, None], ids=["connection-limit", "no-connection-limit"])
@pytest.mark.parametrize("policy", ["size", "rate"])
async def test_a_close_policy_drops_the_messages_queued_behind_it(
    policy: str, limit: int | None
) -> None:
    settings: dict[str, Any]
    if policy == "size":
        settings = {"message_size_policy": "close", "max_message_bytes": 64}
    else:
        settings = {"rate_limit": "1/minute", "rate_limit_close_after": 1}
    config = GateConfig(
        jwt_secret=SECRET,
        allow_missing_origin=True,
        max_connections_per_user=limit,
        **settings,
    )
    recorder = Recorder()
    texts = [json.dumps({"type": "note", "payload": n}) for n in range(4)]
    if policy == "size":
        texts[0] = json.dumps({"type": "note", "payload": "x" * 100})
    with LiveServer(Gate(config).wrap(recorder)) as server:
        async with WSClient(server.ws("/"), token=TokenFactory(SECRET).valid("frank")) as ws:
            for text in texts:
                await ws.send_text(text)
            closed = await ws.wait_closed()
        assert await anyio.to_thread.run_sync(recorder.ended.wait, 5)
    if policy == "size":
        assert closed == (1009, "message_too_large")
        assert recorder.texts == []
    else:
        assert closed == (1008, "rate_limit_abuse")
        assert recorder.texts == [texts[0]]
