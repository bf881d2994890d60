"""HeartbeatMiddleware over real sockets: pings, timeouts, token expiry and refresh, no leaks."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from jose import jwt
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute, websocket_session
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.middleware.mounting import Mounting, alone_only, gate
from wsgate import (
    AuthMiddleware,
    AuthUnavailable,
    ConfigurationError,
    Gate,
    Identity,
    JWTVerifier,
    close_codes,
)
from wsgate._timers import Timers as _Timers
from wsgate.connection import Connection
from wsgate.middleware.heartbeat import PING_ID_PREFIX, HeartbeatMiddleware
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "heartbeat-middleware-tests-secret-0123456789"
TOKENS = TokenFactory(SECRET)
VERIFIER = JWTVerifier(algorithms=["HS256"], secret=SECRET, leeway=0)
PING = {"type": "ping"}

seen: list[str] = []
"""Every text message the app received."""


@websocket_session
async def echo(websocket: WebSocket) -> None:
    """Echo every text message; "whoami" reports the user, "boom" fails."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text") or ""
        seen.append(text)
        if text == "whoami":
            user = websocket.user
            await websocket.send_json(
                {
                    "type": "whoami",
                    "user": user.identity,
                    "exp": user.verified.expires_at,
                    "scopes": websocket.auth.scopes,
                }
            )
        elif text == "boom":
            raise RuntimeError("the app failed")
        else:
            await websocket.send_text(text)


def jsonrpc(app: ASGIApp) -> ASGIApp:
    """Mark the connection as JSON-RPC, as the format layer does inside a Gate."""

    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        connection, send = Connection.of(scope, send)
        connection.protocol = "jsonrpc"
        await app(scope, receive, send)

    return marked


class Down:
    """A verifier whose auth service is unreachable."""

    async def verify(self, token: str) -> Identity:
        raise AuthUnavailable("auth service request failed: ConnectError")


def authenticated(app: ASGIApp, **options: Any) -> ASGIApp:
    settings: dict[str, Any] = {"interval": None, "verifier": VERIFIER}
    settings.update(options)
    return AuthMiddleware(HeartbeatMiddleware(app, **settings), verifier=VERIFIER)


def heartbeat_gate(
    *,
    interval: float | None = 45.0,
    timeout: float = 20.0,
    idle_timeout: float | None = None,
    max_lifetime: float | None = None,
    leeway: float = 0.0,
) -> Gate:
    """A gate whose heartbeat has these options, and the middleware's default bounds."""
    return gate(
        SECRET,
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        idle_timeout=idle_timeout,
        max_lifetime=max_lifetime,
        jwt_leeway=leeway,
        ping_limit="30/minute",
        refresh_limit="6/minute",
    )


