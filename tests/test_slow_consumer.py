"""Slow consumers: a client that stops reading holds up nobody but itself.

The stalled readers here are raw sockets with a tiny receive buffer (``tests.abuse.raw``), so
the server's buffers fill after a few hundred kilobytes, over real loopback TCP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.websockets import WebSocket

from examples.app import Rooms, create_app
from tests.abuse.raw import RawClient
from tests.conftest import example_config
from wsgate import Environment, Gate, GateConfig, GatedEndpoint
from wsgate.connection import Connection
from wsgate.exceptions import ConfigurationError
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SEND_TIMEOUT = 4.0
CHUNK = "x" * 16384


async def wait_until(condition: Callable[[], bool], within: float = 30.0) -> None:
    """Poll ``condition`` until it holds, for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not true after {within} s"
        await anyio.sleep(0.02)


class Probe:
    """What the server-side endpoint saw, read by the test from its own thread."""

    def __init__(self) -> None:
        self.flooded: Connection | None = None
        self.flood_ended_at: float | None = None


def flood_app(probe: Probe) -> Any:
    class Flood(GatedEndpoint):
        async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
            if message["type"] == "flood":
                probe.flooded = self.connection
                for _ in range(message["payload"]):
                    await websocket.send_text(CHUNK)  # dropped once it is closed
                    if self.connection.closed:
                        break
                probe.flood_ended_at = time.monotonic()
                return None
            return {"type": "echo", "payload": message.get("payload")}

    config = GateConfig(
        environment=Environment.DEVELOPMENT,
        dev_bypass=True,
        allow_missing_origin=True,
        rate_limit=None,
        max_connections_per_user=None,
        heartbeat_interval=None,
        send_timeout=SEND_TIMEOUT,
    )
    return Gate(config).wrap(Flood)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server(probe: Probe) -> Iterator[LiveServer]:
    with LiveServer(flood_app(probe)) as server:
        yield server


