"""The wsgate example app: a small chat with rooms, and an MCP (JSON-RPC 2.0) endpoint.

Run it with ``make demo``, or ``uvicorn examples.app:app`` with ``WSGATE_*`` settings in the
environment. Endpoints:

* ``/ws``: JSON chat. In development a client without a token is let in as the dev user.
* ``/ws/secure``: the same, but a valid JWT is always required.
* ``/ws/{user_id}`` and ``/ws/v1/{user_id}``: the ``/ws`` handler, for the path's user only.
* ``/ws/mcp``: JSON-RPC 2.0 with the ``mcp`` subprotocol.

Every JSON endpoint answers ``{"type": "echo", "payload": X}`` with the same message and
``{"type": "whoami"}`` with the connection's user; a message's ``id`` is echoed back.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsgate import Gate, GateConfig, GateUser

logger = logging.getLogger("examples.app")

CHAT_SUBPROTOCOL = "chat"
MCP_SUBPROTOCOL = "mcp"
MCP_PROTOCOL_VERSION = "2025-06-18"

ECHO_TOOL = {
    "name": "echo",
    "description": "Returns the text it is given.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


class Rooms:
    """Who is in which chat room, for one process."""

    def __init__(self) -> None:
        self.members: defaultdict[str, set[WebSocket]] = defaultdict(set)

    def join(self, room: str, websocket: WebSocket) -> None:
        self.members[room].add(websocket)

    def leave_all(self, websocket: WebSocket) -> None:
        for room in [room for room, sockets in self.members.items() if websocket in sockets]:
            self.members[room].discard(websocket)
            if not self.members[room]:
                del self.members[room]

    async def broadcast(self, room: str, message: dict[str, Any]) -> None:
        data = orjson.dumps(message).decode()
        for websocket in list(self.members.get(room, ())):
            try:
                await websocket.send_text(data)
            except Exception:  # a member that just left must not break the others
                self.leave_all(websocket)


def _error(code: str, message: str, message_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": {"code": code, "message": message}}
    if message_id is not None:
        frame["id"] = message_id
    return frame


class ChatEndpoint(WebSocketEndpoint):
    """The JSON chat behind ``/ws``, ``/ws/secure``, ``/ws/{user_id}`` and ``/ws/v1/{user_id}``."""

    encoding = "text"

    @property
    def user(self) -> GateUser:
        user: GateUser = self.scope["user"]
        return user

    @property
    def rooms(self) -> Rooms:
        rooms: Rooms = self.scope["app"].state.rooms
        return rooms

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            await websocket.send_json(_error("invalid_json", "The message is not valid JSON."))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await websocket.send_json(
                _error("invalid_message", 'A message is a JSON object with a string "type".')
            )
            return
        reply = await self.handle(websocket, message)
        if reply is not None:
            if "id" in message:
                reply["id"] = message["id"]
            await websocket.send_text(orjson.dumps(reply).decode())

    async def handle(self, websocket: WebSocket, message: dict[str, Any]) -> dict[str, Any] | None:
        kind = message["type"]
        if kind == "echo":
            return {"type": "echo", "payload": message.get("payload")}
        if kind == "whoami":
            return {
                "type": "whoami",
                "payload": {"user": self.user.identity, "dev": self.user.is_dev},
            }
        if kind == "join":
            room = message.get("room")
            if not isinstance(room, str) or not room:
                return _error("invalid_message", 'join needs a non-empty string "room".')
            self.rooms.join(room, websocket)
            return {"type": "joined", "room": room}
        if kind == "say":
            room, text = message.get("room"), message.get("text")
            if not isinstance(room, str) or not isinstance(text, str):
                return _error("invalid_message", 'say needs string "room" and "text".')
            if websocket not in self.rooms.members.get(room, ()):
                return _error("not_in_room", f"Join room {room!r} before speaking in it.")
            await self.rooms.broadcast(
                room, {"type": "said", "room": room, "from": self.user.identity, "text": text}
            )
            return None
        return _error("unknown_type", f"Unknown message type {kind!r}.")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.rooms.leave_all(websocket)


class MCPEndpoint(WebSocketEndpoint):
    """A minimal MCP server over JSON-RPC 2.0: ``initialize``, ``ping``, ``tools/*``."""

    encoding = "text"

    async def on_connect(self, websocket: WebSocket) -> None:
        # Echo "mcp" only when offered: a server may not pick a subprotocol the client lacks.
        offered = MCP_SUBPROTOCOL in websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=MCP_SUBPROTOCOL if offered else None)

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        try:
            request = orjson.loads(data)
        except orjson.JSONDecodeError:
            await self.reply(websocket, _rpc_error(None, -32700, "Parse error"))
            return
        request_id = request.get("id") if isinstance(request, dict) else None
        valid_id = isinstance(request_id, (str, int)) and not isinstance(request_id, bool)
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or ("id" in request and not valid_id)
        ):
            detail = (
                'A request is an object with "jsonrpc": "2.0", a string "method" and '
                'a string or integer "id".'
            )
            error = _rpc_error(request_id if valid_id else None, -32600, "Invalid Request", detail)
            await self.reply(websocket, error)
            return
        if "id" not in request:
            return  # a notification: no answer, whatever it was
        response = self.call(request["method"], request.get("params"))
        response["id"] = request_id
        await self.reply(websocket, response)

    def call(self, method: str, params: Any) -> dict[str, Any]:
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": MCP_PROTOCOL_VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "wsgate-example", "version": "1.0"},
            }
        elif method == "ping":
            result = {}
        elif method == "tools/list":
            result = {"tools": [ECHO_TOOL]}
        elif method == "tools/call":
            if (
                not isinstance(params, dict)
                or params.get("name") != "echo"
                or not isinstance(params.get("arguments"), dict)
                or not isinstance(params["arguments"].get("text"), str)
            ):
                return _rpc_error(
                    None,
                    -32602,
                    "Invalid params",
                    'tools/call needs {"name": "echo", "arguments": {"text": "..."}}.',
                )
            result = {"content": [{"type": "text", "text": params["arguments"]["text"]}]}
        else:
            return _rpc_error(None, -32601, "Method not found", f"No method {method!r}.")
        return {"jsonrpc": "2.0", "result": result}

    async def reply(self, websocket: WebSocket, response: dict[str, Any]) -> None:
        await websocket.send_text(orjson.dumps(response).decode())


def _rpc_error(
    request_id: Any, code: int, message: str, detail: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["data"] = {"detail": detail}
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def create_app(config: GateConfig | None = None) -> Starlette:
    """Build the example app; without ``config``, from the ``WSGATE_*`` environment."""
    gate = Gate(config or GateConfig.from_env())
    open_in_development = gate.config.is_development
    chat = gate.wrap(ChatEndpoint, dev_bypass=open_in_development, subprotocols=[CHAT_SUBPROTOCOL])
    secure = gate.wrap(ChatEndpoint, dev_bypass=False, subprotocols=[CHAT_SUBPROTOCOL])
    mcp = gate.wrap(MCPEndpoint, dev_bypass=open_in_development, subprotocols=[MCP_SUBPROTOCOL])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gate.aclose()

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", chat),
            WebSocketRoute("/ws/secure", secure),
            WebSocketRoute("/ws/mcp", mcp),
            WebSocketRoute("/ws/v1/{user_id}", chat),
            WebSocketRoute("/ws/{user_id}", chat),
        ],
        lifespan=lifespan,
    )
    app.state.rooms = Rooms()
    app.state.gate = gate
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn examples.app:app` reads the environment only when it asks for `app`, so
    # importing this module (create_app, in tests) has no side effects.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
