"""One FastAPI websocket route gated in one line (wsgate.fastapi, docs/fastapi.md), over real
sockets: per route, through included routers with prefixes, with Depends and path users."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.routing import APIWebSocketRoute
from starlette.requests import HTTPConnection

from wsgate import (
    AuthMiddleware,
    ConfigurationError,
    Connection,
    Gate,
    GateConfig,
    NoGateUser,
    discovery_routes,
)
from wsgate.error_frames import METHOD_NOT_FOUND
from wsgate.fastapi import GateUserDep, current_gate_user, gated_websocket
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "fastapi-tests-secret-that-is-long-enough-0123456789"
TOKENS = TokenFactory(SECRET)
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "fastapi.md"


def make_gate(**overrides: Any) -> Gate:
    return Gate(GateConfig(jwt_secret=SECRET, allow_missing_origin=True, **overrides))


class Rooms:
    """A dependency with state, as a database would be."""

    def __init__(self, label: str) -> None:
        self.label = label


def get_rooms() -> Rooms:
    return Rooms("real")


def chat_router(gate: Gate, **options: Any) -> APIRouter:
    """A router with a gated /ws/chat/{user_id} (whoami, rooms, error frames), and an
    ungated /ws/public echo."""
    router = APIRouter()

    @gated_websocket(router, "/ws/chat/{user_id}", gate=gate, **options)
    async def chat(
        websocket: WebSocket,
        user_id: str,
        user: GateUserDep,
        rooms: Annotated[Rooms, Depends(get_rooms)],
    ) -> None:
        connection: Connection = websocket.scope["wsgate.connection"]
        await websocket.accept()
        async for message in websocket.iter_json():
            if message["type"] == "whoami":
                payload = {"user": user.identity, "path_user": user_id}
                await websocket.send_json({"type": "whoami", "payload": payload})
            elif message["type"] == "rooms":
                await websocket.send_json({"type": "rooms", "payload": rooms.label})
            else:
                await connection.send_error(
                    METHOD_NOT_FOUND, f"No such type: {message['type']}.", to=message
                )

    @router.websocket("/ws/public")
    async def public(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    return router


@pytest.fixture
def gate() -> Gate:
    return make_gate()


@pytest.fixture
def server(gate: Gate) -> Iterator[LiveServer]:
    app = FastAPI()
    app.include_router(chat_router(gate))
    with LiveServer(app) as live:
        yield live


async def whoami(server: LiveServer, path: str, sub: str, **options: Any) -> Any:
    async with WSClient(server.ws(path), token=TOKENS.valid(sub), **options) as ws:
        await ws.send_json({"type": "whoami"})
        return await ws.receive_json()


async def test_one_line_gates_the_route_and_a_valid_client_is_served(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws/chat/ann")) as ws:
        assert await ws.wait_closed() == (1008, "auth_required")
    async with WSClient(server.ws("/ws/chat/ann"), token="not-a-jwt") as ws:
        assert await ws.wait_closed() == (1008, "invalid_token")
    assert await whoami(server, "/ws/chat/ann", "ann") == {
        "type": "whoami",
        "payload": {"user": "ann", "path_user": "ann"},
    }


async def test_a_subprotocol_token_is_taken_once(server: LiveServer) -> None:
    # Behind two gates, the inner one never saw the token the outer one took out.
    answer = await whoami(
        server, "/ws/chat/ann", "ann", token_via="subprotocol", subprotocols=["chat"]
    )
    assert answer["payload"] == {"user": "ann", "path_user": "ann"}


async def test_another_route_of_the_router_stays_ungated(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws/public")) as ws:
        await ws.send_text("not JSON, and no token")
        assert await ws.receive() == "not JSON, and no token"


async def test_the_path_user_must_be_the_tokens_subject(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws/chat/ann"), token=TOKENS.valid("bob")) as ws:
        assert await ws.wait_closed() == (1008, "user_mismatch")


async def test_depends_and_the_apps_dependency_overrides_reach_the_handler(gate: Gate) -> None:
    app = FastAPI()
    app.include_router(chat_router(gate), prefix="/api")
    with LiveServer(app) as server:
        async with WSClient(server.ws("/api/ws/chat/ann"), token=TOKENS.valid("ann")) as ws:
            await ws.send_json({"type": "rooms"})
            assert await ws.receive_json() == {"type": "rooms", "payload": "real"}
        app.dependency_overrides[get_rooms] = lambda: Rooms("override")
        async with WSClient(server.ws("/api/ws/chat/ann"), token=TOKENS.valid("ann")) as ws:
            await ws.send_json({"type": "rooms"})
            assert await ws.receive_json() == {"type": "rooms", "payload": "override"}


async def test_routers_included_with_prefixes_stay_gated(gate: Gate) -> None:
    inner = chat_router(gate)
    outer = APIRouter()
    outer.include_router(inner, prefix="/v1/chat")
    app = FastAPI()
    app.include_router(outer, prefix="/api")
    with LiveServer(app) as server:
        path = "/api/v1/chat/ws/chat/ann"
        async with WSClient(server.ws(path)) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")
        async with WSClient(server.ws(path), token=TOKENS.valid("bob")) as ws:
            assert await ws.wait_closed() == (1008, "user_mismatch")
        answer = await whoami(server, path, "ann")
        assert answer["payload"] == {"user": "ann", "path_user": "ann"}
        async with WSClient(server.ws("/api/v1/chat/ws/public")) as ws:
            await ws.send_text("hi")
            assert await ws.receive() == "hi"
        with pytest.raises(HandshakeRejected):  # nothing at the path without its prefixes
            await WSClient(server.ws("/ws/chat/ann"), token=TOKENS.valid("ann")).connect()


async def test_the_routers_own_prefix_and_dependencies_are_kept(gate: Gate) -> None:
    seen: list[str] = []

    def record(connection: HTTPConnection) -> None:
        seen.append(connection.scope["path"])

    router = APIRouter(prefix="/rooms", dependencies=[Depends(record)])

    @gated_websocket(router, "/{room}/{user_id}", gate=gate)
    async def room(websocket: WebSocket, room: int, user_id: str, user: GateUserDep) -> None:
        await websocket.accept()
        await websocket.send_json({"room": room, "user": user.identity})
        await websocket.close()

    app = FastAPI()
    app.include_router(router)
    with LiveServer(app) as server:
        async with WSClient(server.ws("/rooms/7/ann")) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")
        assert seen == []  # the gate runs before any dependency
        async with WSClient(server.ws("/rooms/7/ann"), token=TOKENS.valid("ann")) as ws:
            assert await ws.receive_json() == {"room": 7, "user": "ann"}
        assert seen == ["/rooms/7/ann"]
    assert [endpoint.path for endpoint in gate.endpoints] == ["/rooms/{room}/{user_id}"]


def tenant_router(gate: Gate) -> APIRouter:
    """A gated /ws/{user_id} whose handler takes a path parameter its inclusion's prefix
    declares, and reports the dependencies that ran."""
    router = APIRouter()

    @gated_websocket(router, "/ws/{user_id}", gate=gate)
    async def tenant_chat(
        websocket: WebSocket, tenant: str, user_id: str, user: GateUserDep
    ) -> None:
        await websocket.accept()
        payload = {"tenant": tenant, "path_user": user_id, "user": user.identity}
        await websocket.send_json({"type": "whoami", "payload": payload})
        await websocket.close()

    return router


async def test_an_inclusions_dependencies_and_prefix_parameters_reach_a_gated_route(
    gate: Gate,
) -> None:
    seen: list[str] = []

    def included(connection: HTTPConnection) -> None:
        seen.append(f"included {connection.path_params['tenant']}")

    def outer(connection: HTTPConnection) -> None:
        seen.append("outer")

    api = APIRouter()
    api.include_router(tenant_router(gate), prefix="/t/{tenant}", dependencies=[Depends(included)])
    app = FastAPI()
    app.include_router(api, prefix="/api", dependencies=[Depends(outer)])
    with LiveServer(app) as server:
        path = "/api/t/acme/ws/ann"
        async with WSClient(server.ws(path)) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")
        async with WSClient(server.ws(path), token=TOKENS.valid("bob")) as ws:
            assert await ws.wait_closed() == (1008, "user_mismatch")  # the path-user check
        assert seen == []  # the gate runs before any dependency, the inclusions' too
        async with WSClient(server.ws(path), token=TOKENS.valid("ann")) as ws:
            assert await ws.receive_json() == {
                "type": "whoami",
                "payload": {"tenant": "acme", "path_user": "ann", "user": "ann"},
            }
        assert seen == ["outer", "included acme"]


async def test_the_discovery_document_lists_a_gated_route_at_its_full_path(gate: Gate) -> None:
    app = FastAPI(routes=discovery_routes(gate))
    app.include_router(tenant_router(gate), prefix="/t/{tenant}")
    app.include_router(chat_router(gate), prefix="/api")
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            document = (await client.get("/ws/config")).json()
    assert sorted(endpoint["path"] for endpoint in document["endpoints"]) == [
        "/api/ws/chat/{user_id}",
        "/t/{tenant}/ws/{user_id}",
    ]


async def test_a_router_included_twice_is_published_at_both_paths(gate: Gate) -> None:
    router = chat_router(gate)
    app = FastAPI()
    app.include_router(router, prefix="/v1")
    app.include_router(router, prefix="/v2")
    with LiveServer(app) as server:
        for version in ("v1", "v2"):
            answer = await whoami(server, f"/{version}/ws/chat/ann", "ann")
            assert answer["payload"] == {"user": "ann", "path_user": "ann"}
    paths = [endpoint.path for endpoint in gate.endpoints]
    assert paths == ["/v1/ws/chat/{user_id}", "/v2/ws/chat/{user_id}"]


async def test_the_handlers_own_route_refuses_a_connection_without_the_gate(
    gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """A router that kept the handler's FastAPI route and dropped the gated one in front of
    it must not serve the handler ungated."""
    router = chat_router(gate)
    handlers_own = [route for route in router.routes if type(route) is APIWebSocketRoute]
    app = FastAPI()
    app.router.routes.extend(handlers_own)
    with (
        LiveServer(app) as server,
        caplog.at_level(logging.ERROR),
        pytest.raises(HandshakeRejected) as refused,
    ):
        await WSClient(server.ws("/ws/chat/ann"), token=TOKENS.valid("ann")).connect()
    assert refused.value.status == 500
    assert "without its gate" in caplog.text


async def test_json_is_checked_by_default_and_protocol_none_turns_it_off() -> None:
    async def echo(websocket: WebSocket, user: GateUserDep) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    router = APIRouter()
    gate = make_gate()
    gated_websocket(router, "/ws/json", gate=gate)(echo)
    gated_websocket(router, "/ws/raw", gate=gate, protocol=None)(echo)
    app = FastAPI()
    app.include_router(router)
    with LiveServer(app) as server:
        async with WSClient(server.ws("/ws/json"), token=TOKENS.valid()) as ws:
            await ws.send_text("not json")
            assert (await ws.receive_json())["error"]["code"] == "invalid_json"
        async with WSClient(server.ws("/ws/raw"), token=TOKENS.valid()) as ws:
            await ws.send_text("not json")
            assert await ws.receive() == "not json"


async def test_an_error_frame_from_the_handler_echoes_the_id_only(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws/chat/ann"), token=TOKENS.valid("ann")) as ws:
        await ws.send_json({"type": "dance", "id": 7, "secret": "not echoed"})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "method_not_found", "message": "No such type: dance."},
            "id": 7,
        }
        assert ws.state == "open"


def test_a_path_gated_twice_on_one_router_is_refused_at_declaration(gate: Gate) -> None:
    router = chat_router(gate)

    async def again(websocket: WebSocket) -> None: ...

    with pytest.raises(ConfigurationError, match="already has a gated websocket route"):
        gated_websocket(router, "/ws/chat/{user_id}", gate=make_gate())(again)
    with pytest.raises(ConfigurationError, match="already has an ungated websocket route"):
        gated_websocket(router, "/ws/public", gate=gate)(again)


@pytest.mark.parametrize(
    "add_middleware",
    [
        pytest.param(lambda app, gate: app.add_middleware(gate.wrap), id="gate.wrap"),
        pytest.param(
            lambda app, gate: app.add_middleware(AuthMiddleware, verifier=gate.verifier),
            id="AuthMiddleware",
        ),
    ],
)
def test_a_gate_in_front_of_the_whole_app_is_refused_at_start_up(
    gate: Gate, add_middleware: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    app.include_router(chat_router(gate), prefix="/api")
    add_middleware(app, gate)
    server = LiveServer(app, lifespan="on")
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="during startup"):
        server.start()
    server.stop()
    assert "gated_websocket() gates its routes again" in caplog.text


async def test_a_gate_in_front_of_a_mounted_app_fails_the_handshake_and_says_why(
    gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    inner = FastAPI()
    inner.include_router(chat_router(gate))
    app = FastAPI()
    app.mount("/inner", gate.wrap(inner))
    with (
        LiveServer(app) as server,
        caplog.at_level(logging.ERROR),
        pytest.raises(HandshakeRejected) as refused,
    ):
        await WSClient(server.ws("/inner/ws/chat/ann"), token=TOKENS.valid("ann")).connect()
    assert refused.value.status == 500
    assert "/ws/chat/{user_id} is gated twice" in caplog.text


async def test_the_user_dependency_outside_a_gated_route_says_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()

    @app.websocket("/ws/ungated")
    async def ungated(websocket: WebSocket, user: GateUserDep) -> None:
        await websocket.accept()

    with (
        LiveServer(app) as server,
        caplog.at_level(logging.ERROR),
        pytest.raises(HandshakeRejected) as refused,
    ):
        await WSClient(server.ws("/ws/ungated"), token=TOKENS.valid()).connect()
    assert refused.value.status == 500
    assert "/ws/ungated has no gate in front of it" in caplog.text
    assert "gated_websocket(router, path, gate=gate)" in caplog.text


def test_current_gate_user_raises_no_gate_user_without_one() -> None:
    connection = HTTPConnection({"type": "websocket", "path": "/ws", "headers": []})
    with pytest.raises(NoGateUser, match=r"declare it with wsgate\.fastapi\.gated_websocket"):
        current_gate_user(connection)


# docs/fastapi.md: its first app, as the page describes it


def first_app_block() -> str:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    for match in re.finditer(r"^```python[^\n]*\n(.*?)^```", text, re.S | re.M):
        if re.search(r"^app = ", match[1], re.M):
            return match[1]
    raise AssertionError("docs/fastapi.md has no python block that defines app")


@pytest.fixture
def docs_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    monkeypatch.setenv("WSGATE_JWT_SECRET", SECRET)
    monkeypatch.setenv("WSGATE_ALLOWED_ORIGINS", "https://chat.example.com")
    namespace: dict[str, Any] = {"__name__": "docs_fastapi"}
    exec(compile(first_app_block(), str(DOCS_PAGE), "exec"), namespace)
    with LiveServer(namespace["app"]) as server:
        yield server


async def test_the_docs_example_does_what_the_page_says(docs_server: LiveServer) -> None:
    origin = "https://chat.example.com"
    async with WSClient(docs_server.ws("/ws/chat/ann"), origin=origin) as ws:
        assert await ws.wait_closed() == (1008, "auth_required")
    wrong = WSClient(docs_server.ws("/ws/chat/ann"), origin=origin, token=TOKENS.valid("bob"))
    async with wrong as ws:
        assert await ws.wait_closed() == (1008, "user_mismatch")
    assert await whoami(docs_server, "/ws/chat/ann", "ann", origin=origin) == {
        "type": "whoami",
        "payload": {"user": "ann", "path_user": "ann"},
    }
    async with WSClient(docs_server.ws("/ws/public"), origin=origin) as ws:
        await ws.send_text("anything at all")
        assert await ws.receive() == "anything at all"