async def test_a_stalled_reader_is_closed_with_1013_and_holds_up_nobody(
    server: LiveServer, probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wsgate.connection")
    stalled = await RawClient.connect(server.host, server.port, "/", receive_buffer=4096)
    try:
        await stalled.send_text(json.dumps({"type": "flood", "payload": 5000}))
        await wait_until(lambda: probe.flooded is not None)
        assert probe.flooded is not None
        assert probe.flooded.send_timeout == SEND_TIMEOUT  # the Gate passed it down

        # While the server waits on the stalled reader, everyone else is served.
        async with WSClient(server.ws("/")) as first, WSClient(server.ws("/")) as second:
            for number in range(20):
                for client in (first, second):
                    await client.send_json({"type": "echo", "payload": number})
                    assert (await client.receive_json())["payload"] == number
        assert probe.flood_ended_at is None, "the flood ended before the others were served"

        # Then the stalled send times out: the connection is closed with slow_consumer, and
        # the flood loop ends at once, its later sends dropped.
        await wait_until(lambda: probe.flood_ended_at is not None)
        assert (probe.flooded.close_code, probe.flooded.close_reason) == (1013, "slow_consumer")
        assert [record.getMessage() for record in caplog.records] == [
            f"closing connection {probe.flooded.id} with 1013 slow_consumer: the client read "
            f"nothing for send_timeout={SEND_TIMEOUT:g} s"
        ]

        # The client reads again: whole frames, then the close frame.
        frames, close = await stalled.read_until_close()
        assert frames
        assert all(frame.payload == CHUNK.encode() for frame in frames)
        assert close.close == (1013, "slow_consumer")
    finally:
        stalled.abort()
    # The task that delivered the close frame is gone once the client read it.
    await wait_until(lambda: probe.flooded is not None and probe.flooded.pending_tasks == 0)


async def test_a_client_that_pauses_for_less_than_send_timeout_is_not_closed(
    server: LiveServer, probe: Probe
) -> None:
    # Back-pressure still works: the sender waits while the client catches up.
    async with WSClient(server.ws("/")) as ws:
        await ws.send_json({"type": "flood", "payload": 400})  # 6.5 MB
        await anyio.sleep(SEND_TIMEOUT / 4)  # the client looks away, then reads again
        for _ in range(400):
            assert await ws.receive(timeout=30) == CHUNK
        await ws.send_json({"type": "echo", "payload": "still open"})
        assert (await ws.receive_json())["payload"] == "still open"
    assert probe.flooded is not None
    assert probe.flooded.close_code is None  # the client closed it, not the gate


async def test_a_stalled_room_member_does_not_slow_the_room(
    tokens: TokenFactory, tmp_path: Path
) -> None:
    # A send_timeout far longer than the test: any wait on the stalled member would show.
    config = example_config(
        Environment.PRODUCTION, rate_limit=None, send_timeout=120.0, max_message_bytes=65536
    )
    app = create_app(config, database_url=f"sqlite+aiosqlite:///{tmp_path / 'chat.sqlite3'}")
    app.state.rooms = Rooms(outbox=16)
    # 5 MB for each member: more than the stalled member's socket buffers hold (about 3 MB).
    room, count, text = f"room-{uuid.uuid4().hex[:6]}", 160, "y" * 32000

    def user() -> str:
        return f"user-{uuid.uuid4().hex[:10]}"

    with LiveServer(app, ws_max_size=config.server_max_size) as server:
        stalled = await RawClient.connect(
            server.host,
            server.port,
            "/ws",
            headers={"Authorization": f"Bearer {tokens.valid(user())}"},
            receive_buffer=4096,
        )
        try:
            await stalled.send_text(json.dumps({"type": "join", "room": room}))
            joined = await stalled.read_frame()
            assert json.loads(joined.payload) == {"type": "joined", "room": room}
            # From here on the stalled member reads nothing.

            readers = [WSClient(server.ws("/ws"), token=tokens.valid(user())) for _ in range(3)]
            for reader in readers:
                await reader.connect()
                await reader.send_json({"type": "join", "room": room})
                await reader.expect("joined")

            async def read_all(reader: WSClient) -> list[str]:
                said: list[str] = []
                while len(said) < count:
                    message = await reader.receive_json(timeout=30)
                    if message["type"] == "said":
                        said.append(message["text"])
                return said

            with anyio.fail_after(60):
                speaker = readers[0]
                for number in range(count):
                    await speaker.send_json(
                        {"type": "say", "room": room, "text": f"{number:04d}{text}"}
                    )
                received = await asyncio.gather(*(read_all(reader) for reader in readers))
            expected = [f"{number:04d}{text}" for number in range(count)]
            assert all(said == expected for said in received)
            for reader in readers:
                await reader.close()

            # The stalled member got a prefix of the room, in order, then 1013.
            frames, close = await stalled.read_until_close()
            said = [json.loads(frame.payload)["text"] for frame in frames]
            assert said == expected[: len(said)]
            assert len(said) < count
            assert close.close == (1013, "slow_consumer")
        finally:
            stalled.abort()


def test_send_timeout_option() -> None:
    assert GateConfig().send_timeout == 10.0
    env = {"WSGATE_ALLOW_MISSING_ORIGIN": "true"}
    assert GateConfig.from_env({**env, "WSGATE_SEND_TIMEOUT": "2.5"}).send_timeout == 2.5
    assert GateConfig.from_env({**env, "WSGATE_SEND_TIMEOUT": "off"}).send_timeout is None
    for bad in (0, -1, float("nan"), True, "10"):
        with pytest.raises(ConfigurationError, match="send_timeout"):
            GateConfig(send_timeout=bad)  # type: ignore[arg-type]


class _Server:
    """An ASGI send that, like uvicorn's, waits while the socket's buffer is full."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent: list[Any] = []
        self.fail: BaseException | None = None

    async def send(self, message: Any) -> None:
        await self.writable.wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(message["type"])


def _connection(server: _Server, send_timeout: float | None) -> Connection:
    scope = {"type": "websocket", "path": "/", "wsgate.send_timeout": send_timeout}
    connection, _ = Connection.of(scope, server.send)
    return connection


async def test_send_waits_for_the_server_then_finishes() -> None:
    server = _Server()
    connection = _connection(server, 5.0)
    await connection.send({"type": "websocket.accept"})
    server.writable.clear()
    sending = asyncio.get_running_loop().create_task(connection.send({"type": "websocket.send"}))
    await asyncio.sleep(0.05)
    assert not sending.done()
    server.writable.set()
    await asyncio.wait_for(sending, 5)
    assert server.sent == ["websocket.accept", "websocket.send"]
    assert not connection.closed


async def test_send_passes_errors_and_cancellation_through() -> None:
    server = _Server()
    connection = _connection(server, 5.0)
    await connection.send({"type": "websocket.accept"})
    server.fail = OSError("gone")
    with pytest.raises(OSError, match="gone"):  # raised without waiting
        await connection.send({"type": "websocket.send"})
    server.writable.clear()
    sending = asyncio.get_running_loop().create_task(connection.send({"type": "websocket.send"}))
    await asyncio.sleep(0.05)
    server.writable.set()
    with pytest.raises(OSError, match="gone"):  # raised after waiting
        await asyncio.wait_for(sending, 5)
    server.fail = None
    server.writable.clear()
    sending = asyncio.get_running_loop().create_task(connection.send({"type": "websocket.send"}))
    await asyncio.sleep(0.05)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert not server.writable._waiters  # the server's wait was cleaned up
    assert not connection.closed


async def test_send_times_out_into_slow_consumer() -> None:
    server = _Server()
    connection = _connection(server, 0.2)
    await connection.send({"type": "websocket.accept"})
    server.writable.clear()
    await asyncio.wait_for(connection.send({"type": "websocket.send"}), 5)  # returns, dropped
    assert (connection.close_code, connection.close_reason) == (1013, "slow_consumer")
    await connection.send({"type": "websocket.send"})  # dropped at once
    assert connection.pending_tasks == 1  # the close frame, waiting for the client
    server.writable.set()
    await wait_until(lambda: connection.pending_tasks == 0, within=5)
    assert server.sent == ["websocket.accept", "websocket.close"]
