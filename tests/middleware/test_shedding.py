"""LoadSheddingMiddleware over real sockets: each limit refuses before any token is verified,
with its status and Retry-After (or 1013 without the denial extension), and the per-worker
count of open connections returns to zero however connections end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute, websocket_session
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from tests.middleware.mounting import Mounting, alone_only
from wsgate import AuthMiddleware, ConfigurationError, Environment, Gate, GateConfig, JWTVerifier
from wsgate.auth.base import Identity
from wsgate.discovery import discovery_routes
from wsgate.middleware.shedding import LoadSheddingMiddleware, WorkerLoad
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "load-shedding-tests-secret-0123456789abcdef"
TOKENS = TokenFactory(SECRET)


class CountingVerifier:
    """A JWT verifier that counts the tokens it was asked to verify."""

    def __init__(self) -> None:
        self.inner = JWTVerifier(algorithms=["HS256"], secret=SECRET, leeway=0)
        self.calls = 0

    async def verify(self, token: str) -> Identity:
        self.calls += 1
        return await self.inner.verify(token)


@websocket_session
async def serve(websocket: WebSocket) -> None:
    """Accept, greet, then echo; a message with "boom" in it makes the handler fail."""
    await websocket.accept()
    await websocket.send_text("hello")
    while True:
        text = await websocket.receive_text()
        if "boom" in text:
            raise RuntimeError("the handler failed on purpose")
        await websocket.send_text(text)


def without_denial(app: ASGIApp) -> ASGIApp:
    """``app`` on a server that does not offer the denial extension (as daphne)."""

    async def stripped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await app(scope, receive, send)

    return stripped


class Setup:
    """The endpoint ``/ws`` behind the shedding check, mounted alone or in a gate."""

    def __init__(self, mounting: Mounting, **options: Any) -> None:
        self.verifier = CountingVerifier()
        self.gate: Gate | None = None
        if mounting == "alone":
            guarded = AuthMiddleware(serve, verifier=self.verifier)
            shedding = LoadSheddingMiddleware(guarded, **options)
            self.load: WorkerLoad = shedding.load
            routes: list[Any] = [WebSocketRoute("/ws", shedding)]
        else:
            self.gate = Gate(
                GateConfig(
                    environment=Environment.DEVELOPMENT,
                    jwt_secret=SECRET,
                    allow_missing_origin=True,
                    rate_limit=None,
                    max_connections_per_user=None,
                    heartbeat_interval=None,
                    ping_limit=None,
                    refresh_limit=None,
                    metrics_path=None,
                    **options,
                ),
                verifier=self.verifier,
            )
            self.load = self.gate.worker_load
            routes = [self.gate.route("/ws", serve), *discovery_routes(self.gate)]
        self.app: ASGIApp = Starlette(routes=routes)

    def refused(self, reason: str) -> int:
        """How many handshakes the gate's metrics counted as refused with ``reason``."""
        assert self.gate is not None
        refused: dict[str, int] = self.gate.stats()["connections_refused"]
        return refused.get(reason, 0)


async def connected(server: LiveServer, user: str = "alice") -> WSClient:
    client = WSClient(server.ws("/ws"), token=TOKENS.valid(user))
    await client.connect()
    assert await client.receive() == "hello"
    return client


async def rejected(server: LiveServer) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        await WSClient(server.ws("/ws"), token=TOKENS.valid("alice")).connect()
    return info.value


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds, for ``within`` seconds at most."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {within} s")
        await anyio.sleep(0.01)


async def test_connect_rate_per_ip_refuses_with_429_and_costs_no_verification(
    mounting: Mounting,
) -> None:
    setup = Setup(mounting, connect_rate_per_ip="2/minute")
    with LiveServer(setup.app) as server:
        for _ in range(2):
            await (await connected(server)).close()
        refusal = await rejected(server)
        assert refusal.status == 429
        assert refusal.json() == {"error": "connect_rate_limited"}
        assert 1 <= int(refusal.headers["Retry-After"]) <= 60
        assert setup.verifier.calls == 2
        if setup.gate is not None:
            assert setup.refused("connect_rate_limited") == 1


async def test_connect_rate_per_worker_refuses_with_503(mounting: Mounting) -> None:
    setup = Setup(mounting, connect_rate_per_worker="3/minute")
    with LiveServer(setup.app) as server:
        for user in ("alice", "bob", "carol"):
            await (await connected(server, user)).close()
        refusal = await rejected(server)
        assert refusal.status == 503
        assert refusal.json() == {"error": "worker_connect_rate_limited"}
        assert 1 <= int(refusal.headers["Retry-After"]) <= 60
        assert setup.verifier.calls == 3
        if setup.gate is not None:
            assert setup.refused("worker_connect_rate_limited") == 1


