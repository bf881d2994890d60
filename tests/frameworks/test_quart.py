"""A gate in front of a whole Quart app, over real sockets (docs/asgi.md).

Quart routes inside the app, after the gate, and its reader task waits for a message before
the handler accepts: the gate counts such a connection from its accept, so idle connections
count against the per-user limit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import anyio
import httpx
import pytest
from quart import Quart, websocket
from starlette.types import ASGIApp, Receive, Scope, Send
from werkzeug.exceptions import HTTPException

from wsgate import Connection, Gate, GateConfig, MemoryRegistry, gate_user
from wsgate.error_frames import METHOD_NOT_FOUND
from wsgate.registry import Admission, Policy
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "quart-tests-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"
TOKENS = TokenFactory(SECRET)
LIMITED = (4008, "connection_limit")


def quart_app() -> Quart:
    """A chat handler that accepts, then waits for messages, and a page."""
    quart = Quart(__name__)

    @quart.get("/")
    async def index() -> str:
        return "home"

    @quart.websocket("/ws/chat/<user_id>")
    async def chat(user_id: str) -> None:
        scope = cast(Scope, websocket.scope)
        connection: Connection = scope["wsgate.connection"]
        await websocket.accept()
        while True:
            message = await websocket.receive_json()
            if message["type"] == "whoami":
                payload = {"user": gate_user(scope).identity, "path_user": user_id}
                await websocket.send_json({"type": "whoami", "payload": payload})
            elif message["type"] == "echo":
                await websocket.send_json({"type": "echo", "payload": message.get("payload")})
            else:
                await connection.send_error(
                    METHOD_NOT_FOUND, f"No such type: {message['type']}.", to=message
                )

    return quart


class QuartPathParams:
    """Matches the websocket route with Quart's own URL map before the gate runs, so that the
    gate checks the path's ``user_id`` against the token (as in docs/asgi.md)."""

    def __init__(self, app: ASGIApp, quart: Quart) -> None:
        self.app = app
        self.routes = quart.url_map.bind("")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            try:
                _, params = self.routes.match(scope["path"], websocket=True)
            except HTTPException:
                params = {}  # not a websocket route: Quart answers it
            scope = {**scope, "path_params": params}
        await self.app(scope, receive, send)


class WatchedRegistry(MemoryRegistry):
    """A memory registry that keeps the highest number of connections it ever held, and lets
    a test wait, without polling, until it holds a given number."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0
        self.peak = 0
        self._changed = threading.Condition()  # the server's thread changes, the test's waits

    async def add(self, key: str, connection_id: str, *, limit: int, policy: Policy) -> Admission:
        admission = await super().add(key, connection_id, limit=limit, policy=policy)
        await self._note()
        return admission

    async def remove(self, key: str, connection_id: str) -> None:
        await super().remove(key, connection_id)
        await self._note()

    async def _note(self) -> None:
        held = await self.total()
        with self._changed:
            self.held = held
            self.peak = max(self.peak, held)
            self._changed.notify_all()

    async def holds(self, count: int, *, within: float = 5.0) -> None:
        """Return once the registry holds ``count`` connections; fail after ``within`` s."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self.held == count, within)

        if not await anyio.to_thread.run_sync(wait):
            raise AssertionError(f"the registry holds {self.held}, not {count}, after {within} s")


def gate(registry: MemoryRegistry | None = None) -> Gate:
    config = GateConfig(
        jwt_secret=SECRET,
        allowed_origins=(ORIGIN,),
        max_connections_per_user=3,
        metrics_path=None,
    )
    return Gate(config, registry=registry)


@pytest.fixture
def registry() -> WatchedRegistry:
    return WatchedRegistry()


@pytest.fixture
def served(registry: WatchedRegistry) -> Iterator[tuple[Gate, LiveServer]]:
    quart = quart_app()
    quart_gate = gate(registry)
    app = QuartPathParams(quart_gate.wrap(cast(ASGIApp, quart)), quart)
    with LiveServer(app) as server:
        yield quart_gate, server