class Counted:
    """Builds endpoints behind the heartbeat check, and serves their live timers and the
    server's tasks.

    Mounted alone, the check is a HeartbeatMiddleware; an ``authenticated`` one sits behind
    AuthMiddleware and refreshes tokens with the same verifier. In a gate, it is the gate's.
    """

    def __init__(self, mounting: Mounting) -> None:
        self.mounting = mounting
        self.middlewares: list[HeartbeatMiddleware] = []

    def __call__(self, app: ASGIApp, *, authenticated: bool = False, **options: Any) -> ASGIApp:
        if self.mounting == "gate":
            gated = heartbeat_gate(**options)
            mounted = gated.wrap(app, protocol=None, dev_bypass=not authenticated)
            self.middlewares += gated.layers(HeartbeatMiddleware)
            return mounted
        verifier = VERIFIER if authenticated else None
        middleware = HeartbeatMiddleware(app, verifier=verifier, **options)
        self.middlewares.append(middleware)
        return AuthMiddleware(middleware, verifier=VERIFIER) if authenticated else middleware

    @property
    def timers(self) -> int:
        return sum(middleware.armed_timers for middleware in self.middlewares)

    def stats(self) -> Callable[[WebSocket], Awaitable[None]]:
        async def stats(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_json({"timers": self.timers, "tasks": len(asyncio.all_tasks())})
            await websocket.close()

        return stats


@pytest.fixture(scope="module")
def server(mounting: Mounting) -> Iterator[LiveServer]:
    mount = Counted(mounting)
    routes = [
        WebSocketRoute("/hb", mount(echo, interval=0.1, timeout=1.0)),
        WebSocketRoute("/quiet", mount(echo, interval=None)),
        WebSocketRoute("/rpc", mount(jsonrpc(echo), interval=0.1, timeout=1.0)),
        WebSocketRoute("/idle", mount(echo, interval=0.1, timeout=1.0, idle_timeout=0.6)),
        WebSocketRoute("/idle-only", mount(echo, interval=None, idle_timeout=1.0)),
        WebSocketRoute("/lifetime", mount(echo, interval=None, max_lifetime=0.5)),
        WebSocketRoute("/auth", mount(echo, authenticated=True, interval=None)),
        WebSocketRoute("/auth-rpc", mount(jsonrpc(echo), authenticated=True, interval=None)),
        WebSocketRoute("/auth-leeway", mount(echo, authenticated=True, interval=None, leeway=30)),
        Route("/http", mount(PlainTextResponse("plain http"))),
    ]
    if mounting == "alone":  # a gate's heartbeat refreshes with the gate's own verifier
        routes += [
            WebSocketRoute("/auth-no-refresh", authenticated(echo, verifier=None)),
            WebSocketRoute("/auth-down", authenticated(echo, verifier=Down())),
        ]
    with LiveServer(Starlette(routes=routes)) as live:
        yield live


@pytest.fixture(autouse=True)
def app_seen() -> list[str]:
    seen.clear()
    return seen


def exp_of(token: str) -> int:
    exp: int = jwt.get_unverified_claims(token)["exp"]
    return exp


def parsed(data: str | bytes) -> Any:
    """A frame decoded from JSON, or as it came when it is not JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return data


async def next_for_app(ws: WSClient) -> Any:
    """The next frame that is not a gate ping, answering gate pings on the way (5 s at most).

    JSON frames come back decoded, others as they came.
    """
    with anyio.fail_after(5):
        while True:
            frame = parsed(await ws.receive(timeout=5))
            if frame == PING:
                await ws.send_json({"type": "pong"})
            elif isinstance(frame, dict) and frame.get("method") == "ping":
                await ws.send_json({"jsonrpc": "2.0", "id": frame["id"], "result": {}})
            else:
                return frame


def is_ping(frame: str | bytes) -> bool:
    return bool(parsed(frame) == PING)


async def until_closed(ws: WSClient, *, answer_pings: bool) -> None:
    """Read (answering pings, or not) until the server closes, for 10 s at most."""
    with anyio.fail_after(10):
        while True:
            try:
                frame = await ws.receive(timeout=10)
                if answer_pings and is_ping(frame):
                    await ws.send_json({"type": "pong"})
            except ConnectionClosed:
                return


async def repeat_until_closed(ws: WSClient, text: str, answer: str) -> float:
    """Send ``text`` every 0.1 s and expect ``answer`` each time, until the server closes
    (5 s at most); return how long that took."""
    started = time.monotonic()
    try:
        while time.monotonic() - started < 5:
            await ws.send_text(text)
            assert await ws.receive(timeout=5) == answer
            await anyio.sleep(0.1)  # pacing the client, not synchronisation
    except ConnectionClosed:
        return time.monotonic() - started
    raise AssertionError(f"the server did not close the connection within 5 s: {ws.history}")


# Heartbeat on JSON endpoints


async def test_ping_after_a_silence_of_interval(server: LiveServer) -> None:
    async with WSClient(server.ws("/hb")) as ws:
        opened = time.monotonic()
        assert await ws.receive_json(timeout=5) == PING
        assert time.monotonic() - opened >= 0.05  # not before the interval (0.1 s)


async def test_pongs_keep_the_connection_open(server: LiveServer, app_seen: list[str]) -> None:
    async with WSClient(server.ws("/hb")) as ws:
        for _ in range(5):
            assert await ws.receive_json(timeout=5) == PING
            await ws.send_json({"type": "pong"})
        await ws.send_text("still here")
        assert await next_for_app(ws) == "still here"
        assert ws.state == "open"
    assert app_seen == ["still here"]  # the pongs never reached the app


async def test_any_message_answers_a_ping(server: LiveServer) -> None:
    async with WSClient(server.ws("/hb")) as ws:
        started, pings = time.monotonic(), 0
        while time.monotonic() - started < 1.5:  # past the 1 s timeout
            frame = await ws.receive(timeout=5)
            if is_ping(frame):
                pings += 1
                await ws.send_text("busy")  # not a pong
            else:
                assert frame == "busy"
        assert ws.state == "open"
        assert pings >= 2


async def test_no_answer_closes_with_4000(server: LiveServer, app_seen: list[str]) -> None:
    async with WSClient(server.ws("/hb")) as ws:
        assert await ws.wait_closed(timeout=5) == (4000, "heartbeat_timeout")
    received = [frame.json() for frame in ws.history if frame.direction == "received"]
    assert received == [PING]  # one ping, then nothing until the timeout
    assert app_seen == []


async def test_client_ping_is_answered_by_the_gate(server: LiveServer, app_seen: list[str]) -> None:
    async with WSClient(server.ws("/quiet")) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}
        await ws.send_json({"type": "ping", "id": "abc"})
        assert await ws.receive_json() == {"type": "pong", "id": "abc"}
        await ws.send_json({"type": "ping", "id": 7})
        assert await ws.receive_json() == {"type": "pong", "id": 7}


async def test_heartbeat_frames_never_reach_the_app(
    server: LiveServer, app_seen: list[str]
) -> None:
    async with WSClient(server.ws("/hb")) as ws:
        assert await ws.receive_json(timeout=5) == PING
        await ws.send_json({"type": "pong"})
        await ws.send_json({"type": "ping"})
        await ws.send_json({"type": "pong", "id": 3})
        await ws.send_text("marker")
        assert await next_for_app(ws) == {"type": "pong"}  # the gate's answer, not an echo
        assert await next_for_app(ws) == "marker"
    assert app_seen == ["marker"]


async def test_other_messages_reach_the_app(server: LiveServer, app_seen: list[str]) -> None:
    messages = ['{"type": "chat"}', '{"type": ["ping"]}', "[1, 2]", "not json", '"ping"']
    async with WSClient(server.ws("/quiet")) as ws:
        for text in messages:
            await ws.send_text(text)
            assert await ws.receive(timeout=5) == text
    assert app_seen == messages


# Heartbeat on JSON-RPC endpoints


async def test_jsonrpc_ping_has_a_gate_id(server: LiveServer, app_seen: list[str]) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        first = await ws.receive_json(timeout=5)
        assert first == {"jsonrpc": "2.0", "id": f"{PING_ID_PREFIX}1", "method": "ping"}
        await ws.send_json({"jsonrpc": "2.0", "id": first["id"], "result": {}})
        second = await ws.receive_json(timeout=5)
        assert second["id"] == f"{PING_ID_PREFIX}2"
        # An error response with the ping's id also proves the client alive.
        error = {"code": -32601, "message": "Method not found"}
        await ws.send_json({"jsonrpc": "2.0", "id": second["id"], "error": error})
        assert (await ws.receive_json(timeout=5))["id"] == f"{PING_ID_PREFIX}3"

        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        await ws.send_json(request)
        assert await next_for_app(ws) == request
    assert app_seen == [json.dumps(request)]  # never a ping result


async def test_jsonrpc_client_ping_is_answered(server: LiveServer, app_seen: list[str]) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 9, "method": "ping"})
        assert await next_for_app(ws) == {"jsonrpc": "2.0", "id": 9, "result": {}}
        await ws.send_json({"jsonrpc": "2.0", "id": "p", "method": "ping", "params": {}})
        assert await next_for_app(ws) == {"jsonrpc": "2.0", "id": "p", "result": {}}
        # A response to an app request of the server is the app's business.
        response = {"jsonrpc": "2.0", "id": "app-1", "result": {}}
        await ws.send_json(response)
        assert await next_for_app(ws) == response
    assert app_seen == [json.dumps(response)]


async def test_jsonrpc_no_answer_closes_with_4000(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        assert await ws.wait_closed(timeout=5) == (4000, "heartbeat_timeout")


# Idle timeout and max lifetime


async def test_idle_closes_with_4001_even_when_pings_are_answered(server: LiveServer) -> None:
    async with WSClient(server.ws("/idle")) as ws:
        await until_closed(ws, answer_pings=True)
        assert (ws.close_code, ws.close_reason) == (4001, "idle_timeout")
    assert any(frame.data == '{"type": "pong"}' for frame in ws.history)


async def test_app_traffic_resets_idle(server: LiveServer, app_seen: list[str]) -> None:
    async with WSClient(server.ws("/idle-only")) as ws:
        started = time.monotonic()
        while time.monotonic() - started < 1.6:  # well past the 1 s idle timeout
            await ws.send_text("typing")
            assert await ws.receive(timeout=5) == "typing"
            await anyio.sleep(0.1)  # pacing the client, not synchronisation
        assert ws.state == "open"
        assert await ws.wait_closed(timeout=5) == (4001, "idle_timeout")


async def test_client_pings_do_not_reset_idle(server: LiveServer) -> None:
    async with WSClient(server.ws("/idle-only")) as ws:
        await repeat_until_closed(ws, '{"type": "ping"}', '{"type":"pong"}')
        assert (ws.close_code, ws.close_reason) == (4001, "idle_timeout")


async def test_max_lifetime_closes_with_4002_despite_traffic(server: LiveServer) -> None:
    async with WSClient(server.ws("/lifetime")) as ws:
        lived = await repeat_until_closed(ws, "busy", "busy")
        assert (ws.close_code, ws.close_reason) == (4002, "max_lifetime")
    assert lived >= 0.25


# Token expiry and refresh


async def test_token_expiring_while_open_closes_with_1008(server: LiveServer) -> None:
    token = TOKENS.valid(ttl=2)
    async with WSClient(server.ws("/auth"), token=token) as ws:
        await ws.send_text("hello")
        assert await ws.receive(timeout=5) == "hello"
        assert await ws.wait_closed(timeout=6) == (1008, "token_expired")
    assert time.time() >= exp_of(token) - 0.1  # not before exp


async def test_leeway_keeps_the_connection_past_exp(server: LiveServer) -> None:
    async with WSClient(server.ws("/auth-leeway"), token=TOKENS.valid(ttl=2)) as ws:
        assert await ws.receive_nothing(timeout=2.5)
        assert ws.state == "open"


@pytest.mark.parametrize("with_id", [True, False])
async def test_refresh_moves_the_deadline(
    server: LiveServer, app_seen: list[str], with_id: bool
) -> None:
    fresh = TOKENS.valid(ttl=600, scopes=["chat:read", "chat:write"])
    refresh: dict[str, Any] = {"type": "auth", "token": fresh}
    answer: dict[str, Any] = {"type": "auth", "payload": {"expires_at": exp_of(fresh)}}
    if with_id:
        refresh["id"] = answer["id"] = 4
    async with WSClient(server.ws("/auth"), token=TOKENS.valid(ttl=2)) as ws:
        await ws.send_json(refresh)
        assert await ws.receive_json(timeout=5) == answer
        assert await ws.receive_nothing(timeout=2.5)  # past the first token's exp
        await ws.send_text("whoami")
        assert await ws.receive_json(timeout=5) == {
            "type": "whoami",
            "user": "user-1",
            "exp": exp_of(fresh),
            "scopes": ["chat:read", "chat:write"],
        }
    assert app_seen == ["whoami"]


async def test_refresh_to_a_shorter_token_moves_the_deadline_earlier(server: LiveServer) -> None:
    async with WSClient(server.ws("/auth"), token=TOKENS.valid(ttl=600)) as ws:
        await ws.send_json({"type": "auth", "token": TOKENS.valid(ttl=2)})
        assert (await ws.receive_json(timeout=5))["type"] == "auth"
        assert await ws.wait_closed(timeout=6) == (1008, "token_expired")


async def test_jsonrpc_refresh(server: LiveServer, app_seen: list[str]) -> None:
    fresh = TOKENS.valid(ttl=600)
    async with WSClient(server.ws("/auth-rpc"), token=TOKENS.valid(ttl=2)) as ws:
        params = {"token": fresh}
        await ws.send_json({"jsonrpc": "2.0", "id": 5, "method": "auth/refresh", "params": params})
        assert await ws.receive_json(timeout=5) == {
            "jsonrpc": "2.0",
            "id": 5,
            "result": {"expires_at": exp_of(fresh)},
        }
        assert await ws.receive_nothing(timeout=2.5)
        assert ws.state == "open"
    assert app_seen == []


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (TOKENS.valid("user-2", ttl=600), "invalid_token"),
        (TOKENS.wrong_signature(), "invalid_token"),
        ("garbage", "invalid_token"),
        (TOKENS.expired(), "token_expired"),
    ],
    ids=["another-subject", "wrong-signature", "garbage", "expired"],
)
async def test_bad_refresh_closes_with_1008(
    server: LiveServer, app_seen: list[str], token: str, reason: str
) -> None:
    async with WSClient(server.ws("/auth"), token=TOKENS.valid(ttl=600)) as ws:
        await ws.send_json({"type": "auth", "token": token})
        assert await ws.wait_closed(timeout=5) == (1008, reason)
    assert app_seen == []


async def test_refresh_needs_a_token(server: LiveServer) -> None:
    async with WSClient(server.ws("/auth"), token=TOKENS.valid()) as ws:
        await ws.send_json({"type": "auth", "id": 1})
        error = await ws.receive_json(timeout=5)
        assert error["error"]["code"] == "invalid_message"
        assert '"token"' in error["error"]["message"]
        assert error["id"] == 1
    async with WSClient(server.ws("/auth-rpc"), token=TOKENS.valid()) as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 2, "method": "auth/refresh"})
        error = await ws.receive_json(timeout=5)
        assert error["error"]["code"] == -32602
        assert error["id"] == 2


@alone_only
async def test_refresh_without_a_verifier_is_an_error_frame(
    server: LiveServer, app_seen: list[str]
) -> None:
    async with WSClient(server.ws("/auth-no-refresh"), token=TOKENS.valid()) as ws:
        await ws.send_json({"type": "auth", "token": TOKENS.valid(ttl=600), "id": 3})
        error = await ws.receive_json(timeout=5)
        assert error["type"] == "error"
        assert error["id"] == 3
        assert error["error"]["code"] == "method_not_found"
        assert "not configured" in error["error"]["message"]
        await ws.send_text("still open")
        assert await ws.receive(timeout=5) == "still open"
    assert app_seen == ["still open"]


@alone_only
async def test_auth_service_down_keeps_the_connection_until_exp(server: LiveServer) -> None:
    async with WSClient(server.ws("/auth-down"), token=TOKENS.valid(ttl=2)) as ws:
        await ws.send_json({"type": "auth", "token": TOKENS.valid(ttl=600)})
        error = await ws.receive_json(timeout=5)
        assert error["error"]["code"] == "auth_unavailable"
        assert "try the refresh again later" in error["error"]["message"]
        await ws.send_text("still open")
        assert await ws.receive(timeout=5) == "still open"
        assert await ws.wait_closed(timeout=6) == (1008, "token_expired")


async def test_the_token_never_appears_in_logs(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, fresh, foreign = TOKENS.valid(), TOKENS.valid(ttl=600), TOKENS.valid("user-2")
    with caplog.at_level(logging.DEBUG, logger="wsgate"):
        async with WSClient(server.ws("/auth"), token=first) as ws:
            await ws.send_json({"type": "auth", "token": fresh})
            assert (await ws.receive_json(timeout=5))["type"] == "auth"
            await ws.send_json({"type": "auth", "token": foreign})
            assert await ws.wait_closed(timeout=5) == (1008, "invalid_token")
    assert "another subject" in caplog.text
    for token in (first, fresh, foreign):
        assert token not in caplog.text


# Timers never leak


registered: list[Connection] = []


class Registry:
    """An outer layer that can evict open connections, as the connection limit does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection, send = Connection.of(scope, send)
        registered.append(connection)
        try:
            await self.app(scope, receive, send)
        finally:
            registered.remove(connection)


async def evictor(websocket: WebSocket) -> None:
    """Close every registered connection from this connection's task."""
    await websocket.accept()
    for connection in list(registered):
        await connection.close(close_codes.CONNECTION_LIMIT)
    await websocket.send_text("evicted")
    await websocket.receive()


async def stats(server: LiveServer) -> dict[str, int]:
    async with WSClient(server.ws("/stats")) as ws:
        result: dict[str, int] = await ws.receive_json(timeout=5)
        return result


async def baseline_tasks(server: LiveServer) -> int:
    """The server's task count once the connections of earlier tests have ended."""
    for _ in range(100):  # 5 s at most
        current = await stats(server)
        if current["timers"] == 0:
            return current["tasks"]
        await anyio.sleep(0.05)
    raise AssertionError(f"timers of earlier tests are still armed: {current}")


async def settled(server: LiveServer, tasks: int) -> dict[str, int]:
    """Poll until no timer is armed and at most ``tasks`` tasks run (5 s at most)."""
    for _ in range(100):  # 5 s at most
        current = await stats(server)
        if current["timers"] == 0 and current["tasks"] <= tasks:
            break
        await anyio.sleep(0.05)
    return current


@pytest.fixture(scope="module")
def leak_server(mounting: Mounting) -> Iterator[LiveServer]:
    counted = Counted(mounting)
    routes = [
        WebSocketRoute("/stats", counted.stats()),
        WebSocketRoute("/evict", evictor),
        WebSocketRoute(
            "/ws",
            counted(echo, interval=0.05, timeout=1.0, idle_timeout=30, max_lifetime=60),
        ),
        # A long timeout: these clients do not answer pings while the test sets up.
        WebSocketRoute("/steady", Registry(counted(echo, interval=0.05, timeout=30))),
        WebSocketRoute(
            "/auth",
            counted(echo, authenticated=True, interval=0.05, timeout=1.0),
        ),
    ]
    with LiveServer(Starlette(routes=routes)) as live:
        yield live


async def normal_close(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        await ws.send_text("hi")
        assert await next_for_app(ws) == "hi"


async def vanish(server: LiveServer) -> None:
    client = await connect(server.ws("/ws"), ping_interval=None, proxy=None)
    await client.send("hi")
    while await client.recv(decode=True) != "hi":  # skip the gate's pings
        pass
    client.transport.abort()  # no close frame: the client is just gone


async def app_exception(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        await ws.send_text("boom")
        code, _ = await ws.wait_closed(timeout=5)
        assert code in (1006, 1011)  # uvicorn's websockets-sansio just drops the connection


async def heartbeat_timeout(server: LiveServer) -> None:
    async with WSClient(server.ws("/ws")) as ws:
        assert await ws.wait_closed(timeout=5) == (4000, "heartbeat_timeout")


async def token_expiry(server: LiveServer) -> None:
    async with WSClient(server.ws("/auth"), token=TOKENS.valid(ttl=2)) as ws:
        await until_closed(ws, answer_pings=True)
        assert (ws.close_code, ws.close_reason) == (1008, "token_expired")


async def refused_refresh(server: LiveServer) -> None:
    async with WSClient(server.ws("/auth"), token=TOKENS.valid()) as ws:
        await ws.send_json({"type": "auth", "token": TOKENS.valid("user-2")})
        assert await ws.wait_closed(timeout=5) == (1008, "invalid_token")


async def test_at_most_one_timer_per_open_connection(leak_server: LiveServer) -> None:
    tasks = await baseline_tasks(leak_server)
    clients = [WSClient(leak_server.ws("/steady")) for _ in range(10)]
    try:
        for client in clients:
            await client.connect()
            await client.send_text("hi")
            assert await next_for_app(client) == "hi"  # accepted, so armed
        assert (await stats(leak_server))["timers"] == 10
    finally:
        for client in clients:
            await client.close()
    after = await settled(leak_server, tasks)
    assert after["timers"] == 0
    assert after["tasks"] <= tasks


async def test_no_timer_or_task_outlives_its_connection(leak_server: LiveServer) -> None:
    tasks = await baseline_tasks(leak_server)
    evicted = [WSClient(leak_server.ws("/steady")) for _ in range(10)]
    for client in evicted:
        await client.connect()
        await client.send_text("hi")
        assert await next_for_app(client) == "hi"

    scenarios = (normal_close, vanish, app_exception, heartbeat_timeout, token_expiry)
    async with anyio.create_task_group() as group:
        for _ in range(10):
            for scenario in (*scenarios, refused_refresh):
                group.start_soon(scenario, leak_server)
        async with WSClient(leak_server.ws("/evict")) as ws:
            assert await ws.receive(timeout=5) == "evicted"
        for client in evicted:
            await until_closed(client, answer_pings=True)
            assert (client.close_code, client.close_reason) == (4008, "connection_limit")

    after = await settled(leak_server, tasks)
    assert after["timers"] == 0
    assert after["tasks"] <= tasks


async def test_server_shutdown_leaves_no_timer(mounting: Mounting) -> None:
    counted = Counted(mounting)
    live = LiveServer(counted(echo, interval=0.05, timeout=30, max_lifetime=60), lifespan="off")
    live.start()
    clients = [WSClient(live.ws("/")) for _ in range(10)]
    try:
        for client in clients:
            await client.connect()
            await client.send_text("hi")
            assert await next_for_app(client) == "hi"
        assert counted.timers == 10
    finally:
        await anyio.to_thread.run_sync(live.stop)
    for client in clients:
        await until_closed(client, answer_pings=True)
        assert client.close_code == 1012
    assert counted.timers == 0


# Other scopes and configuration


async def test_http_passes_through(server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/http")
    assert response.text == "plain http"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "interval must be a positive number of seconds, or None"),
        ({"interval": -1.0}, "interval must be a positive number of seconds, or None"),
        ({"interval": True}, "interval must be a positive number of seconds, or None"),
        ({"interval": float("inf")}, "interval must be a positive number"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, not 0"),
        ({"timeout": None}, "timeout must be a positive number of seconds, not None"),
        ({"idle_timeout": "30"}, "idle_timeout must be a positive number of seconds, or None"),
        ({"max_lifetime": 0}, "max_lifetime must be a positive number of seconds, or None"),
        ({"leeway": -1}, "leeway must be a number of seconds >= 0"),
        ({"verifier": "secret"}, "verifier must have an async verify"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        HeartbeatMiddleware(echo, **options)


def test_options_are_kept_as_seconds() -> None:
    middleware = HeartbeatMiddleware(echo, interval=30, idle_timeout=None, leeway=10)
    assert (middleware.interval, middleware.timeout, middleware.leeway) == (30.0, 20.0, 10.0)
    assert middleware.idle_timeout is None
    assert middleware.max_lifetime is None
    assert middleware.armed_timers == 0


# The shared timer: the deadlines of a loop's connections behind one handle.


class _Fired:
    """The names of the deadlines that came, in order; ``done`` once ``expected`` came."""

    def __init__(self, expected: int) -> None:
        self.names: list[str] = []
        self.expected = expected
        self.done = asyncio.Event()

    def due(self, name: str) -> Any:
        """A stand-in for a connection's lifecycle, whose deadline records ``name``."""
        fired = self

        class Due:
            def fire(self) -> None:
                fired.names.append(name)
                if len(fired.names) == fired.expected:
                    fired.done.set()

        return Due()


def _timers(loop: asyncio.AbstractEventLoop) -> _Timers:
    """The deadlines of a new heartbeat layer's connections on ``loop``."""
    return HeartbeatMiddleware(PlainTextResponse("unused"))._timers(loop)


def _run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Any) -> None:
    loop = loop_factory()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), timeout=5))
    finally:
        loop.close()


LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio")]
if importlib.util.find_spec("uvloop"):
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_deadlines_fire_in_order_even_when_already_past(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # uvloop answers call_at() for a moment already past with a Handle that has no when().
    fired: _Fired

    async def main() -> None:
        nonlocal fired
        fired = _Fired(expected=3)
        loop = asyncio.get_running_loop()
        timers = _timers(loop)
        now = loop.time()
        timers.add(now + 0.05, fired.due("later"))
        timers.add(now - 1.0, fired.due("past"))
        timers.add(now + 0.01, fired.due("soon"))
        await fired.done.wait()  # bounded by _run_on's timeout

    _run_on(loop_factory, main)
    assert fired.names == ["past", "soon", "later"]


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_cancelled_deadlines_never_fire_and_the_heap_stays_bounded(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    fired: _Fired
    sizes: list[int] = []

    async def main() -> None:
        nonlocal fired
        fired = _Fired(expected=10)
        loop = asyncio.get_running_loop()
        timers = _timers(loop)
        now = loop.time()
        entries = [timers.add(now + 0.05, fired.due(str(n))) for n in range(300)]
        for entry in entries[:290]:
            timers.cancel(entry)
            sizes.append(len(timers.heap))
        assert all(entry.lifecycle is None for entry in entries[:290])  # freed at once
        await fired.done.wait()
        # A last deadline after them all: when it comes, every earlier one has had its turn.
        last = _Fired(expected=1)
        timers.add(loop.time() + 0.01, last.due("last"))
        await last.done.wait()

    _run_on(loop_factory, main)
    assert sorted(fired.names, key=int) == [str(n) for n in range(290, 300)]
    # Rebuilt whenever the cancelled outnumbered the live: never more than twice the live.
    assert max(size - (300 - cancelled) for cancelled, size in enumerate(sizes, 1)) <= 300
    assert sizes[-1] <= 2 * 10 + 64


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_closed_loop_is_not_kept_alive_by_its_deadlines(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = loop_factory()
    fired = _Fired(expected=1)

    async def main() -> None:
        running = asyncio.get_running_loop()
        _timers(running).add(running.time() + 3600, fired.due("never"))  # pending at the close

    loop.run_until_complete(main())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
    assert fired.names == []
