"""Error frames from any handler, through the gate's Connection (wsgate/connection.py): one
argument, ``to=``, everywhere, over real sockets; ``message_id=`` still works for one release,
with a DeprecationWarning."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.types import Message
from starlette.websockets import WebSocket

from wsgate import Connection, Gate, GateConfig, GatedEndpoint, NoGateUser, gate_connection
from wsgate.error_frames import INVALID_PARAMS, METHOD_NOT_FOUND
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "connection-test-secret-that-is-long-enough-0123456789"
TOKENS = TokenFactory(SECRET)  # a token per test: one made at import expires in a long run


async def answers_by_id(websocket: WebSocket) -> None:
    """Answers each message with an error frame, given ``to=`` its id alone."""
    await websocket.accept()
    async for message in websocket.iter_json():
        await gate_connection(websocket).send_error(
            INVALID_PARAMS, "Say it differently.", to=message["id"]
        )


class ById(GatedEndpoint):
    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        if message["type"] == "reply":
            await self.reply(websocket, {"type": "ok"}, to=message["id"])
        else:
            await self.error(websocket, METHOD_NOT_FOUND, "No.", to=message["id"])


@pytest.fixture
def server() -> Any:
    gate = Gate(GateConfig(jwt_secret=SECRET, allow_missing_origin=True))
    app = Starlette(routes=[gate.route("/raw", answers_by_id), gate.route("/endpoint", ById)])
    with LiveServer(app) as live:
        yield live


async def test_send_error_takes_the_id_itself_as_to(server: LiveServer) -> None:
    async with WSClient(server.ws("/raw"), token=TOKENS.valid("ann")) as ws:
        for answered in (7, "b-2"):
            await ws.send_json({"type": "say", "id": answered, "payload": "not echoed"})
            assert await ws.receive_json() == {
                "type": "error",
                "error": {"code": "invalid_params", "message": "Say it differently."},
                "id": answered,
            }


async def test_gated_endpoint_error_and_reply_take_the_id_itself_as_to(
    server: LiveServer,
) -> None:
    async with WSClient(server.ws("/endpoint"), token=TOKENS.valid("ann")) as ws:
        await ws.send_json({"type": "dance", "id": 3})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "method_not_found", "message": "No."},
            "id": 3,
        }
        await ws.send_json({"type": "reply", "id": "r"})
        assert await ws.receive_json() == {"type": "ok", "id": "r"}


def sent_to(frames: list[Message]) -> Any:
    async def send(message: Message) -> None:
        frames.append(message)

    return send


async def test_message_id_still_works_with_a_deprecation_warning_that_says_to_use_to() -> None:
    frames: list[Message] = []
    connection = Connection({"type": "websocket", "path": "/ws"}, sent_to(frames))
    with pytest.warns(DeprecationWarning, match=r"pass to=7 instead") as caught:
        await connection.send_error(INVALID_PARAMS, "No.", message_id=7)
    assert caught[0].filename == __file__  # pointed at the caller's line
    with pytest.warns(DeprecationWarning, match=r"error_object\(message_id=\.\.\.\)"):
        frame = connection.error_object(INVALID_PARAMS, "No.", message_id="x")
    assert orjson.loads(frames[0]["text"])["id"] == 7
    assert frame["id"] == "x"


async def test_to_echoes_only_a_valid_id_never_the_content() -> None:
    frames: list[Message] = []
    connection = Connection({"type": "websocket", "path": "/ws"}, sent_to(frames))
    for to in (
        {"type": "say", "id": 1.5, "payload": "SECRET"},  # not a valid id
        {"type": "websocket.receive", "text": '{"type": "say", "payload": "SECRET"}'},
        True,
        None,
    ):
        await connection.send_error(INVALID_PARAMS, "No.", to=to)
    assert all("id" not in orjson.loads(frame["text"]) for frame in frames)
    assert not any("SECRET" in frame["text"] for frame in frames)


def test_gate_connection_without_a_gate_says_what_to_do() -> None:
    with pytest.raises(NoGateUser, match=r"/ws has no gate in front of it.*gate\.route\(\)"):
        gate_connection({"type": "websocket", "path": "/ws"})
