"""The wsgate example app: a small chat with rooms, and an MCP (JSON-RPC 2.0) endpoint.

Run it with ``make demo``, or ``uvicorn examples.app:app`` with ``WSGATE_*`` settings in the
environment. Endpoints:

* ``/ws``: JSON chat. In development a client without a token is let in as the dev user.
* ``/ws/secure``: the same, but a valid JWT is always required.
* ``/ws/{user_id}`` and ``/ws/v1/{user_id}``: the ``/ws`` handler, for the path's user only.
* ``/ws/mcp``: JSON-RPC 2.0 with the ``mcp`` subprotocol.
* ``/ws/config``, ``/ws/secure/config``, ``/ws/secure/health`` and ``/metrics``: discovery,
  health and Prometheus metrics (see :mod:`wsgate.discovery`).
* ``/``: a demo page for browsers, and ``POST /demo/token`` for its tokens (development only;
  see :mod:`examples.web`).

Every JSON endpoint answers ``{"type": "echo", "payload": X}`` with the same message and
``{"type": "whoami"}`` with the connection's user; a message's ``id`` is echoed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from examples.store import ChatSession, ChatStore, StartOnce, open_store
from examples.web import web_routes
from wsgate import (
    ErrorReply,
    Gate,
    GateConfig,
    GatedEndpoint,
    GateUser,
    InvalidParams,
    Verifier,
    gate_user,
    rpc_method,
)
from wsgate.close_codes import SLOW_CONSUMER
from wsgate.connection import Connection
from wsgate.discovery import discovery_routes
from wsgate.error_frames import INVALID_MESSAGE

logger = logging.getLogger("examples.app")

CHAT_SUBPROTOCOL = "chat"
MCP_SUBPROTOCOL = "mcp"
MCP_PROTOCOL_VERSION = "2025-06-18"
OWN_VARIABLES = ("WSGATE_DATABASE_URL",)
"""The app's own WSGATE_* variables, which GateConfig.from_env() must leave alone."""

ECHO_TOOL = {
    "name": "echo",
    "description": "Returns the text it is given.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


class Outbox:
    """The messages on their way to one room member, and the task that sends them.

    A broadcast only queues; the speaker never waits for a member. A member that stopped
    reading holds up nobody but itself, and once it is ``size`` messages behind it is closed
    with 1013 ``slow_consumer`` (the gate's ``send_timeout`` bounds the send in progress).
    """

    def __init__(self, websocket: WebSocket, connection: Connection, size: int) -> None:
        self.connection = connection
        self.queue: asyncio.Queue[str] = asyncio.Queue(size)
        self.writer = asyncio.get_running_loop().create_task(self._write(websocket))

    async def _write(self, websocket: WebSocket) -> None:
        with contextlib.suppress(Exception):  # the member left: its receive says so
            while True:
                await websocket.send_text(await self.queue.get())

    def offer(self, data: str) -> bool:
        """Queue ``data``; False when the member is too far behind and was closed."""
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.connection.close_soon(SLOW_CONSUMER)
            return False
        return True


class Rooms:
    """Who is in which chat room, for one process.

    Args:
        outbox: How many messages a member may fall behind before it is closed with 1013
            ``slow_consumer``.
    """

    def __init__(self, *, outbox: int = 256) -> None:
        self.members: defaultdict[str, set[WebSocket]] = defaultdict(set)
        self.outboxes: dict[WebSocket, Outbox] = {}
        self.outbox = outbox

    def join(self, room: str, websocket: WebSocket, connection: Connection) -> None:
        self.members[room].add(websocket)
        if websocket not in self.outboxes:
            self.outboxes[websocket] = Outbox(websocket, connection, self.outbox)

    def leave_all(self, websocket: WebSocket) -> None:
        for room in [room for room, sockets in self.members.items() if websocket in sockets]:
            self.members[room].discard(websocket)
            if not self.members[room]:
                del self.members[room]
        outbox = self.outboxes.pop(websocket, None)
        if outbox is not None:
            outbox.writer.cancel()

    async def broadcast(self, room: str, message: dict[str, Any]) -> None:
        data = orjson.dumps(message).decode()
        for websocket in list(self.members.get(room, ())):
            if not self.outboxes[websocket].offer(data):
                self.leave_all(websocket)


def _room(message: dict[str, Any]) -> str:
    room = message.get("room")
    if not isinstance(room, str) or not room or len(room) > 100:
        raise InvalidParams('Give "room" as a string of 1 to 100 characters.')
    return room


class ChatEndpoint(GatedEndpoint):
    """The JSON chat behind ``/ws``, ``/ws/secure``, ``/ws/{user_id}`` and ``/ws/v1/{user_id}``.

    ``say`` stores the message and broadcasts it once the store has committed it, and
    ``history`` reads the room's last messages, each in a chat-store session of its own (see
    :meth:`message_scope`).
    """

    protocol = "json"
    session: ChatSession
    heard: list[tuple[str, dict[str, Any]]]
    """The frames to broadcast once this message's store session has committed."""

    @property
    def user(self) -> GateUser:
        return gate_user(self.scope)

    @property
    def rooms(self) -> Rooms:
        rooms: Rooms = self.scope["app"].state.rooms
        return rooms

    def message_scope(
        self, websocket: WebSocket, message: Any
    ) -> AbstractAsyncContextManager[object]:
        if message.get("type") in ("say", "history"):
            return self._store_session()
        return contextlib.nullcontext()  # echo, whoami and join need no store

    @asynccontextmanager
    async def _store_session(self) -> AsyncIterator[None]:
        store: ChatStore = self.scope["app"].state.store
        heard: list[tuple[str, dict[str, Any]]] = []
        async with store.session() as session:  # commit on success, rollback on error
            self.session, self.heard = session, heard
            yield
        for room, frame in heard:  # after the commit: a member hears only what is stored
            await self.rooms.broadcast(room, frame)

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        kind = message["type"]
        if kind == "echo":
            return {"type": "echo", "payload": message.get("payload")}
        if kind == "whoami":
            return {
                "type": "whoami",
                "payload": {"user": self.user.identity, "dev": self.user.is_dev},
            }
        if kind == "join":
            room = _room(message)
            self.rooms.join(room, websocket, self.connection)
            return {"type": "joined", "room": room}
        if kind == "say":
            room, text = _room(message), message.get("text")
            if not isinstance(text, str):
                raise InvalidParams('say needs a string "text".')
            if websocket not in self.rooms.members.get(room, ()):
                raise ErrorReply(INVALID_MESSAGE, f"Join room {room!r} before speaking in it.")
            await self.session.add(room, self.user.identity, text)  # fails before it is heard
            # Heard once committed, so that a member's next history holds it.
            self.heard.append(
                (room, {"type": "said", "room": room, "from": self.user.identity, "text": text})
            )
            return None
        if kind == "history":
            room = _room(message)
            return {
                "type": "history",
                "room": room,
                "payload": await self.session.history(room),
            }
        return await super().on_message(websocket, message)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.rooms.leave_all(websocket)


class MCPEndpoint(GatedEndpoint):
    """A minimal MCP server over JSON-RPC 2.0: ``initialize``, ``ping``, ``tools/*``."""

    protocol = "jsonrpc"

    async def on_connect(self, websocket: WebSocket) -> None:
        # Echo "mcp" only when offered: a server may not pick a subprotocol the client lacks.
        offered = MCP_SUBPROTOCOL in websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=MCP_SUBPROTOCOL if offered else None)

    @rpc_method("initialize")
    async def initialize(self, websocket: WebSocket, params: Any) -> dict[str, Any]:
        return {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "wsgate-example", "version": "1.0"},
        }

    @rpc_method("tools/list")
    async def list_tools(self, websocket: WebSocket, params: Any) -> dict[str, Any]:
        return {"tools": [ECHO_TOOL]}

    @rpc_method("tools/call")
    async def call_tool(self, websocket: WebSocket, params: Any) -> dict[str, Any]:
        if (
            not isinstance(params, dict)
            or params.get("name") != "echo"
            or not isinstance(params.get("arguments"), dict)
            or not isinstance(params["arguments"].get("text"), str)
        ):
            raise InvalidParams('tools/call needs {"name": "echo", "arguments": {"text": "..."}}.')
        return {"content": [{"type": "text", "text": params["arguments"]["text"]}]}

    @rpc_method("notifications/initialized")
    async def initialized(self, websocket: WebSocket, params: Any) -> None:
        return None


