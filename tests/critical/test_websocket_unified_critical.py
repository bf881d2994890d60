"""The critical tests the product was specified from, under their own names.

Each runs against the example app (``examples/app.py``) under real uvicorn, through the
harness that ships in ``wsgate.testing``, over real sockets. Later issues fill the classes
that are not here yet.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import sqlite3
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from examples.app import create_app
from tests.conftest import ALLOWED_ORIGIN, SECRET, IntrospectionService, example_config
from wsgate import (
    CLOSE_CODES,
    ConfigurationError,
    Connection,
    Environment,
    Gate,
    GateConfig,
    HeartbeatMiddleware,
    RemoteVerifier,
)
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


class TestWebSocketAuthentication:
    async def test_secure_websocket_jwt_header_auth(
        self, dev_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(dev_server.ws("/ws/secure"), token=tokens.valid("alice")) as ws:
            await ws.send_json({"type": "whoami", "id": 7})
            assert await ws.receive_json() == {
                "type": "whoami",
                "payload": {"user": "alice", "dev": False},
                "id": 7,
            }

    async def test_secure_websocket_jwt_subprotocol_auth(
        self, dev_server: LiveServer, tokens: TokenFactory
    ) -> None:
        token = tokens.valid("alice")
        async with WSClient(
            dev_server.ws("/ws/secure"),
            origin=ALLOWED_ORIGIN,
            subprotocols=["chat"],
            token=token,
            token_via="subprotocol",
        ) as ws:
            # The accept echoes the application subprotocol, never the token entry.
            assert ws.subprotocol == "chat"
            await ws.send_json({"type": "whoami"})
            assert (await ws.receive_json())["payload"] == {"user": "alice", "dev": False}

        # A token entry alone gives a browser nothing to echo: refused before accept.
        client = WSClient(dev_server.ws("/ws/secure"), token=token, token_via="subprotocol")
        with pytest.raises(HandshakeRejected) as refused:
            await client.connect()
        assert refused.value.status == 400
        assert refused.value.json() == {"error": "subprotocol_required"}

    @pytest.mark.parametrize("path", ["/ws/secure", "/ws/mcp"])
    async def test_secure_websocket_rejects_unauthenticated(
        self, prod_server: LiveServer, path: str
    ) -> None:
        async with WSClient(prod_server.ws(path), subprotocols=["mcp"]) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")

    @pytest.mark.parametrize(
        ("kind", "reason"),
        [
            ("wrong_signature", "invalid_token"),
            ("alg_none", "invalid_token"),
            ("wrong_audience", "invalid_token"),
            ("not_yet_valid", "invalid_token"),
            ("issued_in_future", "invalid_token"),
            ("garbage", "invalid_token"),
            ("expired", "token_expired"),
        ],
    )
    async def test_secure_websocket_rejects_invalid_token(
        self, dev_server: LiveServer, kind: str, reason: str
    ) -> None:
        factory = TokenFactory(SECRET, audience="someone-else")
        token = "not.a.jwt" if kind == "garbage" else getattr(factory, kind)("alice")
        async with WSClient(dev_server.ws("/ws/secure"), token=token) as ws:
            assert await ws.wait_closed() == (1008, reason)
            assert ws.history == []  # nothing of the app's reached the client

    async def test_basic_websocket_dev_mode_bypass(self, dev_server: LiveServer) -> None:
        async with WSClient(dev_server.ws("/ws")) as ws:
            await ws.send_json({"type": "whoami"})
            assert (await ws.receive_json())["payload"] == {"user": "dev-user", "dev": True}
        # The bypass is per endpoint: the secure one still wants a token in development.
        async with WSClient(dev_server.ws("/ws/secure")) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")

    async def test_production_mode_blocks_dev_bypasses(self, prod_server: LiveServer) -> None:
        # Nothing a request carries turns the bypass on in production.
        for hint in [{}, {"X-Dev-Mode": "true"}, {"X-Wsgate-Env": "development"}]:
            async with WSClient(prod_server.ws("/ws?dev=1&bypass=true"), headers=hint) as ws:
                assert await ws.wait_closed() == (1008, "auth_required")
        # A production config with the bypass on does not even start.
        with pytest.raises(ConfigurationError, match="production"):
            GateConfig(environment=Environment.PRODUCTION, jwt_secret=SECRET, dev_bypass=True)
        with pytest.raises(ConfigurationError, match="WSGATE_DEV_BYPASS"):
            GateConfig.from_env({"WSGATE_JWT_SECRET": SECRET, "WSGATE_DEV_BYPASS": "true"})
        # And neither does the example app served by uvicorn that way (were it to start, it
        # would serve until the deadline and fail the test).
        env = {**os.environ, "WSGATE_JWT_SECRET": SECRET, "WSGATE_DEV_BYPASS": "1"}
        env.pop("WSGATE_ENV", None)
        command = [sys.executable, "-m", "uvicorn", "examples.app:app", "--port", "0"]
        with anyio.fail_after(60):
            started = await anyio.run_process(command, cwd=ROOT, env=env, check=False)
        assert started.returncode != 0
        stderr = started.stderr.decode()
        assert "ConfigurationError: dev_bypass is on in a production config" in stderr


class TestWebSocketEndpointRouting:
    async def test_basic_ws_endpoint_routing(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid("alice")) as ws:
            await ws.send_json({"type": "echo", "payload": {"n": [1, 2, 3]}, "id": "a"})
            assert await ws.receive_json() == {
                "type": "echo",
                "payload": {"n": [1, 2, 3]},
                "id": "a",
            }
            await ws.send_json({"type": "join", "room": "lobby"})
            assert await ws.receive_json() == {"type": "joined", "room": "lobby"}
            await ws.send_json({"type": "say", "room": "lobby", "text": "hello"})
            assert await ws.receive_json() == {
                "type": "said",
                "room": "lobby",
                "from": "alice",
                "text": "hello",
            }

    @pytest.mark.parametrize("prefix", ["/ws", "/ws/v1"])
    async def test_user_specific_endpoint_forwarding(
        self, prod_server: LiveServer, tokens: TokenFactory, prefix: str
    ) -> None:
        async with WSClient(prod_server.ws(f"{prefix}/alice"), token=tokens.valid("alice")) as ws:
            await ws.send_json({"type": "whoami"})
            assert (await ws.receive_json())["payload"] == {"user": "alice", "dev": False}
            await ws.send_json({"type": "echo", "payload": "forwarded"})
            assert (await ws.receive_json())["payload"] == "forwarded"
        async with WSClient(prod_server.ws(f"{prefix}/alice"), token=tokens.valid("bob")) as ws:
            assert await ws.wait_closed() == (1008, "user_mismatch")

    async def test_versioned_endpoint_forwarding(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(prod_server.ws("/ws/v1/bob"), token=tokens.valid("bob")) as ws:
            await ws.send_json({"type": "whoami", "id": 1})
            assert await ws.receive_json() == {
                "type": "whoami",
                "payload": {"user": "bob", "dev": False},
                "id": 1,
            }
        async with WSClient(prod_server.ws("/ws/v1/alice"), token=tokens.valid("bob")) as ws:
            assert await ws.wait_closed() == (1008, "user_mismatch")
        async with WSClient(prod_server.ws("/ws/v1/bob")) as ws:
            assert await ws.wait_closed() == (1008, "auth_required")

    async def test_mcp_endpoint_json_rpc_validation(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(
            prod_server.ws("/ws/mcp"), subprotocols=["mcp"], token=tokens.valid("alice")
        ) as ws:
            assert ws.subprotocol == "mcp"
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            listed = await ws.receive_json()
            assert listed["id"] == 1
            assert [tool["name"] for tool in listed["result"]["tools"]] == ["echo"]

            call = {"name": "echo", "arguments": {"text": "hi"}}
            await ws.send_json({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
            assert await ws.receive_json() == {
                "jsonrpc": "2.0",
                "id": 2,
                "result": {"content": [{"type": "text", "text": "hi"}]},
            }

            # Plain JSON is not JSON-RPC: the error says so, in JSON-RPC's own shape.
            await ws.send_json({"type": "echo", "payload": 1})
            invalid = await ws.receive_json()
            assert invalid["jsonrpc"] == "2.0"
            assert invalid["id"] is None
            assert invalid["error"]["code"] == -32600
            assert "jsonrpc" in invalid["error"]["data"]["detail"]

            await ws.send_text("{not json")
            assert (await ws.receive_json())["error"]["code"] == -32700

            await ws.send_json({"jsonrpc": "2.0", "id": 3, "method": "no/such"})
            missing = await ws.receive_json()
            assert (missing["id"], missing["error"]["code"]) == (3, -32601)

            await ws.send_json({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": []})
            bad_params = await ws.receive_json()
            assert (bad_params["id"], bad_params["error"]["code"]) == (4, -32602)

            # A notification gets no answer; the connection carries on.
            await ws.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert await ws.receive_nothing(timeout=0.2)
            await ws.send_json({"jsonrpc": "2.0", "id": 5, "method": "ping"})
            assert await ws.receive_json() == {"jsonrpc": "2.0", "id": 5, "result": {}}

        # A client that offers no subprotocol is not answered with one it never asked for.
        async with WSClient(prod_server.ws("/ws/mcp"), token=tokens.valid("alice")) as ws:
            assert ws.subprotocol is None
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert (await ws.receive_json())["result"] == {}


def sqlite(directory: Path) -> str:
    """The URL of a fresh SQLite database for one example app."""
    return f"sqlite+aiosqlite:///{directory / 'chat.sqlite3'}"


def new_user() -> str:
    """A subject no other test uses, so per-user limits never leak between tests."""
    return f"user-{uuid.uuid4().hex[:10]}"


class TestWebSocketMessageFormat:
    async def test_regular_json_format(self, prod_server: LiveServer, tokens: TokenFactory) -> None:
        user = new_user()
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(user)) as ws:
            await ws.send_json({"type": "echo", "payload": {"nested": [1, "two", None]}, "id": 1})
            assert await ws.receive_json() == {
                "type": "echo",
                "payload": {"nested": [1, "two", None]},
                "id": 1,
            }
            await ws.send_json({"type": "whoami", "id": "w"})
            assert await ws.receive_json() == {
                "type": "whoami",
                "payload": {"user": user, "dev": False},
                "id": "w",
            }
            # An unknown type is answered, in the same shape, and the connection carries on.
            await ws.send_json({"type": "no-such-type", "id": 2})
            unknown = await ws.receive_json()
            assert (unknown["type"], unknown["error"]["code"], unknown["id"]) == (
                "error",
                "method_not_found",
                2,
            )
            await ws.send_json({"type": "echo", "payload": "still here"})
            assert (await ws.receive_json())["payload"] == "still here"

    async def test_json_rpc_format_mcp_endpoint(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(
            prod_server.ws("/ws/mcp"), subprotocols=["mcp"], token=tokens.valid(new_user())
        ) as ws:
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
            initialized = await ws.receive_json()
            assert initialized["id"] == 1
            assert initialized["result"]["serverInfo"]["name"] == "wsgate-example"
            # A batch: answered as one array, notifications left out, invalid entries get
            # their own error.
            await ws.send_json(
                [
                    {"jsonrpc": "2.0", "id": "a", "method": "ping"},
                    {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": "b", "method": "tools/list"},
                    {"foo": "bar"},
                ]
            )
            batch = await ws.receive_json()
            assert isinstance(batch, list)
            by_id = {response["id"]: response for response in batch}
            assert set(by_id) == {"a", "b", None}
            assert by_id["a"]["result"] == {}
            assert by_id["b"]["result"]["tools"][0]["name"] == "echo"
            assert by_id[None]["error"]["code"] == -32600
            # An empty batch is one error object, not an array.
            await ws.send_text("[]")
            empty = await ws.receive_json()
            assert (empty["id"], empty["error"]["code"]) == (None, -32600)
            # A batch of notifications gets no answer at all.
            await ws.send_json([{"jsonrpc": "2.0", "method": "notifications/initialized"}] * 2)
            assert await ws.receive_nothing(timeout=0.3)

    async def test_invalid_json_handling(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as ws:
            for text in [
                "{not json",
                '{"type": "echo", "payload": NaN}',
                '{"type": "echo", "payload": Infinity}',
                '{"type": "echo", "payload": "\\ud800"}',  # a lone surrogate
                "[" * 2000 + "]" * 2000,  # nesting beyond the parser's limit
                "",
            ]:
                await ws.send_text(text)
                error = await ws.receive_json()
                assert error["type"] == "error"
                assert error["error"]["code"] == "invalid_json", text[:40]
                assert text[:20] not in error["error"]["message"] or not text
            await ws.send_json({"type": "echo", "payload": "ok", "id": 9})
            assert await ws.receive_json() == {"type": "echo", "payload": "ok", "id": 9}

        async with WSClient(
            prod_server.ws("/ws/mcp"), subprotocols=["mcp"], token=tokens.valid(new_user())
        ) as ws:
            await ws.send_text('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
            assert await ws.receive_json() == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32700,
                    "message": ANY_STRING,
                    "data": {"reason": "invalid_json"},
                },
            }

    async def test_message_type_validation(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as ws:
            cases: list[tuple[Any, str, str]] = [
                ([1, 2], "invalid_message", "object"),
                ("just a string", "invalid_message", "object"),
                ({"payload": 1}, "invalid_message", "type"),
                ({"type": ""}, "invalid_message", "type"),
                ({"type": 5}, "invalid_message", "type"),
                ({"type": "echo", "id": {"no": 1}}, "invalid_message", "id"),
                ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, "wrong_protocol", "/ws/mcp"),
            ]
            for message, code, named in cases:
                await ws.send_json(message)
                error = await ws.receive_json()
                assert error["error"]["code"] == code, message
                assert named in error["error"]["message"], error
            await ws.send_bytes(b"\x00\x01binary")
            assert (await ws.receive_json())["error"]["code"] == "unsupported_data"
            await ws.send_json({"type": "echo", "payload": "alive"})
            assert (await ws.receive_json())["payload"] == "alive"

        # Plain JSON on the JSON-RPC endpoint: -32600, naming the JSON endpoint.
        async with WSClient(
            prod_server.ws("/ws/mcp"), subprotocols=["mcp"], token=tokens.valid(new_user())
        ) as ws:
            await ws.send_json({"type": "echo", "payload": 1})
            error = await ws.receive_json()
            assert (error["id"], error["error"]["code"]) == (None, -32600)
            assert error["error"]["data"]["reason"] == "wrong_protocol"
            assert "/ws" in error["error"]["message"]

    async def test_backward_compatibility_detection(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        user = new_user()
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(user)) as ws:
            await ws.send_json({"event": "echo", "data": {"x": 1}})
            assert await ws.receive_json() == {"event": "echo", "data": {"x": 1}}
            await ws.send_json({"event": "whoami", "id": 3})
            assert await ws.receive_json() == {
                "event": "whoami",
                "data": {"user": user, "dev": False},
                "id": 3,
            }
            # Errors come back in the legacy shape too.
            await ws.send_json({"event": "no-such-event"})
            error = await ws.receive_json()
            assert error["event"] == "error"
            assert error["data"]["code"] == "method_not_found"
        # A modern client on the same endpoint is not affected.
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(user)) as ws:
            await ws.send_json({"type": "echo", "payload": 1})
            assert await ws.receive_json() == {"type": "echo", "payload": 1}


async def wait_for(value: Callable[[], Awaitable[object]], expected: object) -> None:
    """Wait until ``await value()`` equals ``expected``, polling for at most 10 seconds."""
    deadline = time.monotonic() + 10
    while (current := await value()) != expected:
        assert time.monotonic() < deadline, f"still {current!r} after 10 s, not {expected!r}"
        await anyio.sleep(0.02)


def async_value(value: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """``value`` as a coroutine function, for :func:`wait_for`."""

    async def read() -> object:
        return value()

    return read


def gate_timers(gate: Gate) -> int:
    """How many lifecycle timers the gate has armed, over all its endpoints."""
    return sum(layer.armed_timers for layer in gate.layers(HeartbeatMiddleware))


async def connect_if_served(client: WSClient) -> None:
    """Connect, unless the server went away first (the handshake then fails client-side)."""
    with contextlib.suppress(OSError, EOFError, InvalidHandshake, HandshakeRejected, TimeoutError):
        await client.connect()


async def stop_in_thread(server: LiveServer) -> None:
    await anyio.to_thread.run_sync(server.stop)


async def chatter(ws: WSClient, *, pause: float) -> None:
    """Echo a message every ``pause`` seconds until the server closes (at most 200 times)."""
    for n in range(200):
        await ws.send_json({"type": "echo", "payload": n})
        await ws.receive_json()
        await anyio.sleep(pause)  # the client's own pace, not synchronisation


class _AnyString:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<any non-empty string>"


ANY_STRING: Any = _AnyString()


class TestWebSocketSecurity:
    @pytest.mark.parametrize(
        "origin",
        [
            "https://app.example.com.evil.io",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil.example",
            "null",
        ],
    )
    async def test_cors_validation(
        self, prod_server: LiveServer, tokens: TokenFactory, origin: str
    ) -> None:
        token = tokens.valid(new_user())
        async with WSClient(prod_server.ws("/ws"), origin=ALLOWED_ORIGIN, token=token) as ws:
            await ws.send_json({"type": "echo", "payload": "from the allowed origin"})
            assert (await ws.receive_json())["payload"] == "from the allowed origin"
        # A lookalike is refused before accept, whatever token it carries.
        with pytest.raises(HandshakeRejected) as refused:
            await WSClient(prod_server.ws("/ws"), origin=origin, token=token).connect()
        assert refused.value.status == 403
        assert refused.value.json() == {"error": "origin_not_allowed"}

    async def test_message_size_limits(self, prod_server: LiveServer, tokens: TokenFactory) -> None:
        limit = 8192
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as ws:
            # {"type":"echo","payload":"xxx..."} padded to exactly the limit passes.
            envelope = len('{"type":"echo","payload":""}')
            exact = '{"type":"echo","payload":"' + "x" * (limit - envelope) + '"}'
            assert len(exact.encode()) == limit
            await ws.send_text(exact)
            assert len((await ws.receive_json())["payload"]) == limit - envelope
            # One byte more is refused, and the connection stays open.
            await ws.send_text(exact[:-2] + 'x"}')
            too_large = await ws.receive_json()
            assert too_large["error"]["code"] == "message_too_large"
            assert too_large["error"]["limit"] == limit
            # Bytes are counted, not characters: 8192 four-byte characters are 32 KiB.
            await ws.send_json({"type": "echo", "payload": "\U0001f600" * 2000})
            assert (await ws.receive_json())["error"]["code"] == "message_too_large"
            await ws.send_json({"type": "echo", "payload": "small"})
            assert (await ws.receive_json())["payload"] == "small"
            # Far beyond the server's own cap, the protocol layer cuts the connection (1009)
            # instead of buffering the message.
            await ws.send_text("x" * (limit * 64))
            code, _ = await ws.wait_closed()
            assert code == 1009

    async def test_rate_limiting_enforcement(self, tokens: TokenFactory, tmp_path: Path) -> None:
        # The example app's default, 30 messages a minute per user, on a server of its own.
        app = create_app(example_config(Environment.PRODUCTION), database_url=sqlite(tmp_path))
        with LiveServer(app) as server:
            user = new_user()
            clients = [WSClient(server.ws("/ws"), token=tokens.valid(user)) for _ in range(3)]
            for client in clients:
                await client.connect()

            async def burst(ws: WSClient, start: int, count: int) -> None:
                for n in range(start, start + count):
                    await ws.send_json({"type": "echo", "payload": n, "id": n})

            # 100 messages at once, spread over the user's three connections.
            async with anyio.create_task_group() as group:
                for index, (start, count) in enumerate([(0, 34), (34, 33), (67, 33)]):
                    group.start_soon(burst, clients[index], start, count)
            answers = []
            for client, count in zip(clients, [34, 33, 33], strict=True):
                answers += [await client.receive_json() for _ in range(count)]
            echoed = [answer for answer in answers if answer.get("type") == "echo"]
            limited = [answer for answer in answers if answer.get("type") == "error"]
            assert len(echoed) == 30
            assert len(limited) == 70
            for answer in limited:
                assert answer["error"]["code"] == "rate_limited"
                assert 0 < answer["error"]["retry_after"] <= 60
                assert answer["id"] in range(100)
            # Rate limiting never disconnects: every connection is still open.
            for client in clients:
                assert client.state == "open"
                assert await client.receive_nothing(timeout=0.1)
                await client.close()
            # Another user has a budget of their own.
            async with WSClient(server.ws("/ws"), token=tokens.valid(new_user())) as ws:
                await ws.send_json({"type": "echo", "payload": "other"})
                assert (await ws.receive_json())["payload"] == "other"

    @pytest.mark.slow  # waits for real tokens to expire: about 15 s
    async def test_jwt_token_expiry_handling(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        user = new_user()
        async with WSClient(prod_server.ws("/ws"), token=tokens.expired(user)) as ws:
            assert await ws.wait_closed() == (1008, "token_expired")
            assert ws.history == []
        # A token that expires while the connection is open closes it at exp.
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(user, ttl=2)) as ws:
            await ws.send_json({"type": "echo", "payload": "before exp"})
            assert (await ws.receive_json())["payload"] == "before exp"
            assert await ws.wait_closed(timeout=15) == (1008, "token_expired")
        # Refreshing in-band moves the deadline.
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(user, ttl=2)) as ws:
            await ws.send_json({"type": "auth", "token": tokens.valid(user, ttl=600)})
            refreshed = await ws.expect("auth", timeout=5)
            assert refreshed["payload"]["expires_at"] > time.time() + 500
            assert await ws.receive_nothing(timeout=3.5)  # past the first token's exp
            await ws.send_json({"type": "echo", "payload": "after the old exp"})
            assert (await ws.receive_json())["payload"] == "after the old exp"
        # A refresh with someone else's token ends the connection.
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(user)) as ws:
            await ws.send_json({"type": "auth", "token": tokens.valid(new_user())})
            assert await ws.wait_closed() == (1008, "invalid_token")


class TestWebSocketErrorHandling:
    async def test_database_session_error_recovery(
        self, tokens: TokenFactory, tmp_path: Path
    ) -> None:
        database = tmp_path / "chat.sqlite3"
        # A short busy timeout, so that a locked database fails in a fraction of a second.
        url = f"sqlite+aiosqlite:///{database}?timeout=0.2"
        app = create_app(example_config(Environment.PRODUCTION), database_url=url)
        with LiveServer(app) as server:
            async with WSClient(server.ws("/ws"), token=tokens.valid(new_user())) as ws:
                await ws.send_json({"type": "join", "room": "ops"})
                await ws.expect("joined")
                await ws.send_json({"type": "say", "room": "ops", "text": "one", "id": 1})
                assert (await ws.expect("said"))["text"] == "one"

                # The database fails for real: its table is gone.
                with contextlib.closing(sqlite3.connect(database)) as db:
                    db.execute("DROP TABLE chat_messages")
                await ws.send_json({"type": "say", "room": "ops", "text": "two", "id": 2})
                failed = await ws.receive_json()
                assert failed == {
                    "type": "error",
                    "error": {"code": "internal_error", "message": ANY_STRING},
                    "id": 2,
                }
                assert "chat_messages" not in failed["error"]["message"]  # no internals
                # The connection survived the failure: other messages still work.
                await ws.send_json({"type": "echo", "payload": "alive"})
                assert (await ws.receive_json())["payload"] == "alive"

                # Now locked by another writer: the same answer, and still alive.
                with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
                    db.execute("CREATE TABLE chat_messages_lock (x)")
                    db.execute("BEGIN EXCLUSIVE")
                    await ws.send_json({"type": "history", "room": "ops", "id": 3})
                    assert (await ws.receive_json())["error"]["code"] == "internal_error"
                    db.execute("ROLLBACK")

                # The database comes back (the app recreates its table at startup; here the
                # operator does), and the same connection uses it again.
                await app.state.store.start()
                await ws.send_json({"type": "say", "room": "ops", "text": "three", "id": 4})
                assert (await ws.expect("said"))["text"] == "three"
                await ws.send_json({"type": "history", "room": "ops", "id": 5})
                history = await ws.expect("history")
                assert [item["text"] for item in history["payload"]] == ["three"]

    async def test_auth_service_failure_handling(self, tmp_path: Path) -> None:
        service = IntrospectionService()
        auth = LiveServer(service.app)
        auth.start()
        port = auth.port
        verifier = RemoteVerifier(f"{auth.url}/introspect", read_timeout=0.3, cooldown=0.5)
        config = example_config(Environment.PRODUCTION, jwt_secret=None)
        try:
            app = create_app(config, verifier=verifier, database_url=sqlite(tmp_path))
            with LiveServer(app) as server:
                async with WSClient(server.ws("/ws"), token="token-of-alice") as ws:
                    await ws.send_json({"type": "whoami"})
                    assert (await ws.receive_json())["payload"]["user"] == "alice"

                    # Slow: a new connection gets 1013 in about the read timeout, and the
                    # open one keeps being served.
                    service.slow.set()
                    started = time.monotonic()
                    async with WSClient(server.ws("/ws"), token="token-of-bob") as refused:
                        assert await refused.wait_closed() == (1013, "auth_unavailable")
                    assert time.monotonic() - started < 3.0
                    await ws.send_json({"type": "echo", "payload": "served"})
                    assert (await ws.receive_json())["payload"] == "served"
                    service.slow.clear()

                    # Down: nobody listens on its port.
                    auth.stop()
                    for attempt in range(3):
                        started = time.monotonic()
                        token = f"token-of-carol-{attempt}"
                        async with WSClient(server.ws("/ws"), token=token) as refused:
                            assert await refused.wait_closed() == (1013, "auth_unavailable")
                        assert time.monotonic() - started < 3.0
                    await ws.send_json({"type": "echo", "payload": "still served"})
                    assert (await ws.receive_json())["payload"] == "still served"

                    # Back on the same address: new connections authenticate again, with no
                    # restart, once the verifier's cool-down has passed.
                    auth = LiveServer(service.app, port=port)
                    auth.start()
                    deadline = time.monotonic() + 10
                    for attempt in itertools.count():
                        token = f"token-of-dave-{attempt}"
                        async with WSClient(server.ws("/ws"), token=token) as back:
                            await back.send_json({"type": "whoami"})
                            try:
                                answer = await back.receive_json()
                            except ConnectionClosed:
                                assert back.close_reason == "auth_unavailable"
                                assert time.monotonic() < deadline, "the verifier never recovered"
                                await anyio.sleep(0.1)  # the cool-down is a wall-clock period
                                continue
                            assert answer["payload"]["user"] == "dave"
                            break
        finally:
            auth.stop()

    async def test_malformed_message_handling(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        hostile: list[str | bytes] = [
            b"\xff\xfe\x00garbage",
            "\x00\x01\x02",
            '{"type": "echo", "payload": ' + "[" * 900 + "]" * 900 + "}",
            '{"type": "echo", "payload": 1e999999}',
            '{"type": "echo", "payload": 123456789012345678901234567890}',
            '{"type": "echo"' + ', "k": 1' * 1000 + "}",
            '{"type": "echo", "type": ["dup"]}',
            '{"type": "' + "\u0000" * 10 + '"}',
            '{"__proto__": {"type": "admin"}}',
            "x" * 9000,
        ]
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as ws:
            for data in hostile:
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_text(data)
                answer = await ws.receive(timeout=5)
                assert isinstance(answer, str)
                assert "Traceback" not in answer
                assert 'File "' not in answer
                await ws.send_json({"type": "echo", "payload": "alive", "id": "probe"})
                probe = await ws.expect("echo")
                assert probe == {"type": "echo", "payload": "alive", "id": "probe"}, data[:40]

        async with WSClient(
            prod_server.ws("/ws/mcp"), subprotocols=["mcp"], token=tokens.valid(new_user())
        ) as ws:
            for text in [
                "[1, 2, 3]",
                '{"jsonrpc": "1.0", "id": 1, "method": "ping"}',
                '{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}',
                '{"jsonrpc": "2.0", "id": 1, "method": 5}',
                '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}',
            ]:
                await ws.send_text(text)
                answer = await ws.receive_json()
                errors = answer if isinstance(answer, list) else [answer]
                assert all(error["error"]["code"] in (-32600, -32602) for error in errors), text
            batch = [{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in range(51)]
            await ws.send_json(batch)
            too_many = await ws.receive_json()
            assert too_many["error"]["data"]["reason"] == "batch_too_large"
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert await ws.receive_json() == {"jsonrpc": "2.0", "id": 1, "result": {}}

    async def test_connection_failure_recovery(self, tokens: TokenFactory, tmp_path: Path) -> None:
        app = create_app(example_config(Environment.PRODUCTION), database_url=sqlite(tmp_path))
        registry = app.state.gate.registry
        user = new_user()
        with LiveServer(app) as server:
            survivor = WSClient(server.ws("/ws"), token=tokens.valid(user))
            await survivor.connect()
            # Two clients vanish without a close frame (their TCP connection is cut).
            for _ in range(2):
                vanishing = WSClient(server.ws("/ws"), token=tokens.valid(user))
                await vanishing.connect()
                await vanishing.send_json({"type": "echo", "payload": "about to vanish"})
                await vanishing.receive_json()
                vanishing.abort()
            await wait_for(lambda: registry.total(), 1)
            # Their slots were freed: two new connections do not evict the survivor.
            async with (
                WSClient(server.ws("/ws"), token=tokens.valid(user)) as second,
                WSClient(server.ws("/ws"), token=tokens.valid(user)) as third,
            ):
                for ws in (survivor, second, third):
                    await ws.send_json({"type": "echo", "payload": "here"})
                    assert (await ws.receive_json())["payload"] == "here"
            await survivor.close()
            await wait_for(lambda: registry.total(), 0)

        # The server restarts: its clients are told (1012), and reconnecting works.
        app = create_app(example_config(Environment.PRODUCTION), database_url=sqlite(tmp_path))
        server = LiveServer(app)
        server.start()
        try:
            ws = WSClient(server.ws("/ws"), token=tokens.valid(user))
            await ws.connect()
            server.stop()
            assert (await ws.wait_closed())[0] == 1012
        finally:
            server.stop()
        with LiveServer(app, port=server.port) as again:
            async with WSClient(again.ws("/ws"), token=tokens.valid(user)) as ws:
                await ws.send_json({"type": "echo", "payload": "back"})
                assert (await ws.receive_json())["payload"] == "back"


class TestWebSocketConnectionManagement:
    async def test_connection_limits_per_user(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        user = new_user()
        clients = [WSClient(prod_server.ws("/ws"), token=tokens.valid(user)) for _ in range(4)]
        for client in clients[:3]:
            await client.connect()
            await client.send_json({"type": "echo", "payload": "open"})
            await client.receive_json()
        # The fourth connection is accepted, and the user's oldest one is closed.
        await clients[3].connect()
        assert await clients[0].wait_closed() == (4008, "connection_limit")
        for client in clients[1:]:
            await client.send_json({"type": "echo", "payload": "kept"})
            assert (await client.receive_json())["payload"] == "kept"
            await client.close()
        # Another user is not affected by this user's limit.
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as other:
            await other.send_json({"type": "echo", "payload": "mine"})
            assert (await other.receive_json())["payload"] == "mine"

    async def test_heartbeat_mechanism(self, tokens: TokenFactory, tmp_path: Path) -> None:
        # The default is a ping after 45 s of silence; a short interval keeps the test fast.
        config = example_config(
            Environment.PRODUCTION, heartbeat_interval=0.3, heartbeat_timeout=0.6
        )
        assert GateConfig().heartbeat_interval == 45.0
        with LiveServer(create_app(config, database_url=sqlite(tmp_path))) as server:
            async with WSClient(server.ws("/ws"), token=tokens.valid(new_user())) as ws:
                for _ in range(3):  # answering keeps the connection open, ping after ping
                    assert await ws.receive_json(timeout=5) == {"type": "ping"}
                    await ws.send_json({"type": "pong"})
                # The client may ping too; the gate answers, the handler never sees it.
                await ws.send_json({"type": "ping", "id": 5})
                assert await ws.expect("pong") == {"type": "pong", "id": 5}
                # Silence after a ping ends the connection.
                assert await ws.wait_closed(timeout=10) == (4000, "heartbeat_timeout")
                received = [frame.json() for frame in ws.history if frame.direction == "received"]
                assert {message["type"] for message in received} <= {"ping", "pong"}

            # On the MCP endpoint the ping is a JSON-RPC request, answered by a result.
            async with WSClient(
                server.ws("/ws/mcp"), subprotocols=["mcp"], token=tokens.valid(new_user())
            ) as ws:
                ping = await ws.receive_json(timeout=5)
                assert (ping["jsonrpc"], ping["method"]) == ("2.0", "ping")
                await ws.send_json({"jsonrpc": "2.0", "id": ping["id"], "result": {}})
                again = await ws.receive_json(timeout=5)
                assert again["method"] == "ping"
                assert again["id"] != ping["id"]

    async def test_graceful_disconnect_cleanup(self, tokens: TokenFactory, tmp_path: Path) -> None:
        app = create_app(example_config(Environment.PRODUCTION), database_url=sqlite(tmp_path))
        gate = app.state.gate
        with LiveServer(app) as server:
            users = [new_user() for _ in range(5)]
            clients = [WSClient(server.ws("/ws"), token=tokens.valid(user)) for user in users]
            for client in clients:
                await client.connect()
                await client.send_json({"type": "join", "room": "lobby"})
                await client.expect("joined")
            assert await gate.registry.total() == 5
            assert gate_timers(gate) == 5
            for client in clients:
                await client.close()
                assert client.close_code == 1000
            await wait_for(gate.registry.total, 0)
            await wait_for(async_value(lambda: gate_timers(gate)), 0)
            await wait_for(async_value(lambda: len(app.state.rooms.members)), 0)

    async def test_connection_timeout_handling(self, tokens: TokenFactory, tmp_path: Path) -> None:
        config = example_config(Environment.PRODUCTION, idle_timeout=0.5, max_lifetime=1.5)
        with LiveServer(create_app(config, database_url=sqlite(tmp_path))) as server:
            # Idle: nothing sent for idle_timeout closes 4001.
            async with WSClient(server.ws("/ws"), token=tokens.valid(new_user())) as ws:
                assert await ws.wait_closed(timeout=10) == (4001, "idle_timeout")
            # Busy, but for longer than max_lifetime: closes 4002.
            async with WSClient(server.ws("/ws"), token=tokens.valid(new_user())) as ws:
                started = time.monotonic()
                with pytest.raises(ConnectionClosed):
                    await chatter(ws, pause=0.1)
                assert (ws.close_code, ws.close_reason) == (4002, "max_lifetime")
                assert time.monotonic() - started >= 1.4


class TestWebSocketConcurrency:
    async def test_concurrent_connections_same_user(
        self, tokens: TokenFactory, tmp_path: Path
    ) -> None:
        app = create_app(example_config(Environment.PRODUCTION), database_url=sqlite(tmp_path))
        registry = app.state.gate.registry
        user = new_user()
        with LiveServer(app) as server:
            clients = [WSClient(server.ws("/ws"), token=tokens.valid(user)) for _ in range(10)]
            async with anyio.create_task_group() as group:  # 10 simultaneous connects
                for client in clients:
                    group.start_soon(client.connect)

            async def outcome(client: WSClient) -> str:
                try:
                    await client.send_json({"type": "echo", "payload": "alive?"})
                    await client.expect("echo", timeout=3)
                except (ConnectionClosed, AssertionError):
                    assert (client.close_code, client.close_reason) == (4008, "connection_limit")
                    return "evicted"
                return "open"

            outcomes = [await outcome(client) for client in clients]
            assert outcomes.count("open") == 3
            assert outcomes.count("evicted") == 7
            assert await registry.total() == 3
            for client in clients:
                await client.close()
            await wait_for(registry.total, 0)

    async def test_concurrent_message_processing(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        connections, messages = 12, 20

        async def conversation(index: int) -> list[int]:
            async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as ws:
                for n in range(messages):
                    await ws.send_json({"type": "echo", "payload": [index, n]})
                return [(await ws.receive_json())["payload"][1] for _ in range(messages)]

        results: dict[int, list[int]] = {}

        async def run(index: int) -> None:
            results[index] = await conversation(index)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for index in range(connections):
                    group.start_soon(run, index)
        # Every connection got all its answers, in the order it sent the messages.
        assert results == {index: list(range(messages)) for index in range(connections)}

    async def test_connection_cleanup_race_conditions(
        self, tokens: TokenFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING)
        app = create_app(example_config(Environment.PRODUCTION), database_url=sqlite(tmp_path))
        gate = app.state.gate
        user = new_user()
        server = LiveServer(app)
        server.start()
        try:
            for _round in range(10):
                # The user's oldest connection closes itself at the moment a fourth connect
                # evicts it; nothing is closed twice and no slot is lost or kept.
                clients = [WSClient(server.ws("/ws"), token=tokens.valid(user)) for _ in range(3)]
                for client in clients:
                    await client.connect()
                fourth = WSClient(server.ws("/ws"), token=tokens.valid(user))
                async with anyio.create_task_group() as group:
                    group.start_soon(clients[0].close)
                    group.start_soon(fourth.connect)
                for client in [*clients[1:], fourth]:
                    await client.send_json({"type": "echo", "payload": 1})
                    assert (await client.receive_json())["payload"] == 1
                for client in [*clients, fourth]:
                    await client.close()
                await wait_for(gate.registry.total, 0)

            # Evictions racing with server shutdown. A connect may lose the race before the
            # handshake is answered; that is the client's business, not the gate's.
            clients = [WSClient(server.ws("/ws"), token=tokens.valid(user)) for _ in range(6)]
            async with anyio.create_task_group() as group:
                for client in clients:
                    group.start_soon(connect_if_served, client)
                group.start_soon(stop_in_thread, server)
            await wait_for(gate.registry.total, 0)
        finally:
            server.stop()
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert problems == [], [r.getMessage() for r in problems]


class TestWebSocketResourceManagement:
    @pytest.mark.slow  # 5,000 connections under tracemalloc: about 45 s
    async def test_websocket_resource_cleanup(self, tokens: TokenFactory, tmp_path: Path) -> None:
        app = create_app(
            example_config(Environment.PRODUCTION, rate_limit="100000/minute"),
            database_url=sqlite(tmp_path),
        )
        gate = app.state.gate
        # Ten clients at a time, each its own user: real concurrency, and no evictions.
        clients = 10
        user_tokens = [tokens.valid(new_user()) for _ in range(clients)]

        async def cycle(server: LiveServer, n: int) -> None:
            async with WSClient(server.ws("/ws"), token=user_tokens[n % clients]) as ws:
                await ws.send_json({"type": "echo", "payload": n})
                assert (await ws.receive_json())["payload"] == n

        async def cycles(server: LiveServer, count: int) -> None:
            for first in range(0, count, clients):
                async with anyio.create_task_group() as group:
                    for n in range(first, first + clients):
                        group.start_soon(cycle, server, n)

        with LiveServer(app) as server:
            await cycles(server, 200)  # warm up: caches, pools and lazy imports settle
            await wait_for(gate.registry.total, 0)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                await cycles(server, 5000)
                await wait_for(gate.registry.total, 0)
                await wait_for(async_value(lambda: gate_timers(gate)), 0)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
        # 5,000 connections came and went; what they left behind is a small bound, not 5,000
        # connections' worth (each of which costs tens of kilobytes while open).
        assert after - before < 2 * 1024 * 1024, f"{(after - before) / 1024:.0f} KiB retained"
        # The server's thread may still be letting go of its last tasks: a bounded wait.
        await wait_for(async_value(lambda: _referrers_of(_live_connections())), [])


def _live_connections() -> list[Connection]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, Connection)]


def _referrers_of(objects: list[Connection]) -> list[str]:
    """What still holds ``objects``, by type: what a failure needs to name the leak."""
    return sorted(
        {type(ref).__name__ for obj in objects for ref in gc.get_referrers(obj)} - {"list"}
    ) or [repr(obj) for obj in objects]


class TestWebSocketServiceDiscovery:
    async def test_websocket_config_endpoint(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async with httpx.AsyncClient(base_url=prod_server.url) as http:
            response = await http.get("/ws/config", headers={"Origin": ALLOWED_ORIGIN})
            etag = response.headers["etag"]
            cached = await http.get("/ws/config", headers={"If-None-Match": etag})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert cached.status_code == 304
        config = response.json()
        endpoints = {endpoint["path"]: endpoint for endpoint in config["endpoints"]}
        assert set(endpoints) == {
            "/ws",
            "/ws/secure",
            "/ws/mcp",
            "/ws/v1/{user_id}",
            "/ws/{user_id}",
        }
        assert endpoints["/ws/mcp"] == {
            "path": "/ws/mcp",
            "format": "jsonrpc",
            "accepts": ["jsonrpc"],
            "subprotocols": ["mcp"],
            "auth_required": True,
        }
        assert endpoints["/ws"]["accepts"] == ["json", "legacy"]
        assert config["auth"]["methods"] == ["header", "subprotocol"]
        assert config["auth"]["subprotocol_prefixes"] == ["base64url.bearer."]
        limits = config["limits"]
        assert (limits["max_message_bytes"], limits["rate_limit"]) == (8192, "600/minute")
        assert limits["max_connections_per_user"] == 3
        assert (config["heartbeat"]["interval"], config["heartbeat"]["timeout"]) == (45, 20)
        assert [(row["code"], row["reason"]) for row in config["close_codes"]] == [
            (row.close_code, row.reason) for row in CLOSE_CODES
        ]

        # What it publishes is what the gate does: a client that follows it gets in, and a
        # message over the published size gets the published error.
        mcp = endpoints["/ws/mcp"]
        async with WSClient(
            prod_server.ws(mcp["path"]),
            origin=ALLOWED_ORIGIN,
            subprotocols=mcp["subprotocols"],
            token=tokens.valid(new_user()),
            token_via="subprotocol",
            subprotocol_prefix=config["auth"]["subprotocol_prefixes"][0],
        ) as ws:
            assert ws.subprotocol == "mcp"
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert (await ws.receive_json())["result"]["tools"][0]["name"] == "echo"
            await ws.send_text("x" * (limits["max_message_bytes"] + 1))
            error = (await ws.receive_json())["error"]
            assert error["data"] == {"reason": "message_too_large", "limit": 8192}

    async def test_secure_websocket_config_endpoint(
        self, prod_server: LiveServer, dev_server: LiveServer, tokens: TokenFactory
    ) -> None:
        bearer = {"Authorization": f"Bearer {tokens.valid(new_user())}"}
        async with httpx.AsyncClient(base_url=prod_server.url) as http:
            anonymous = await http.get("/ws/secure/config")
            expired = await http.get(
                "/ws/secure/config", headers={"Authorization": f"Bearer {tokens.expired()}"}
            )
            response = await http.get("/ws/secure/config", headers=bearer)
            etag = response.headers["etag"]
            cached = await http.get("/ws/secure/config", headers={**bearer, "If-None-Match": etag})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer error="auth_required"'
        assert (expired.status_code, expired.json()["error"]) == (401, "token_expired")
        assert response.status_code == 200
        assert cached.status_code == 304
        production = response.json()
        assert SECRET not in response.text
        assert production["environment"] == "production"
        assert production["dev_bypass"] is False
        assert not any(endpoint["dev_bypass"] for endpoint in production["endpoints"])
        assert production["auth"]["algorithms"] == ["HS256"]
        assert production["auth"]["required_claims"] == ["sub", "exp"]
        assert production["origins"]["count"] == 1
        assert production["origins"]["allow_any"] is False
        assert production["storage"]["kind"] == "memory"
        assert production["limits"]["max_message_bytes"] == 8192

        async with httpx.AsyncClient(base_url=dev_server.url) as http:
            development = (await http.get("/ws/secure/config", headers=bearer)).json()
        assert development["environment"] == "development"
        assert development["dev_bypass"] is True
        bypass = {endpoint["path"]: endpoint["dev_bypass"] for endpoint in development["endpoints"]}
        assert bypass["/ws"] is True
        assert bypass["/ws/secure"] is False

    async def test_websocket_health_endpoint(
        self, prod_server: LiveServer, tokens: TokenFactory
    ) -> None:
        async def health() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=prod_server.url) as http:
                response = await http.get("/ws/secure/health")
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            document: dict[str, Any] = response.json()
            return document

        before = await health()
        assert before["status"] == "ok"
        assert before["backend"]["kind"] == "memory"
        assert before["backend"]["status"] == "ok"
        assert before["uptime"] > 0
        async with WSClient(prod_server.ws("/ws"), token=tokens.valid(new_user())) as ws:
            await ws.send_json({"type": "echo", "payload": "ping"})
            await ws.expect("echo")
            during = await health()
            assert during["connections"] >= 1
            summary = during["metrics"]
            assert summary["connections_opened"] > before["metrics"]["connections_opened"]
            assert summary["messages_received"] > before["metrics"]["messages_received"]
            assert during["uptime"] >= before["uptime"]
