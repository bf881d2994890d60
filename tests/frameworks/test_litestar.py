"""A gate in front of Litestar websocket handlers, over real sockets (docs/litestar.md).

Litestar runs its middlewares after routing, with the path parameters in the scope, and
takes a function of the app as a route's ``middleware``: ``lambda app: gate.wrap(app)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar, Router, WebSocket, get, websocket
from litestar.handlers import WebsocketRouteHandler
from litestar.types import ASGIApp as LitestarApp
from starlette.types import ASGIApp, Message, Scope

from wsgate import Connection, Gate, GateConfig, GateUser, decoded, gate_user
from wsgate.error_frames import METHOD_NOT_FOUND
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "litestar-tests-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"
TOKENS = TokenFactory(SECRET)
CHAT = "/ws/chat/{user_id}"


@websocket("/ws/public")
async def public(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    async for text in socket.iter_data("text"):
        await socket.send_text(text)


@websocket("/ws/whoami")
async def whoami(socket: WebSocket[GateUser, Any, Any]) -> None:
    await socket.accept()
    await socket.send_json({"user": socket.user.identity})
    await socket.close()


@get("/")
async def index() -> str:
    return "home"


def gated(gate: Gate, **options: Any) -> Callable[[LitestarApp], LitestarApp]:
    """``lambda app: gate.wrap(app, **options)``, typed: Litestar types ASGI scopes and
    messages as TypedDicts, and wsgate as Starlette's mappings, and the casts say they agree.
    A function, as docs/litestar.md says: Litestar deep-copies the middleware of a Router, and
    a bound ``gate.wrap`` would take a copy of the gate with it."""

    def middleware(app: LitestarApp) -> LitestarApp:
        return cast(LitestarApp, gate.wrap(cast(ASGIApp, app), **options))

    return middleware


def chat_handler(gate: Gate) -> WebsocketRouteHandler:
    """A chat handler with ``gate`` in front of its route."""

    @websocket("/ws/chat/{user_id:str}", middleware=[gated(gate, path=CHAT)])
    async def chat(socket: WebSocket[GateUser, Any, Any]) -> None:
        scope = cast(Scope, socket.scope)
        connection: Connection = scope["wsgate.connection"]
        user_id = socket.path_params["user_id"]
        await socket.accept()
        while True:
            message = cast(Message, await socket.receive())
            if message["type"] == "websocket.disconnect":
                return
            value = decoded(message)  # parsed once, by the gate
            if value["type"] == "whoami":
                payload = {"user": gate_user(scope).identity, "path_user": user_id}
                await socket.send_json({"type": "whoami", "payload": payload})
            elif value["type"] == "echo":
                await socket.send_json({"type": "echo", "payload": value.get("payload")})
            else:
                await connection.send_error(
                    METHOD_NOT_FOUND, f"No such type: {value['type']}.", to=message
                )

    return chat


def gate() -> Gate:
    return Gate(GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,), metrics_path=None))


@pytest.fixture
def served() -> Iterator[tuple[Gate, LiveServer]]:
    chat_gate = gate()
    app = Litestar([chat_handler(chat_gate), public, whoami, index])
    with LiveServer(cast(ASGIApp, app)) as server:
        yield chat_gate, server


def chat_client(server: LiveServer, path_user: str = "ann", **options: Any) -> WSClient:
    return WSClient(server.ws(f"/ws/chat/{path_user}"), origin=ORIGIN, **options)


async def test_a_client_without_a_token_is_refused(served: tuple[Gate, LiveServer]) -> None:
    _, server = served
    async with chat_client(server) as ws:
        assert await ws.wait_closed() == (1008, "auth_required")
    async with chat_client(server, token=TOKENS.expired("ann")) as ws:
        assert await ws.wait_closed() == (1008, "token_expired")


async def test_a_foreign_origin_is_refused_before_accept(served: tuple[Gate, LiveServer]) -> None:
    _, server = served
    client = WSClient(
        server.ws("/ws/chat/ann"), origin="https://evil.example", token=TOKENS.valid("ann")
    )
    with pytest.raises(HandshakeRejected) as refused:
        await client.connect()
    assert (refused.value.status, refused.value.json()) == (403, {"error": "origin_not_allowed"})


async def test_a_valid_client_is_served_and_the_handler_sees_its_user(
    served: tuple[Gate, LiveServer],
) -> None:
    _, server = served
    async with chat_client(server, token=TOKENS.valid("ann")) as ws:
        await ws.send_json({"type": "whoami"})
        assert await ws.receive_json() == {
            "type": "whoami",
            "payload": {"user": "ann", "path_user": "ann"},
        }
        await ws.send_json({"type": "echo", "payload": [1, 2]})
        assert await ws.receive_json() == {"type": "echo", "payload": [1, 2]}


async def test_a_token_in_the_subprotocol_is_served_with_the_apps_subprotocol(
    served: tuple[Gate, LiveServer],
) -> None:
    _, server = served
    token = TOKENS.valid("ann")
    async with chat_client(
        server, token=token, token_via="subprotocol", subprotocols=["chat"]
    ) as ws:
        assert ws.subprotocol == "chat"
        await ws.send_json({"type": "whoami"})
        assert (await ws.expect("whoami"))["payload"]["user"] == "ann"


async def test_the_path_user_must_be_the_tokens_subject(served: tuple[Gate, LiveServer]) -> None:
    _, server = served
    async with chat_client(server, path_user="bob", token=TOKENS.valid("ann")) as ws:
        assert await ws.wait_closed() == (1008, "user_mismatch")


async def test_the_gate_answers_bad_messages_and_the_handler_sends_counted_error_frames(
    served: tuple[Gate, LiveServer],
) -> None:
    chat_gate, server = served
    async with chat_client(server, token=TOKENS.valid("ann")) as ws:
        await ws.send_text("not json")
        assert (await ws.expect("error"))["error"]["code"] == "invalid_json"
        await ws.send_json({"type": "dance", "payload": "SECRET-PAYLOAD", "id": 7})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "method_not_found", "message": "No such type: dance."},
            "id": 7,
        }
        await ws.send_json({"type": "echo", "payload": "still open"})
        assert (await ws.expect("echo"))["payload"] == "still open"
    errors = chat_gate.stats()["endpoints"][CHAT]["message_errors"]
    assert (errors["invalid_json"], errors["method_not_found"]) == (1, 1)


async def test_other_routes_stay_ungated(served: tuple[Gate, LiveServer]) -> None:
    chat_gate, server = served
    async with WSClient(server.ws("/ws/public"), origin="https://evil.example") as ws:
        await ws.send_text("plain text")
        assert await ws.receive() == "plain text"
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{server.url}/")
    assert (response.status_code, response.text) == (200, "home")
    assert [endpoint.path for endpoint in chat_gate.endpoints] == [CHAT]


async def test_an_app_middleware_gates_every_websocket_route_and_lets_http_through() -> None:
    app_gate = gate()
    app = Litestar([public, whoami, index], middleware=[gated(app_gate)])
    with LiveServer(cast(ASGIApp, app)) as server:
        async with WSClient(server.ws("/ws/public"), origin=ORIGIN) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")
        token = TOKENS.valid("cy")
        async with WSClient(server.ws("/ws/whoami"), origin=ORIGIN, token=token) as ws:
            assert await ws.receive_json() == {"user": "cy"}
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(f"{server.url}/")
        assert response.status_code == 200


async def test_a_router_registers_a_copy_of_the_handler_and_the_gate_stays_the_same() -> None:
    """Litestar deep-copies a Router, with its handlers and their middleware, when it is
    registered: the route is still behind this gate, counted in its metrics."""
    router_gate = gate()
    app = Litestar([Router("/api", route_handlers=[chat_handler(router_gate)])])
    with LiveServer(cast(ASGIApp, app)) as server:
        async with WSClient(server.ws("/api/ws/chat/ann"), origin=ORIGIN) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")
        token = TOKENS.valid("ann")
        async with WSClient(server.ws("/api/ws/chat/ann"), origin=ORIGIN, token=token) as ws:
            await ws.send_json({"type": "whoami"})
            assert (await ws.expect("whoami"))["payload"] == {"user": "ann", "path_user": "ann"}
    assert [endpoint.path for endpoint in router_gate.endpoints] == [CHAT]
    counted = router_gate.stats()["endpoints"][CHAT]
    assert (counted["connections_refused"], counted["connections_opened"]) == (
        {"auth_required": 1},
        1,
    )