def create_app(
    config: GateConfig | None = None,
    *,
    verifier: Verifier | None = None,
    database_url: str | None = None,
) -> Starlette:
    """Build the example app.

    Args:
        config: The gate's settings; by default read from the ``WSGATE_*`` environment.
        verifier: A verifier to use instead of the one the config describes.
        database_url: Where chat messages are stored; by default ``WSGATE_DATABASE_URL``,
            else a SQLite file in the working directory, or memory when SQLAlchemy or
            aiosqlite is not installed (see :func:`examples.store.open_store`).
    """
    gate = Gate(config or GateConfig.from_env(extra_variables=OWN_VARIABLES), verifier=verifier)
    # Started by the lifespan, or by the first message that needs it when the server runs
    # no lifespan (daphne).
    store = StartOnce(open_store(database_url or os.environ.get("WSGATE_DATABASE_URL")))
    open_in_development = gate.config.is_development
    hints = {"json_endpoint": "/ws", "jsonrpc_endpoint": "/ws/mcp"}
    chat = {"subprotocols": [CHAT_SUBPROTOCOL], **hints}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start()
        yield
        await store.aclose()
        await gate.aclose()

    app = Starlette(
        routes=[
            gate.route("/ws", ChatEndpoint, dev_bypass=open_in_development, **chat),
            gate.route("/ws/secure", ChatEndpoint, dev_bypass=False, **chat),
            gate.route(
                "/ws/mcp",
                MCPEndpoint,
                protocol="jsonrpc",
                dev_bypass=open_in_development,
                subprotocols=[MCP_SUBPROTOCOL],
                **hints,
            ),
            gate.route("/ws/v1/{user_id}", ChatEndpoint, dev_bypass=open_in_development, **chat),
            gate.route("/ws/{user_id}", ChatEndpoint, dev_bypass=open_in_development, **chat),
            *web_routes(gate.config),  # the demo page, wsgate.js, the dev-only token endpoint
            *discovery_routes(gate),  # /ws/config, /ws/secure/config, /ws/secure/health, /metrics
        ],
        lifespan=lifespan,
    )
    app.state.rooms = Rooms()
    app.state.gate = gate
    app.state.store = store
    return app


class _AppFromEnvironment:
    """``examples.app:app``: the example app, built from the environment at its first call.

    A plain module attribute, so that every server finds it (Hypercorn evaluates the name in
    the module's namespace, where a module ``__getattr__`` is never asked), and importing the
    module (``create_app``, in tests) still reads no environment. A configuration mistake
    answers the lifespan startup with ``lifespan.startup.failed`` and the error, so the server
    exits with it at start-up even when it only tries lifespan (uvicorn's ``auto``).
    """

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except Exception as exc:
                if scope["type"] != "lifespan":
                    raise
                await receive()  # lifespan.startup
                message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                await send({"type": "lifespan.startup.failed", "message": message})
                return
        await self._app(scope, receive, send)


app = _AppFromEnvironment()
