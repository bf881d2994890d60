"""AuthMiddleware over real sockets: every row of the close-code table, and every way in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.routing import WebSocketRoute, websocket_session
from starlette.websockets import WebSocket

from wsgate import (
    AuthMiddleware,
    ConfigurationError,
    Identity,
    JWTVerifier,
    RemoteVerifier,
)
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "auth-middleware-tests-secret-0123456789abcdef"
TOKENS = TokenFactory(SECRET)
VERIFIER = JWTVerifier(algorithms=["HS256"], secret=SECRET)

calls: list[str] = []
"""The path of every connection the app ran for."""


@websocket_session
async def whoami(websocket: WebSocket) -> None:
    calls.append(websocket.url.path)
    await websocket.accept()  # without choosing: the middleware fills in the subprotocol
    await websocket.send_json(
        {
            "user": websocket.user.identity,
            "dev": websocket.user.is_dev,
            "scopes": websocket.auth.scopes,
            "subprotocols": websocket.scope["subprotocols"],
        }
    )
    await websocket.receive()  # until the client leaves


@websocket_session
@requires("chat:write")
async def writers_only(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"user": websocket.user.identity})
    await websocket.receive()


class Broken:
    """A verifier with a bug: it raises what no verifier may raise."""

    async def verify(self, token: str) -> Identity:
        raise RuntimeError("cannot reach db at postgres://admin:hunter2@db")


def guarded(**options: Any) -> AuthMiddleware:
    settings: dict[str, Any] = {"verifier": VERIFIER}
    settings.update(options)
    return AuthMiddleware(whoami, **settings)


@pytest.fixture(scope="module")
def closed_port_url() -> str:
    with LiveServer(whoami) as stopped:
        pass
    return f"{stopped.url}/introspect"


@pytest.fixture(scope="module")
def server(closed_port_url: str) -> Iterator[LiveServer]:
    down = RemoteVerifier(closed_port_url, connect_timeout=1.0, read_timeout=1.0)
    routes = [
        WebSocketRoute("/ws", guarded()),
        WebSocketRoute("/ws/{user_id}", guarded()),
        WebSocketRoute("/numeric/{user_id:int}", guarded()),
        WebSocketRoute("/mcp", guarded(subprotocols=["mcp"])),
        WebSocketRoute("/down", guarded(verifier=down)),
        WebSocketRoute("/broken", guarded(verifier=Broken())),
        WebSocketRoute("/dev", guarded(environment="development", dev_bypass=True)),
        WebSocketRoute("/query", guarded(query_param="access_token")),
        WebSocketRoute("/strict", guarded(reject_before_accept=True)),
        WebSocketRoute("/strict/{user_id}", guarded(reject_before_accept=True)),
        WebSocketRoute("/strict-down", guarded(verifier=down, reject_before_accept=True)),
        WebSocketRoute("/writers", AuthMiddleware(writers_only, verifier=VERIFIER)),
    ]
    with LiveServer(Starlette(routes=routes)) as live:
        yield live
    anyio.run(down.aclose)


@pytest.fixture(autouse=True)
def app_calls() -> list[str]:
    calls.clear()
    return calls


async def refused_with(url: str, **client: Any) -> tuple[int | None, str | None]:
    """Connect, expect the server to close at once, and return the close code and reason."""
    async with WSClient(url, **client) as ws:
        closed = await ws.wait_closed(timeout=5)
        assert not [frame for frame in ws.history if frame.direction == "received"]
    return closed


async def rejected_with(url: str, **client: Any) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as caught:
        async with WSClient(url, **client):
            pass
    return caught.value


# The close-code table, after accept


async def test_no_token(server: LiveServer, app_calls: list[str]) -> None:
    assert await refused_with(server.ws("/ws")) == (1008, "auth_required")
    assert app_calls == []


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        TOKENS.wrong_signature(),
        TOKENS.alg_none(),
        TOKENS.not_yet_valid(),
        TOKENS.issued_in_future(),
        TOKENS.wrong_audience(),
    ],
    ids=["garbage", "wrong-signature", "alg-none", "nbf", "iat", "aud"],
)
@pytest.mark.parametrize("token_via", ["header", "subprotocol"])
async def test_bad_token(
    server: LiveServer, app_calls: list[str], token: str, token_via: str
) -> None:
    closed = await refused_with(
        server.ws("/ws"), token=token, token_via=token_via, subprotocols=["chat"]
    )
    assert closed == (1008, "invalid_token")
    assert app_calls == []


async def test_expired_token(server: LiveServer, app_calls: list[str]) -> None:
    assert await refused_with(server.ws("/ws"), token=TOKENS.expired()) == (1008, "token_expired")
    assert app_calls == []


async def test_forged_expired_token_is_invalid_not_expired(server: LiveServer) -> None:
    forged = TokenFactory(algorithm="HS256").expired()  # another random secret
    assert await refused_with(server.ws("/ws"), token=forged) == (1008, "invalid_token")


async def test_user_in_the_path_must_be_the_subject(
    server: LiveServer, app_calls: list[str]
) -> None:
    token = TOKENS.valid("user-1")
    assert await refused_with(server.ws("/ws/user-2"), token=token) == (1008, "user_mismatch")
    assert app_calls == []
    async with WSClient(server.ws("/ws/user-1"), token=token) as ws:
        assert (await ws.receive_json())["user"] == "user-1"
    assert app_calls == ["/ws/user-1"]


async def test_user_in_a_converted_path_parameter(server: LiveServer) -> None:
    async with WSClient(server.ws("/numeric/42"), token=TOKENS.valid("42")) as ws:
        assert (await ws.receive_json(timeout=2))["user"] == "42"


async def test_auth_service_down(server: LiveServer, app_calls: list[str]) -> None:
    with anyio.fail_after(5):
        closed = await refused_with(server.ws("/down"), token=TOKENS.valid())
    assert closed == (1013, "auth_unavailable")
    assert app_calls == []


async def test_verifier_bug_is_auth_unavailable_without_details(
    server: LiveServer, app_calls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="wsgate.auth"):
        closed = await refused_with(server.ws("/broken"), token=TOKENS.valid())
    assert closed == (1013, "auth_unavailable")
    assert app_calls == []
    # The details go to the server log, never to the client.
    assert "hunter2" in caplog.text
    assert "RuntimeError" in caplog.text


# Subprotocols


async def test_subprotocol_token_alone_is_refused_before_accept(
    server: LiveServer, app_calls: list[str]
) -> None:
    rejected = await rejected_with(server.ws("/ws"), token=TOKENS.valid(), token_via="subprotocol")
    assert rejected.status == 400
    assert rejected.json() == {"error": "subprotocol_required"}
    assert app_calls == []


async def test_subprotocol_token_with_no_supported_subprotocol(
    server: LiveServer, app_calls: list[str]
) -> None:
    rejected = await rejected_with(
        server.ws("/mcp"), token=TOKENS.valid(), token_via="subprotocol", subprotocols=["chat"]
    )
    assert rejected.status == 400
    assert rejected.json() == {"error": "subprotocol_required"}
    assert app_calls == []


async def test_header_token(server: LiveServer, app_calls: list[str]) -> None:
    token = TOKENS.valid("user-1", scopes=["read", "write"])
    async with WSClient(server.ws("/ws"), token=token) as ws:
        assert await ws.receive_json() == {
            "user": "user-1",
            "dev": False,
            "scopes": ["read", "write"],
            "subprotocols": [],
        }
        assert ws.subprotocol is None
    assert app_calls == ["/ws"]


async def test_subprotocol_token_next_to_an_app_subprotocol(server: LiveServer) -> None:
    client = WSClient(
        server.ws("/ws"), subprotocols=["chat"], token=TOKENS.valid(), token_via="subprotocol"
    )
    async with client as ws:
        assert ws.subprotocol == "chat"
        message = await ws.receive_json()
    assert message["user"] == "user-1"
    assert message["subprotocols"] == ["chat"]


async def test_endpoint_subprotocol_is_chosen_even_when_offered_second(
    server: LiveServer,
) -> None:
    client = WSClient(
        server.ws("/mcp"),
        subprotocols=["chat", "mcp"],
        token=TOKENS.valid(),
        token_via="subprotocol",
    )
    async with client as ws:
        assert ws.subprotocol == "mcp"
        assert (await ws.receive_json())["subprotocols"] == ["chat", "mcp"]


async def test_k8s_style_entry_is_not_a_default_prefix_token(server: LiveServer) -> None:
    entry = TokenFactory.subprotocol(TOKENS.valid(), "base64url.bearer.authorization.k8s.io.")
    closed = await refused_with(server.ws("/ws"), subprotocols=["chat", entry])
    assert closed == (1008, "invalid_token")


async def test_header_and_subprotocol_with_different_tokens(
    server: LiveServer, app_calls: list[str]
) -> None:
    client = WSClient(
        server.ws("/ws"),
        headers={"Authorization": f"Bearer {TOKENS.valid('user-1')}"},
        subprotocols=["chat", TokenFactory.subprotocol(TOKENS.valid("user-2"))],
    )
    async with client as ws:
        assert ws.subprotocol == "chat"  # the refusal echoes the app's, never the token
        assert await ws.wait_closed(timeout=5) == (1008, "invalid_token")
    assert app_calls == []


async def test_header_and_subprotocol_with_the_same_token(server: LiveServer) -> None:
    token = TOKENS.valid()
    client = WSClient(
        server.ws("/ws"),
        headers={"Authorization": f"Bearer {token}"},
        subprotocols=["chat", TokenFactory.subprotocol(token)],
    )
    async with client as ws:
        assert ws.subprotocol == "chat"
        assert (await ws.receive_json())["user"] == "user-1"


# Query parameter


async def test_query_token_only_when_enabled(server: LiveServer, app_calls: list[str]) -> None:
    query = f"?access_token={TOKENS.valid()}"
    assert await refused_with(server.ws("/ws" + query)) == (1008, "auth_required")
    async with WSClient(server.ws("/query" + query)) as ws:
        assert (await ws.receive_json())["user"] == "user-1"
    assert app_calls == ["/query"]


async def test_hostile_query_names_do_not_break_the_handshake(server: LiveServer) -> None:
    async with WSClient(server.ws("/query?%FF=1&%E2%82%AC=2"), token=TOKENS.valid()) as ws:
        assert (await ws.receive_json())["user"] == "user-1"


# Refusing before accept


@pytest.mark.parametrize(
    ("path", "token", "status", "reason"),
    [
        ("/strict", None, 401, "auth_required"),
        ("/strict", "garbage", 401, "invalid_token"),
        ("/strict", TOKENS.expired(), 401, "token_expired"),
        ("/strict/user-2", TOKENS.valid("user-1"), 403, "user_mismatch"),
        ("/strict-down", TOKENS.valid(), 503, "auth_unavailable"),
    ],
)
async def test_reject_before_accept(
    server: LiveServer,
    app_calls: list[str],
    path: str,
    token: str | None,
    status: int,
    reason: str,
) -> None:
    rejected = await rejected_with(server.ws(path), token=token)
    assert rejected.status == status
    assert rejected.json() == {"error": reason}
    assert rejected.headers["content-type"] == "application/json"
    if status == 401:
        assert rejected.headers["www-authenticate"] == f'Bearer error="{reason}"'
    else:
        assert "www-authenticate" not in rejected.headers
    assert app_calls == []


async def test_reject_before_accept_lets_good_tokens_in(server: LiveServer) -> None:
    async with WSClient(server.ws("/strict/user-1"), token=TOKENS.valid("user-1")) as ws:
        assert (await ws.receive_json())["user"] == "user-1"


# Development bypass


async def test_dev_bypass_without_a_token(server: LiveServer) -> None:
    async with WSClient(server.ws("/dev")) as ws:
        assert await ws.receive_json() == {
            "user": "dev-user",
            "dev": True,
            "scopes": [],
            "subprotocols": [],
        }


async def test_dev_bypass_still_checks_offered_tokens(server: LiveServer) -> None:
    async with WSClient(server.ws("/dev"), token=TOKENS.valid("user-7")) as ws:
        message = await ws.receive_json()
    assert (message["user"], message["dev"]) == ("user-7", False)
    assert await refused_with(server.ws("/dev"), token="garbage") == (1008, "invalid_token")
    assert await refused_with(server.ws("/dev"), token=TOKENS.expired()) == (
        1008,
        "token_expired",
    )


@pytest.mark.parametrize(
    ("hint", "reason"),
    [
        ({"headers": {"X-Dev-Mode": "1", "X-Dev-Bypass": "true"}}, "auth_required"),
        ({"headers": {"X-Forwarded-User": "admin", "X-Remote-User": "admin"}}, "auth_required"),
        ({"headers": {"Cookie": "dev=1; user=admin"}}, "auth_required"),
        ({"headers": {"Authorization": "Basic YWRtaW46YWRtaW4="}}, "auth_required"),
        ({"path": "?dev=1&dev_bypass=true&environment=development&user=admin"}, "auth_required"),
        ({"headers": {"Authorization": "Bearer "}}, "invalid_token"),
    ],
    ids=["dev-headers", "user-headers", "cookie", "basic-auth", "query", "empty-bearer"],
)
async def test_production_ignores_bypass_hints(
    server: LiveServer, app_calls: list[str], hint: dict[str, Any], reason: str
) -> None:
    url = server.ws("/ws" + hint.get("path", ""))
    assert await refused_with(url, headers=hint.get("headers")) == (1008, reason)
    assert app_calls == []


# Configuration


def test_dev_bypass_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError, match="refused in production"):
        AuthMiddleware(whoami, verifier=VERIFIER, dev_bypass=True)
    with pytest.raises(ConfigurationError, match="refused in production"):
        AuthMiddleware(whoami, verifier=VERIFIER, dev_bypass=True, environment="PRODUCTION")


def test_production_needs_a_verifier() -> None:
    with pytest.raises(ConfigurationError, match="needs verifier="):
        AuthMiddleware(whoami)
    # Development with only the bypass is allowed.
    assert AuthMiddleware(whoami, environment="development", dev_bypass=True).dev_bypass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"verifier": object()}, "verifier must have an async verify"),
        ({"verifier": "secret"}, "verifier must have an async verify"),
        ({"subprotocols": "mcp"}, r"write \['mcp'\]"),
        ({"dev_user": ""}, "dev_user must be a non-empty subject"),
        ({"environment": "prod"}, "environment must be 'development' or 'production'"),
        ({"subprotocol_prefixes": ["bad prefix"]}, "cannot appear in Sec-WebSocket-Protocol"),
        ({"query_param": ""}, "query_param"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"verifier": VERIFIER}
    settings.update(options)
    with pytest.raises(ConfigurationError, match=message):
        AuthMiddleware(whoami, **settings)


async def test_starlettes_requires_reads_the_token_scopes(server: LiveServer) -> None:
    token = TOKENS.valid("writer", scopes=["chat:read", "chat:write"])
    async with WSClient(server.ws("/writers"), token=token) as ws:
        assert await ws.receive_json() == {"user": "writer"}
    # Authenticated, but without the scope: Starlette's own decorator refuses (HTTP 403).
    with pytest.raises(HandshakeRejected) as refused:
        await WSClient(
            server.ws("/writers"), token=TOKENS.valid("reader", scopes=["chat:read"])
        ).connect()
    assert refused.value.status == 403
