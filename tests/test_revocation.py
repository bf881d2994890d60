"""Revoking users and tokens on the memory backend, over real sockets: open connections close
with 4003 revoked, new handshakes are refused until the revocation ends, and nobody else is
touched. The revocation is made by the worker itself, from an HTTP route of the app."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from wsgate import ConfigurationError, Environment, Gate, GateConfig, revoke
from wsgate.__main__ import main
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "revocation-tests-secret-0123456789abcdef-0123"
TOKENS = TokenFactory(SECRET)
REVOKED = (4003, "revoked")


def gated(**settings: object) -> tuple[Gate, Starlette]:
    options: dict[str, Any] = {
        "environment": Environment.DEVELOPMENT,
        "jwt_secret": SECRET,
        "allow_missing_origin": True,
        "rate_limit": None,
        "max_connections_per_user": None,
        "heartbeat_interval": None,
        "metrics_path": None,
    }
    gate = Gate(GateConfig(**{**options, **settings}))

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    async def revoke_route(request: Request) -> PlainTextResponse:
        jti = request.query_params.get("jti")
        seconds = float(request.query_params["for"])
        done = await gate.revoke(request.query_params["user"], jti=jti, for_seconds=seconds)
        return PlainTextResponse(str(done))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gate.aclose()

    routes = [gate.route("/ws", echo, protocol=None), Route("/revoke", revoke_route)]
    return gate, Starlette(routes=routes, lifespan=lifespan)


async def admin(server: LiveServer, **params: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        response = await http.get("/revoke", params=params)
    response.raise_for_status()
    return response.text


async def opened(server: LiveServer, token: str) -> WSClient:
    client = WSClient(server.ws("/ws"), token=token)
    await client.connect()
    return client


async def echoes(client: WSClient) -> bool:
    await client.send_text("still here")
    return await client.receive() == "still here"


async def refused(server: LiveServer, token: str) -> tuple[int | None, str]:
    """Connect with ``token`` and return the close the gate answers with at once."""
    client = await opened(server, token)
    return await client.wait_closed(timeout=2)


async def until(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {within} s")
        await anyio.sleep(0.05)


async def test_revoking_a_user_closes_its_connections_and_refuses_it_until_the_end() -> None:
    gate, app = gated()
    with LiveServer(app) as server:
        alice = [await opened(server, TOKENS.valid("alice")) for _ in range(2)]
        bob = await opened(server, TOKENS.valid("bob"))
        said = await admin(server, user="alice", **{"for": "1.5"})
        assert said.startswith("revoked alice until ")
        assert said.endswith("on memory; closed 2 connection(s)")
        with anyio.fail_after(1):
            for client in alice:
                assert await client.wait_closed(timeout=1) == REVOKED
        assert await echoes(bob)
        assert await refused(server, TOKENS.valid("alice")) == REVOKED
        assert gate.stats()["connections_refused"].get("revoked") == 1

        async def admitted() -> bool:
            client = await opened(server, TOKENS.valid("alice"))
            try:
                answered = await echoes(client)
            except ConnectionClosed:
                return False
            await client.close()
            return answered

        await until(admitted)
        assert await echoes(bob)
        await bob.close()

        async def untracked() -> bool:
            return gate.backend.revocations.tracked == 0

        await until(untracked)


async def test_revoking_a_token_closes_and_refuses_that_token_only() -> None:
    _, app = gated()
    with LiveServer(app) as server:
        leaked, other = TOKENS.valid("carol", jti="leaked-1"), TOKENS.valid("carol", jti="ok-2")
        first, second = await opened(server, leaked), await opened(server, other)
        said = await admin(server, user="carol", jti="leaked-1", **{"for": "60"})
        assert said.startswith("revoked token leaked-1 of carol until ")
        assert await first.wait_closed(timeout=1) == REVOKED
        assert await echoes(second)
        assert await refused(server, leaked) == REVOKED
        third = await opened(server, other)
        assert await echoes(third)


async def test_reject_before_accept_refuses_with_403() -> None:
    _, app = gated(reject_before_accept=True)
    with LiveServer(app) as server:
        await admin(server, user="dave", **{"for": "60"})
        with pytest.raises(HandshakeRejected) as info:
            await opened(server, TOKENS.valid("dave"))
        assert info.value.status == 403
        assert info.value.json() == {"error": "revoked"}


async def test_the_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        await revoke("memory://", "erin", for_seconds=1, until=_now())
    with pytest.raises(ValueError, match="timezone-aware"):
        await revoke("memory://", "erin", until=_now().replace(tzinfo=None))
    with pytest.raises(ConfigurationError, match="for_seconds must be a positive"):
        await revoke("memory://", "erin", for_seconds=0)
    with pytest.raises(ValueError, match="user must be"):
        await revoke("memory://", "")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_the_command_line_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["revoke", "frank", "--storage", "memory://", "--for", "30"]) == 0
    assert capsys.readouterr().out.startswith("revoked frank until ")
    with pytest.raises(SystemExit) as usage:
        main(["revoke", "frank", "--storage", "memory://", "--until", "tomorrow"])
    assert usage.value.code == 2
    # A Redis nobody listens on: nothing was revoked.
    assert main(["revoke", "frank", "--storage", "redis://127.0.0.1:1/0"]) == 1
    assert "nothing was revoked" in capsys.readouterr().err
