"""A user's app written against wsgate's public API only: ``mypy --strict`` passes on it.

tests/test_typed_usage.py copies it out of the project and runs mypy on it there, as a user's
project would, against the installed package. It is never run.
"""

from __future__ import annotations

from typing import Any

import litestar
import quart
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute, websocket_session
from starlette.websockets import WebSocket

from wsgate import (
    AuthUnavailable,
    Environment,
    Gate,
    GateConfig,
    GatedEndpoint,
    GateUser,
    Identity,
    InvalidParams,
    JWTVerifier,
    NoGateUser,
    RemoteJWKS,
    RemoteVerifier,
    decoded,
    discovery_routes,
    gate_connection,
    gate_user,
    rpc_method,
)
from wsgate.error_frames import METHOD_NOT_FOUND
from wsgate.testing import LiveServer, TokenFactory, WSClient

# Configuration: lists are sequences, overrides are typed.
config = GateConfig(
    environment=Environment.PRODUCTION,
    allowed_origins=["https://app.example.com"],
    allowed_origin_regex=r"https://[a-z0-9-]+\.example\.com",
    jwt_secrets=["a-new-secret-of-at-least-thirty-two-bytes", "the-old-one-of-thirty-two-bytes!"],
    jwt_algorithms=("HS256",),
    rate_limit="30/minute",
    max_connections_per_user=None,
    heartbeat_interval=30.0,
)
from_env: GateConfig = GateConfig.from_env(
    {"WSGATE_ALLOW_MISSING_ORIGIN": "true", "WSGATE_DATABASE_URL": "sqlite://"},
    extra_variables=["WSGATE_DATABASE_URL"],
    jwt_audience="chat",
    allowed_origins=["https://app.example.com"],
    message_size_policy="close",
)
variables: dict[str, str] = GateConfig.variables()
origins: tuple[str, ...] = tuple(config.allowed_origins)

# Verifiers
jwks = RemoteJWKS("https://idp.example.com/.well-known/jwks.json", wait_timeout=1.0)
verifier = JWTVerifier(algorithms=["RS256", "ES256"], jwks=jwks, audience="chat")
introspection = RemoteVerifier("https://auth.internal/introspect", read_timeout=1.0)
known: frozenset[str | None] = jwks.kids


async def check(token: str) -> str:
    try:
        identity: Identity = await verifier.verify(token)
    except AuthUnavailable:
        return "try again later"
    return identity.subject


# Endpoints: the gate's user, typed.
@websocket_session
async def whoami(websocket: WebSocket) -> None:
    await websocket.accept()
    user: GateUser = gate_user(websocket)
    expires_at: float | None = user.verified.expires_at
    scopes: tuple[str, ...] = user.verified.scopes
    name: Any = user.claims.get("name")
    await websocket.send_json(
        {"user": user.identity, "dev": user.is_dev, "exp": expires_at, "scopes": scopes, "n": name}
    )


def in_plain_asgi(scope: dict[str, Any]) -> str | None:
    try:
        return gate_user(scope).identity
    except NoGateUser:
        return None


# Litestar and Quart: their scopes and messages are TypedDicts, taken as they are, no cast.
@litestar.websocket("/ws/litestar/{user_id:str}")
async def in_litestar(socket: litestar.WebSocket[GateUser, Any, Any]) -> None:
    user: GateUser = gate_user(socket.scope)
    await socket.accept()
    message = await socket.receive()
    value: Any = decoded(message)
    await gate_connection(socket.scope).send_error(
        METHOD_NOT_FOUND, f"No such type: {value['type']}.", to=message
    )
    await socket.send_json({"user": user.identity})


quart_app = quart.Quart(__name__)


@quart_app.websocket("/ws/quart")
async def in_quart() -> None:
    user: GateUser = gate_user(quart.websocket.scope)
    message: Any = await quart.websocket.receive_json()
    await gate_connection(quart.websocket.scope).send_error(METHOD_NOT_FOUND, "No.", to=message)
    await gate_connection(quart.websocket.scope).send_error(
        METHOD_NOT_FOUND, "No.", to=message["id"]
    )
    await quart.websocket.send_json({"user": user.identity})


class Chat(GatedEndpoint):
    protocol = "json"

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        if message.get("type") != "say":
            return await super().on_message(websocket, message)
        return {"type": "said", "from": gate_user(websocket).identity}


class Tools(GatedEndpoint):
    protocol = "jsonrpc"

    @rpc_method("tools/call")
    async def call(self, websocket: WebSocket, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise InvalidParams("tools/call needs an object")
        return {"caller": gate_user(websocket).identity}


gate = Gate(config)
gate_from_env: Gate = Gate.from_env(extra_variables=["WSGATE_MYAPP_*"], jwt_issuer="https://idp")
app = Starlette(
    routes=[
        gate.route("/ws", Chat),
        gate.route("/rpc", Tools, subprotocols=["mcp"]),
        WebSocketRoute("/whoami", gate.wrap(whoami)),
        *discovery_routes(gate),
    ]
)


# Tests, as a user writes them.
async def test_whoami() -> None:
    tokens = TokenFactory("a-new-secret-of-at-least-thirty-two-bytes")
    with LiveServer(app) as server:
        async with WSClient(server.ws("/whoami"), token=tokens.valid("alice")) as ws:
            answer: Any = await ws.receive_json()
            assert answer["user"] == "alice"
            code, reason = await ws.wait_closed()
            assert code is None or code >= 1000
            assert reason.isprintable()
