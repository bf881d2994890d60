from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsgate import (
    ConfigurationError,
    Environment,
    Gate,
    GateConfig,
    JWTVerifier,
    RemoteVerifier,
)
from wsgate.error_frames import INVALID_PARAMS
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "gate-test-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"


class Whoami(WebSocketEndpoint):
    encoding = "json"

    async def on_connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"user": websocket.user.identity})


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_production_gate_without_a_key_says_which_variables_to_set() -> None:
    with pytest.raises(ConfigurationError, match="WSGATE_JWT_SECRET") as raised:
        Gate()
    assert "WSGATE_AUTH_URL" in str(raised.value)


def test_the_config_chooses_the_verifier() -> None:
    assert isinstance(Gate(GateConfig(jwt_secret=SECRET)).verifier, JWTVerifier)
    remote = Gate(GateConfig(auth_url="http://127.0.0.1:9/introspect")).verifier
    assert isinstance(remote, RemoteVerifier)
    assert Gate(GateConfig(environment=Environment.DEVELOPMENT)).verifier is None
    with pytest.raises(ConfigurationError, match="choose remote or local"):
        Gate(GateConfig(jwt_secret=SECRET, auth_url="http://127.0.0.1:9/introspect"))


def test_a_public_key_with_the_default_hmac_algorithm_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="HMAC and need secret="):
        Gate(GateConfig(jwt_public_key="-----BEGIN PUBLIC KEY-----"))


def test_the_bypass_cannot_be_turned_on_per_endpoint_in_production() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET))
    with pytest.raises(ConfigurationError, match="refused in production"):
        gate.wrap(Whoami, dev_bypass=True)


async def test_origin_is_checked_before_the_token() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,)))
    app = Starlette(routes=[WebSocketRoute("/ws", gate.wrap(Whoami))])
    with LiveServer(app) as server:
        # No token and a foreign origin: the origin refusal wins, before any accept.
        with pytest.raises(HandshakeRejected) as refused:
            await WSClient(server.ws("/ws"), origin="https://evil.example").connect()
        assert refused.value.status == 403
        assert refused.value.json() == {"error": "origin_not_allowed"}
        async with WSClient(server.ws("/ws"), origin=ORIGIN) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")


async def test_a_gate_can_wrap_a_whole_app() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET, allow_missing_origin=True))
    inner = Starlette(
        routes=[Route("/hello", hello), WebSocketRoute("/ws", Whoami)],
    )
    with LiveServer(gate.wrap(inner)) as server:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{server.url}/hello")
        assert (response.status_code, response.text) == (200, "hello")
        async with WSClient(server.ws("/ws")) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")
        async with WSClient(server.ws("/ws"), token=TokenFactory(SECRET).valid("carol")) as ws:
            assert await ws.receive_json() == {"user": "carol"}


async def test_development_gate_without_a_key_refuses_offered_tokens() -> None:
    gate = Gate(GateConfig(environment=Environment.DEVELOPMENT, allow_missing_origin=True))
    app = Starlette(routes=[WebSocketRoute("/ws", gate.wrap(Whoami, dev_bypass=True))])
    with LiveServer(app) as server:
        async with WSClient(server.ws("/ws")) as ws:
            assert await ws.receive_json() == {"user": "dev-user"}
        async with WSClient(server.ws("/ws"), token=TokenFactory(SECRET).valid()) as ws:
            assert await ws.wait_closed() == (1008, "invalid_token")


async def test_aclose_closes_the_remote_verifiers_client() -> None:
    gate = Gate(GateConfig(auth_url="http://127.0.0.1:9/introspect"))
    assert isinstance(gate.verifier, RemoteVerifier)
    await gate.aclose()
    assert gate.verifier._client.is_closed


async def echo_function(websocket: WebSocket) -> None:
    await websocket.accept()
    message = await websocket.receive_json()
    await websocket.send_json({"type": "echo", "payload": message.get("payload")})
    await websocket.close()


async def test_route_takes_a_plain_async_function_as_websocketroute_does() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET, allowed_origins=[ORIGIN]))
    app = Starlette(routes=[gate.route("/fn", echo_function)])
    tokens = TokenFactory(SECRET)
    with LiveServer(app) as server:
        async with WSClient(server.ws("/fn"), origin=ORIGIN) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")  # gated
        async with WSClient(server.ws("/fn"), origin=ORIGIN, token=tokens.valid("ann")) as ws:
            await ws.send_json({"type": "echo", "payload": 5})
            assert (await ws.expect("echo"))["payload"] == 5


def test_wrap_refuses_a_plain_function_at_start_up_and_says_what_to_pass() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET, allowed_origins=[ORIGIN]))
    with pytest.raises(ConfigurationError, match=r"echo_function takes one argument.*gate\.route"):
        gate.wrap(echo_function)  # type: ignore[arg-type]


async def refusing_function(websocket: WebSocket) -> None:
    await websocket.accept()
    connection = websocket.scope["wsgate.connection"]
    message = await websocket.receive()  # the ASGI message, or its parsed value: both work
    await connection.send_error(INVALID_PARAMS, "Say it differently.", to=message)
    parsed = await websocket.receive_json()
    await connection.send_error(INVALID_PARAMS, "Still no.", to=parsed, limit=3)
    await websocket.close()


async def test_any_handler_sends_an_error_frame_with_to_and_it_is_counted() -> None:
    gate = Gate(GateConfig(jwt_secret=SECRET, allowed_origins=[ORIGIN]))
    app = Starlette(routes=[gate.route("/raw", refusing_function)])
    token = TokenFactory(SECRET).valid("ann")
    with LiveServer(app) as server:
        async with WSClient(server.ws("/raw"), origin=ORIGIN, token=token) as ws:
            await ws.send_json({"type": "say", "payload": "SECRET-PAYLOAD", "id": 7})
            first = await ws.expect("error")
            await ws.send_json({"type": "say", "payload": "SECRET-PAYLOAD", "id": "b"})
            second = await ws.expect("error")
    assert first == {
        "type": "error",
        "error": {"code": "invalid_params", "message": "Say it differently."},
        "id": 7,
    }
    assert second["id"] == "b"
    assert second["error"]["limit"] == 3
    assert "SECRET-PAYLOAD" not in str(ws.history[1].data) + str(ws.history[3].data)
    assert gate.stats()["endpoints"]["/raw"]["message_errors"] == {"invalid_params": 2}


def test_a_copied_gate_is_the_same_gate() -> None:
    """Litestar deep-copies a router's middleware: the copy must keep the one gate, with its
    backend, metrics and endpoints, instead of starting a second."""
    import copy

    gate = Gate(GateConfig(jwt_secret=SECRET))
    assert copy.copy(gate) is gate
    assert copy.deepcopy({"middleware": [gate]})["middleware"][0] is gate