def chat_client(
    server: LiveServer,
    user: str | None = "ann",
    *,
    path_user: str = "ann",
    origin: str = ORIGIN,
    **options: Any,
) -> WSClient:
    token = None if user is None else TOKENS.valid(user)
    return WSClient(server.ws(f"/ws/chat/{path_user}"), origin=origin, token=token, **options)


async def test_a_client_without_a_token_is_refused(served: tuple[Gate, LiveServer]) -> None:
    _, server = served
    async with chat_client(server, user=None) as ws:
        assert await ws.wait_closed() == (1008, "auth_required")


async def test_a_foreign_origin_is_refused_before_accept(served: tuple[Gate, LiveServer]) -> None:
    _, server = served
    with pytest.raises(HandshakeRejected) as refused:
        await chat_client(server, origin="https://evil.example").connect()
    assert (refused.value.status, refused.value.json()) == (403, {"error": "origin_not_allowed"})


async def test_a_valid_client_is_served_and_the_handler_sees_its_user(
    served: tuple[Gate, LiveServer],
) -> None:
    _, server = served
    async with chat_client(server) as ws:
        await ws.send_json({"type": "whoami"})
        assert await ws.receive_json() == {
            "type": "whoami",
            "payload": {"user": "ann", "path_user": "ann"},
        }
        await ws.send_json({"type": "echo", "payload": [1, 2]})
        assert await ws.receive_json() == {"type": "echo", "payload": [1, 2]}
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{server.url}/")
    assert (response.status_code, response.text) == (200, "home")


async def test_a_token_in_the_subprotocol_is_served_with_the_apps_subprotocol(
    served: tuple[Gate, LiveServer],
) -> None:
    _, server = served
    async with chat_client(server, token_via="subprotocol", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        await ws.send_json({"type": "whoami"})
        assert (await ws.expect("whoami"))["payload"]["user"] == "ann"


async def test_the_path_user_must_be_the_tokens_subject(served: tuple[Gate, LiveServer]) -> None:
    _, server = served
    async with chat_client(server, path_user="bob") as ws:
        assert await ws.wait_closed() == (1008, "user_mismatch")


async def test_the_gate_answers_bad_messages_and_the_handler_sends_counted_error_frames(
    served: tuple[Gate, LiveServer],
) -> None:
    quart_gate, server = served
    async with chat_client(server) as ws:
        await ws.send_json({"payload": "no type"})
        assert (await ws.expect("error"))["error"]["code"] == "invalid_message"
        await ws.send_json({"type": "dance", "payload": "SECRET-PAYLOAD", "id": 7})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "method_not_found", "message": "No such type: dance."},
            "id": 7,
        }
        await ws.send_json({"type": "echo", "payload": "still open"})
        assert (await ws.expect("echo"))["payload"] == "still open"
    errors = quart_gate.stats()["endpoints"]["*"]["message_errors"]
    assert (errors["invalid_message"], errors["method_not_found"]) == (1, 1)


async def test_idle_connections_count_and_the_fourth_evicts_the_first(
    served: tuple[Gate, LiveServer], registry: WatchedRegistry
) -> None:
    """The issue's scenario: four idle sockets of one user, at most three per user. Quart's
    reader waits in receive before the handler accepts; the gate counts from the accept."""
    _, server = served
    idle = []
    for count in (1, 2, 3):
        client = chat_client(server)
        await client.connect()
        idle.append(client)
        await registry.holds(count)  # counted while idle: nothing was sent
    newest = chat_client(server)
    await newest.connect()
    assert await idle[0].wait_closed() == LIMITED
    await registry.holds(3)
    for client in (*idle[1:], newest):
        await client.send_json({"type": "echo", "payload": "still here"})
        assert (await client.expect("echo"))["payload"] == "still here"
        await client.close()
    await registry.holds(0)
    assert registry.peak == 3
