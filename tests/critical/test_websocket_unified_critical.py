"""The critical tests the product was specified from, under their own names.

Each runs against the example app (``examples/app.py``) under real uvicorn, through the
harness that ships in ``wsgate.testing``, over real sockets. Later issues fill the classes
that are not here yet.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from tests.conftest import ALLOWED_ORIGIN, SECRET
from wsgate import ConfigurationError, Environment, GateConfig
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