async def test_max_connections_per_worker_refuses_with_503_until_one_ends(
    mounting: Mounting,
) -> None:
    setup = Setup(mounting, max_connections_per_worker=2)
    with LiveServer(setup.app) as server:
        first, second = await connected(server), await connected(server, "bob")
        assert setup.load.open == 2
        refusal = await rejected(server)
        assert refusal.status == 503
        assert refusal.json() == {"error": "worker_busy"}
        assert refusal.headers["Retry-After"] == "1"
        assert setup.verifier.calls == 2
        await first.close()
        await eventually(lambda: setup.load.open == 1)
        third = await connected(server, "carol")
        assert setup.load.open == 2
        await second.close()
        await third.close()
        await eventually(lambda: setup.load.open == 0)


async def test_without_the_denial_extension_each_refusal_is_1013(mounting: Mounting) -> None:
    setup = Setup(mounting, max_connections_per_worker=1, connect_rate_per_ip="1/minute")
    with LiveServer(without_denial(setup.app)) as server:
        first = await connected(server)
        busy = WSClient(server.ws("/ws"), token=TOKENS.valid("bob"))
        await busy.connect()
        assert await busy.wait_closed() == (1013, "worker_busy")
        await first.close()
        await eventually(lambda: setup.load.open == 0)
        limited = WSClient(server.ws("/ws"), token=TOKENS.valid("bob"))
        await limited.connect()
        assert await limited.wait_closed() == (1013, "connect_rate_limited")
        # The refused handshake was let go before authentication.
        assert setup.verifier.calls == 1
        assert setup.load.open == 0


async def test_the_open_count_returns_to_zero_however_connections_end(
    mounting: Mounting,
) -> None:
    setup = Setup(mounting, max_connections_per_worker=2)
    with LiveServer(setup.app) as server:
        # Refused by authentication, after the shedding check admitted it.
        for token in ("not-a-token", TOKENS.expired("alice")):
            client = WSClient(server.ws("/ws"), token=token)
            await client.connect()
            assert (await client.wait_closed())[0] == 1008
        await eventually(lambda: setup.load.open == 0)
        # The handler fails.
        failing = await connected(server)
        await failing.send_json({"type": "boom"})
        await failing.wait_closed()
        await eventually(lambda: setup.load.open == 0)
        # The client vanishes without a close frame.
        dropped = await connected(server)
        dropped.abort()
        await eventually(lambda: setup.load.open == 0)
        # Refused by the cap itself, then the connections close normally.
        held = [await connected(server), await connected(server, "bob")]
        await rejected(server)
        for client in held:
            await client.close()
        await eventually(lambda: setup.load.open == 0)
        # And the full cap is there again.
        again = [await connected(server), await connected(server, "bob")]
        for client in again:
            await client.close()
        await eventually(lambda: setup.load.open == 0)


@pytest.mark.parametrize("mounting", ["gate"], scope="module")
async def test_the_limits_are_published_in_ws_config(mounting: Mounting) -> None:
    setup = Setup(
        mounting,
        connect_rate_per_ip="20/second",
        connect_rate_per_worker="500/second",
        max_connections_per_worker=1000,
    )
    with LiveServer(setup.app) as server:
        async with httpx.AsyncClient(base_url=server.url, proxy=None) as http:
            document = (await http.get("/ws/config")).json()
    limits = document["limits"]
    assert limits["connect_rate_per_ip"] == "20/second"
    assert limits["connect_rate_per_worker"] == "500/second"
    assert limits["max_connections_per_worker"] == 1000
    rows = {row["reason"]: row for row in document["close_codes"]}
    assert (rows["connect_rate_limited"]["code"], rows["connect_rate_limited"]["http_status"]) == (
        1013,
        429,
    )
    assert rows["worker_busy"]["http_status"] == 503


@alone_only
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "nothing to do"),
        ({"connect_rate_per_ip": "0/second"}, "lets no message through"),
        ({"connect_rate_per_ip": "often"}, "connect_rate_per_ip must be a rate"),
        ({"connect_rate_per_worker": 5}, "connect_rate_per_worker must be a rate"),
        ({"max_connections_per_worker": 0}, "max_connections_per_worker must be a positive"),
        ({"max_connections_per_worker": 1, "load": object()}, "load must be a WorkerLoad"),
        ({"connect_rate_per_ip": "1/second", "storage": 42}, "storage must be"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(
    mounting: Mounting, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        LoadSheddingMiddleware(serve, **options)


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("WSGATE_CONNECT_RATE_PER_IP", "20/second", "connect_rate_per_ip", "20/second"),
        ("WSGATE_CONNECT_RATE_PER_WORKER", "off", "connect_rate_per_worker", None),
        ("WSGATE_MAX_CONNECTIONS_PER_WORKER", "1000", "max_connections_per_worker", 1000),
    ],
)
def test_the_options_come_from_the_environment(
    variable: str, value: str, field: str, expected: object
) -> None:
    environ = {"WSGATE_ALLOW_MISSING_ORIGIN": "true", "WSGATE_ENV": "development", variable: value}
    assert getattr(GateConfig.from_env(environ), field) == expected


def test_a_bad_environment_value_names_the_option() -> None:
    environ = {
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
        "WSGATE_ENV": "development",
        "WSGATE_MAX_CONNECTIONS_PER_WORKER": "-3",
    }
    with pytest.raises(ConfigurationError, match="max_connections_per_worker must be a positive"):
        GateConfig.from_env(environ)
