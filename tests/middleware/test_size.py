"""MessageSizeMiddleware over real sockets, and the server's own cap behind it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute, websocket_session
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from tests.middleware.mounting import Mounting, gate
from wsgate import ConfigurationError
from wsgate._choices import SizePolicy
from wsgate.middleware.size import MessageSizeMiddleware
from wsgate.testing import LiveServer, WSClient

pytestmark = pytest.mark.anyio

LIMIT = 8192
EXPLANATION = (
    "Messages may be at most 8192 bytes (UTF-8 for text); this one was larger and was dropped."
)
TOO_LARGE = {
    "type": "error",
    "error": {"code": "message_too_large", "message": EXPLANATION, "limit": LIMIT},
}

seen: list[str | bytes] = []
"""Every message the app received, in order."""
app_done = threading.Event()
"""Set when the app's connection ends (the app runs in the server's thread)."""


@websocket_session
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message["text"] if message.get("text") is not None else message["bytes"]
            seen.append(data)
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)
    finally:
        app_done.set()


def sized(
    mounting: Mounting, app: ASGIApp, *, max_bytes: int = LIMIT, policy: SizePolicy = "refuse"
) -> ASGIApp:
    """``app`` behind the size check: the middleware alone, or inside a gate."""
    if mounting == "alone":
        return MessageSizeMiddleware(app, max_bytes=max_bytes, policy=policy)
    gated = gate(max_message_bytes=max_bytes, message_size_policy=policy)
    return gated.wrap(app, protocol=None, dev_bypass=True)


def app(mounting: Mounting) -> Starlette:
    return Starlette(
        routes=[
            WebSocketRoute("/ws", sized(mounting, echo)),
            WebSocketRoute("/close", sized(mounting, echo, policy="close")),
            WebSocketRoute("/tiny", sized(mounting, echo, max_bytes=1)),
            Route("/health", sized(mounting, PlainTextResponse("ok"))),
        ]
    )


@pytest.fixture(scope="module")
def server(mounting: Mounting) -> Iterator[LiveServer]:
    # The server's own cap: a small multiple of the gate's limit, as the docs recommend.
    with LiveServer(app(mounting), ws_max_size=4 * LIMIT) as live:
        yield live


@pytest.fixture(autouse=True)
def fresh_app_state() -> None:
    seen.clear()
    app_done.clear()


async def assert_open(ws: WSClient) -> None:
    """The connection still works: a small message comes straight back."""
    await ws.send_text("still here")
    assert await ws.receive() == "still here"


# What passes and what is refused


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("x" * LIMIT, LIMIT),
        ("é" * (LIMIT // 2), LIMIT),  # 2 bytes each
        ("€" * (LIMIT // 3), LIMIT - 2),  # 3 bytes each
        ("\U0001f600" * (LIMIT // 4), LIMIT),  # 4 bytes each
        ("", 0),
    ],
    ids=["ascii", "two-byte", "three-byte", "four-byte", "empty"],
)
async def test_text_up_to_the_limit_passes(server: LiveServer, text: str, size: int) -> None:
    assert len(text.encode()) == size
    async with WSClient(server.ws("/ws")) as ws:
        await ws.send_text(text)
        assert await ws.receive() == text
    assert seen == [text]


@pytest.mark.parametrize(
    "text",
    [
        "x" * (LIMIT + 1),
        "é" * (LIMIT // 2) + "x",
        "€" * (LIMIT // 3 + 1),
        "\U0001f600" * (LIMIT // 4 + 1),
        # As many characters as the limit, four times as many bytes: 32 KiB.
        "\U0001f600" * LIMIT,
    ],
    ids=["ascii", "two-byte", "three-byte", "four-byte", "limit-in-characters"],
)
async def test_text_over_the_limit_in_bytes_is_refused(server: LiveServer, text: str) -> None:
    assert len(text.encode()) > LIMIT
    async with WSClient(server.ws("/ws")) as ws:
        await ws.send_text(text)
        assert await ws.receive_json() == TOO_LARGE
        await assert_open(ws)
    assert seen == ["still here"]


async def test_binary_frames_are_counted_in_bytes(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        await ws.send_bytes(b"\x00" * LIMIT)
        assert await ws.receive() == b"\x00" * LIMIT
        await ws.send_bytes(b"\x00" * (LIMIT + 1))
        assert await ws.receive_json() == TOO_LARGE
        await assert_open(ws)
    assert seen == [b"\x00" * LIMIT, "still here"]


async def test_the_refused_message_is_not_parsed(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        # An id inside an oversized message is not echoed: reading it means parsing it.
        await ws.send_json({"type": "echo", "id": 7, "payload": "x" * LIMIT})
        answer = await ws.receive_json()
        assert answer == TOO_LARGE
        assert "id" not in answer
        await assert_open(ws)


async def test_a_tiny_limit(server: LiveServer) -> None:
    async with WSClient(server.ws("/tiny")) as ws:
        await ws.send_text("x")
        assert await ws.receive() == "x"
        await ws.send_text("é")  # one character, two bytes
        refused = await ws.receive_json()
        assert refused["error"]["code"] == "message_too_large"
        assert refused["error"]["limit"] == 1
        assert "at most 1 bytes" in refused["error"]["message"]


async def test_many_refusals_in_a_row_keep_the_connection(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        for _ in range(20):
            await ws.send_text("x" * (LIMIT + 1))
        for _ in range(20):
            assert await ws.receive_json() == TOO_LARGE
        await assert_open(ws)


# The close policy


async def test_close_policy_closes_with_1009(server: LiveServer) -> None:
    async with WSClient(server.ws("/close")) as ws:
        await ws.send_text("x" * LIMIT)
        assert await ws.receive() == "x" * LIMIT
        await ws.send_text("x" * (LIMIT + 1))
        await ws.send_text("queued behind it")
        assert await ws.wait_closed() == (1009, "message_too_large")
        received = [frame.data for frame in ws.history if frame.direction == "received"]
        assert received == ["x" * LIMIT]  # no error frame: the close says it all
    assert app_done.wait(5)
    # Neither the oversized message nor the one the server had queued behind it reached the app.
    assert seen == ["x" * LIMIT]


# The server's cap, in front of the middleware


async def test_the_server_cap_cuts_huge_messages_before_they_are_buffered(
    server: LiveServer,
) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        # Between the gate's limit and the server's cap: the middleware answers.
        await ws.send_text("x" * (2 * LIMIT))
        assert await ws.receive_json() == TOO_LARGE
        # Far beyond the server's cap: the protocol layer closes the connection with 1009.
        await ws.send_text("x" * (128 * LIMIT))  # 1 MiB
        code, _ = await ws.wait_closed()
        assert code == 1009
    assert seen == []
    # The server goes on serving other connections.
    async with WSClient(server.ws("/ws")) as other:
        await assert_open(other)


# Everything else passes through


async def test_http_requests_pass_through(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        response = await client.get("/health")
    assert (response.status_code, response.text) == (200, "ok")


# Configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_bytes": 0}, "max_bytes must be a positive number of bytes, not 0."),
        ({"max_bytes": -1}, "max_bytes must be a positive number of bytes, not -1."),
        ({"max_bytes": True}, "max_bytes must be a positive number of bytes, not True."),
        ({"max_bytes": 1.5}, "max_bytes must be a positive number of bytes, not 1.5."),
        ({"max_bytes": "8192"}, "max_bytes must be a positive number of bytes, not '8192'."),
        ({"policy": "drop"}, "policy must be one of 'refuse', 'close', not 'drop'."),
        ({"policy": None}, "policy must be one of 'refuse', 'close', not None."),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        MessageSizeMiddleware(echo, **options)
    assert str(refused.value) == message
