"""The discovery, health and metrics routes over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.websockets import WebSocket

from wsgate import (
    CLOSE_CODES,
    MESSAGE_ERRORS,
    Environment,
    Gate,
    GateConfig,
    GatedEndpoint,
    RemoteVerifier,
    rpc_method,
)
from wsgate.discovery import discovery_routes
from wsgate.metrics import Metrics
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "discovery-test-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"


class Chat(GatedEndpoint):
    protocol = "json"

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        return {"type": "echo"}


class Tools(GatedEndpoint):
    protocol = "jsonrpc"

    @rpc_method("tools/list")
    async def list_tools(self, websocket: WebSocket, params: Any) -> Any:
        return {"tools": []}


class Health(Gate):
    """A gate whose backend reports what the test says."""

    reported: dict[str, Any] | Exception

    async def backend_health(self) -> dict[str, Any]:
        if isinstance(self.reported, Exception):
            raise self.reported
        return self.reported


def config(**overrides: Any) -> GateConfig:
    settings: dict[str, Any] = {
        "jwt_secret": SECRET,
        "allowed_origins": (ORIGIN, "https://admin.example.com:8443"),
        "allowed_origin_regex": r"https://[a-z]+\.preview\.example\.com",
        "allow_missing_origin": True,
    }
    settings.update(overrides)
    return GateConfig(**settings)


def serve(gate: Gate) -> Starlette:
    return Starlette(
        routes=[
            *discovery_routes(gate),  # before the endpoints: the documents are built lazily
            gate.route("/ws", Chat, subprotocols=["chat"]),
            gate.route("/ws/mcp", Tools, subprotocols=["mcp"]),
        ]
    )


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory(SECRET)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    gate = Gate(
        config(
            rate_limit="10/second",
            max_message_bytes=4096,
            max_connections_per_user=2,
            connection_policy="reject_new",
            heartbeat_interval=30,
            idle_timeout=600,
        ),
        metrics=Metrics(),
    )
    with LiveServer(serve(gate)) as live:
        yield live


async def get(server: LiveServer, path: str, **headers: str) -> httpx.Response:
    # CI runs four suites at once on two cores: a connect may wait past httpx's 5 s.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.get(path, headers=headers)


async def test_the_client_config_is_generated_from_the_gate(server: LiveServer) -> None:
    response = await get(server, "/ws/config")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["endpoints"] == [
        {
            "path": "/ws",
            "format": "json",
            "accepts": ["json", "legacy"],
            "subprotocols": ["chat"],
            "auth_required": True,
        },
        {
            "path": "/ws/mcp",
            "format": "jsonrpc",
            "accepts": ["jsonrpc"],
            "subprotocols": ["mcp"],
            "auth_required": True,
        },
    ]
    auth = document["auth"]
    assert auth["methods"] == ["header", "subprotocol"]
    assert auth["header"] == "Authorization: Bearer <token>"
    assert auth["subprotocol_prefixes"] == ["base64url.bearer."]
    assert auth["query_param"] is None
    assert auth["refresh"]["jsonrpc"]["method"] == "auth/refresh"
    assert document["limits"] == {
        "max_message_bytes": 4096,
        "message_size_policy": "refuse",
        "rate_limit": "10/second",
        "rate_limit_strategy": "moving-window",
        "rate_limit_close_after": None,
        "max_connections_per_user": 2,
        "connection_policy": "reject_new",
        "connect_rate_per_ip": None,
        "connect_rate_per_worker": None,
        "max_connections_per_worker": None,
        "max_batch": 50,
        "max_depth": 64,
        "rate_limit_batch_cost": "one unit per request",
    }
    heartbeat = document["heartbeat"]
    assert (heartbeat["interval"], heartbeat["timeout"]) == (30, 20)
    assert (heartbeat["idle_timeout"], heartbeat["max_lifetime"]) == (600, None)
    assert [row["reason"] for row in document["close_codes"]] == [r.reason for r in CLOSE_CODES]
    assert document["close_codes"][0] == {
        "code": 1008,
        "reason": "origin_not_allowed",
        "http_status": 403,
        "handshake_only": True,
        "description": CLOSE_CODES[0].description,
    }
    assert [row["code"] for row in document["errors"]] == [e.code for e in MESSAGE_ERRORS]
    assert document["errors"][0]["jsonrpc_code"] == -32700


async def test_what_is_off_is_published_as_off() -> None:
    gate = Gate(
        config(
            rate_limit=None,
            max_connections_per_user=None,
            heartbeat_interval=None,
            query_param="access_token",
            legacy_messages=False,
        ),
        metrics=Metrics(),
    )
    gate.wrap(Chat, path="/chat", subprotocols=None)
    gate.wrap(Chat, path="/raw", protocol=None)
    with LiveServer(Starlette(routes=discovery_routes(gate))) as live:
        document = (await get(live, "/ws/config")).json()
    assert document["endpoints"][0]["accepts"] == ["json"]
    assert document["endpoints"][0]["subprotocols"] is None
    assert document["endpoints"][1]["format"] is None
    assert document["endpoints"][1]["accepts"] is None
    assert document["auth"]["methods"] == ["header", "subprotocol", "query"]
    assert document["auth"]["query_param"] == "access_token"
    assert document["limits"]["rate_limit"] is None
    assert document["limits"]["max_connections_per_user"] is None
    assert document["heartbeat"]["interval"] is None


async def test_both_configs_are_cacheable(server: LiveServer, tokens: TokenFactory) -> None:
    bearer = {"Authorization": f"Bearer {tokens.valid('operator')}"}
    for path, headers in [("/ws/config", {}), ("/ws/secure/config", bearer)]:
        first = await get(server, path, **headers)
        etag = first.headers["etag"]
        assert etag.startswith('"')
        assert etag.endswith('"')
        for condition in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
            again = await get(server, path, **headers, **{"If-None-Match": condition})
            assert again.status_code == 304, condition
            assert again.content == b""
            assert again.headers["etag"] == etag
        changed = await get(server, path, **headers, **{"If-None-Match": '"other"'})
        assert changed.status_code == 200
        assert changed.content == first.content
    assert (await get(server, "/ws/config")).headers["cache-control"] == "public, max-age=60"
    secure = await get(server, "/ws/secure/config", **bearer)
    assert secure.headers["cache-control"] == "private, no-cache"
    assert "Authorization" in secure.headers["vary"]
    # Without a token, the ETag does not tell whether anything changed.
    unauthenticated = await get(
        server, "/ws/secure/config", **{"If-None-Match": secure.headers["etag"]}
    )
    assert unauthenticated.status_code == 401


async def test_the_etag_follows_the_gate() -> None:
    gate = Gate(config(), metrics=Metrics())
    gate.wrap(Chat, path="/ws")
    with LiveServer(Starlette(routes=discovery_routes(gate))) as live:
        before = await get(live, "/ws/config")
        gate.wrap(Chat, path="/ws/late")
        after = await get(live, "/ws/config", **{"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert [endpoint["path"] for endpoint in after.json()["endpoints"]] == ["/ws", "/ws/late"]


@pytest.mark.parametrize("path", ["/ws/config", "/ws/secure/config"])
@pytest.mark.parametrize(
    "origin", [ORIGIN, "https://admin.example.com:8443", "https://pr.preview.example.com"]
)
async def test_browsers_of_the_allowed_origins_may_read_the_configs(
    server: LiveServer, path: str, origin: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        preflight = await http.options(
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        simple = await http.get(path, headers={"Origin": origin})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert simple.headers["access-control-allow-origin"] == origin
    assert simple.headers["access-control-expose-headers"] == "ETag"


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "https://app.example.com.evil.io", "http://app.example.com"]
)
async def test_other_origins_get_no_cors_grant(server: LiveServer, origin: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        preflight = await http.options(
            "/ws/config", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        simple = await http.get("/ws/config", headers={"Origin": origin})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_only_get_is_served(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.post("/ws/config")).status_code == 405
        assert (await http.delete("/ws/secure/health")).status_code == 405
        assert (await http.head("/ws/config")).status_code == 200
        plain = await http.options("/ws/config")
    assert plain.status_code == 204
    assert plain.headers["allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "auth_required"),
        ("garbage", "invalid_token"),
        ("expired", "token_expired"),
        ("wrong_signature", "invalid_token"),
    ],
)
async def test_the_secure_config_wants_a_valid_bearer_token(
    server: LiveServer, tokens: TokenFactory, token: str | None, reason: str
) -> None:
    headers = {}
    if token is not None:
        value = "not.a.jwt" if token == "garbage" else getattr(tokens, token)("operator")
        headers["Authorization"] = f"Bearer {value}"
    response = await get(server, "/ws/secure/config", **headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer error="{reason}"'
    assert response.json()["error"] == reason
    assert response.json()["message"]


async def test_the_secure_config_shows_settings_and_never_secrets() -> None:
    secrets = ["gate-password", "intro-secret", "api-key-123"]
    verifier = RemoteVerifier(
        "https://gate:intro-secret@auth.example.com:8443/introspect?key=api-key-123"
    )
    gate = Gate(
        config(
            jwt_secret=None,
            auth_url="https://gate:intro-secret@auth.example.com:8443/introspect?key=api-key-123",
            storage="redis://:gate-password@127.0.0.1:1/0",  # nothing listens there
            secure_config_requires_auth=False,
        ),
        verifier=verifier,
        metrics=Metrics(),
    )
    with LiveServer(serve(gate)) as live:
        response = await get(live, "/ws/secure/config")
        health = await get(live, "/ws/secure/health")
    await verifier.aclose()
    assert response.status_code == 200
    document = response.json()
    for secret in secrets:
        assert secret not in response.text
        assert secret not in health.text
    assert document["environment"] == "production"
    assert document["auth"]["verifier"] == "remote"
    assert document["auth"]["auth_service"] == "https://auth.example.com:8443"
    assert document["auth"]["required_claims"] == ["active", "sub"]
    assert document["storage"] == {
        "kind": "redis",
        "backend_policy": "fail_open",
        "registry_ttl": 30.0,
    }
    assert document["dev_bypass"] is False
    assert document["secure_config_requires_auth"] is False


async def test_the_secure_config_of_a_jwt_gate(server: LiveServer, tokens: TokenFactory) -> None:
    response = await get(
        server, "/ws/secure/config", Authorization=f"Bearer {tokens.valid('operator')}"
    )
    assert response.status_code == 200
    document = response.json()
    assert SECRET not in response.text
    assert document["auth"] == {
        "verifier": "jwt",
        "algorithms": ["HS256"],
        "required_claims": ["sub", "exp"],
        "audience": None,
        "issuer": None,
        "leeway": 10.0,
        "auth_service": None,
        "sources": ["header", "subprotocol"],
        "reject_before_accept": False,
    }
    assert document["origins"] == {
        "count": 2,
        "patterns": [r"https://[a-z]+\.preview\.example\.com"],
        "allow_any": False,
        "allow_missing": True,
    }
    assert document["limits"]["max_connections_per_user"] == 2
    assert document["endpoints"] == [
        {"path": "/ws", "dev_bypass": False},
        {"path": "/ws/mcp", "dev_bypass": False},
    ]
    assert document["metrics"] == {"kind": "memory", "path": None}


async def test_the_dev_bypass_is_shown_per_endpoint() -> None:
    gate = Gate(
        config(
            environment=Environment.DEVELOPMENT,
            jwt_audience="chat",
            jwt_issuer="https://id.example.com",
            allowed_origins=("*",),
            allowed_origin_regex=None,
        ),
        metrics=Metrics(),
    )
    gate.wrap(Chat, path="/ws", dev_bypass=True)
    gate.wrap(Chat, path="/ws/secure")
    with LiveServer(Starlette(routes=discovery_routes(gate))) as live:
        tokens = TokenFactory(SECRET, audience="chat", issuer="https://id.example.com")
        bearer = f"Bearer {tokens.valid('operator')}"
        document = (await get(live, "/ws/secure/config", Authorization=bearer)).json()
        public = (await get(live, "/ws/config")).json()
        async with httpx.AsyncClient(base_url=live.url) as http:
            anywhere = await http.get("/ws/config", headers={"Origin": "https://any.example"})
    assert document["environment"] == "development"
    assert document["dev_bypass"] is True
    assert document["endpoints"] == [
        {"path": "/ws", "dev_bypass": True},
        {"path": "/ws/secure", "dev_bypass": False},
    ]
    assert document["auth"]["required_claims"] == ["sub", "exp", "aud", "iss"]
    assert document["auth"]["audience"] == "chat"
    assert document["origins"]["allow_any"] is True
    assert [endpoint["auth_required"] for endpoint in public["endpoints"]] == [False, True]
    assert anywhere.headers["access-control-allow-origin"] == "*"


async def test_a_development_gate_without_keys_cannot_open_the_secure_config() -> None:
    gate = Gate(GateConfig(environment=Environment.DEVELOPMENT, dev_bypass=True))
    gate.wrap(Chat, path="/ws")
    with LiveServer(Starlette(routes=discovery_routes(gate))) as live:
        response = await get(live, "/ws/secure/config", Authorization="Bearer anything")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_health_reports_ok_with_the_open_connections(
    server: LiveServer, tokens: TokenFactory
) -> None:
    async with WSClient(server.ws("/ws"), token=tokens.valid("health-user")) as ws:
        await ws.send_json({"type": "hi"})
        await ws.expect("echo")
        response = await get(server, "/ws/secure/health")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    health = response.json()
    assert health["status"] == "ok"
    assert health["connections"] >= 1
    assert health["uptime"] > 0
    assert health["backend"]["kind"] == "memory"
    assert health["backend"]["status"] == "ok"
    assert health["auth"] == {"kind": "jwt", "status": "ok"}
    summary = health["metrics"]
    assert summary["connections_opened"] >= 1
    assert summary["messages_received"] >= 1
    assert "endpoints" not in summary


@pytest.mark.parametrize(
    ("backend", "policy", "status", "code"),
    [
        ({"kind": "redis", "status": "ok", "latency_ms": 0.4}, "fail_open", "ok", 200),
        ({"kind": "redis", "status": "down", "error": "timeout"}, "fail_open", "degraded", 200),
        ({"kind": "redis", "status": "down", "error": "timeout"}, "fail_closed", "down", 503),
        (ConnectionError("refused"), "fail_open", "degraded", 200),
        (ConnectionError("refused"), "fail_closed", "down", 503),
    ],
)
async def test_health_follows_the_backend(
    backend: dict[str, Any] | Exception, policy: str, status: str, code: int
) -> None:
    gate = Health(config(backend_policy=policy), metrics=Metrics())
    gate.reported = backend
    with LiveServer(serve(gate)) as live:
        response = await get(live, "/ws/secure/health")
    assert response.status_code == code
    health = response.json()
    assert health["status"] == status
    if isinstance(backend, dict):
        assert health["backend"] == backend
    else:
        assert health["backend"]["error"] == "ConnectionError"


async def test_health_is_degraded_while_the_auth_service_fails() -> None:
    with socket.socket() as unused:  # nothing listens there: the service is down
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    verifier = RemoteVerifier(f"http://127.0.0.1:{port}/introspect", failure_threshold=1)
    gate = Gate(config(jwt_secret=None), verifier=verifier, metrics=Metrics())
    with LiveServer(serve(gate)) as live:
        assert (await get(live, "/ws/secure/health")).json()["status"] == "ok"
        async with WSClient(live.ws("/ws"), token="token-of-alice") as ws:
            assert await ws.wait_closed() == (1013, "auth_unavailable")
        response = await get(live, "/ws/secure/health")
    await verifier.aclose()
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["auth"] == {"kind": "remote", "status": "down"}
    assert response.json()["metrics"]["auth_failures"] == 1


async def test_the_paths_can_be_moved() -> None:
    gate = Gate(config(), metrics=Metrics())
    routes = discovery_routes(
        gate, config_path="/api/ws", secure_config_path="/api/ws/security", health_path="/healthz"
    )
    with LiveServer(Starlette(routes=routes)) as live:
        assert (await get(live, "/api/ws")).status_code == 200
        assert (await get(live, "/api/ws/security")).status_code == 401
        assert (await get(live, "/healthz")).status_code == 200
