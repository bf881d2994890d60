"""Keys that rotate, as clients see them: a real gate, a real JWKS endpoint, real sockets.

A gate follows its identity provider's JWKS URL with no restart: open connections stay open
and refresh in band with tokens under the new key, new connections get in with them, and the
answers while the endpoint is down, slow or hostile are close codes a client can act on.
HMAC secrets rotate by listing several, the newest first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute, websocket_session
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.auth.idp import JWKS_PATH, IdP
from wsgate import Gate, GateConfig, JWTVerifier, RemoteJWKS, gate_user
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

NEW_SECRET = "the-new-secret-of-at-least-thirty-two-bytes"
OLD_SECRET = "the-old-secret-of-at-least-thirty-two-bytes"


@websocket_session
async def whoami(websocket: WebSocket) -> None:
    """Say who the gate let in, then echo each message."""
    await websocket.accept()
    await websocket.send_json({"type": "hello", "user": gate_user(websocket).identity})
    try:
        while True:
            message = await websocket.receive_json()
            await websocket.send_json({"type": "echo", "payload": message})
    except WebSocketDisconnect:
        pass


def serve(gate: Gate) -> LiveServer:
    return LiveServer(Starlette(routes=[WebSocketRoute("/ws", gate.wrap(whoami))]))


def jwks_gate(url: str, **options: Any) -> Gate:
    """A production gate on the JWKS at ``url``, with RemoteJWKS ``options``."""
    verifier = JWTVerifier(algorithms=["RS256"], jwks=RemoteJWKS(url, **options))
    config = GateConfig(jwt_algorithms=["RS256"], allow_missing_origin=True, rate_limit=None)
    return Gate(config, verifier=verifier)


@pytest.fixture(scope="module")
def idp_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(65537, 2048) for kid in ("k1", "k2", "evil")}


@pytest.fixture
def idp(idp_keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[IdP]:
    idp = IdP(idp_keys)
    idp.publish("k1")
    yield idp
    idp.release.set()


@pytest.fixture
def idp_url(idp: IdP) -> Iterator[str]:
    with LiveServer(idp.app) as server:
        yield server.url + JWKS_PATH


async def clock_passes(moment: float) -> None:
    """Wait, at most 5 s, for time.monotonic() to reach ``moment``: an interval to pass."""
    with anyio.fail_after(5):
        while time.monotonic() < moment:  # noqa: ASYNC110 - only the clock ends the interval
            await anyio.sleep(0.01)


async def refresh(ws: WSClient, token: str) -> Any:
    await ws.send_json({"type": "auth", "token": token, "id": 1})
    return await ws.receive_json()


# JWKS URL


async def test_rotation_while_connections_stay_open(idp: IdP, idp_url: str) -> None:
    gate = jwks_gate(idp_url, refetch_interval=0.5)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1", "alice")) as alice:
            assert await alice.receive_json() == {"type": "hello", "user": "alice"}
            fetched = time.monotonic()
            assert idp.requests == 1

            idp.publish("k1", "k2")  # the provider rotates: k2 signs from now on
            # Within refetch_interval of the last fetch the gate does not look again.
            async with WSClient(server.ws("/ws"), token=idp.token("k2", "bob")) as early:
                assert await early.wait_closed() == (1008, "invalid_token")
            await clock_passes(fetched + 0.5)
            async with WSClient(server.ws("/ws"), token=idp.token("k2", "bob")) as bob:
                assert await bob.receive_json() == {"type": "hello", "user": "bob"}
            assert idp.requests == 2

            # The connection opened under k1 refreshes in band with a token under k2.
            answer = await refresh(alice, idp.token("k2", "alice"))
            assert answer["type"] == "auth"
            assert answer["id"] == 1
            await alice.send_json({"type": "still-there"})
            assert (await alice.expect("echo"))["payload"] == {"type": "still-there"}
            assert alice.state == "open"
        assert idp.requests == 2
        await gate.aclose()


async def test_made_up_kids_are_refused_after_one_fetch(idp: IdP, idp_url: str) -> None:
    gate = jwks_gate(idp_url)  # refetch_interval 10 s
    with serve(gate) as server:

        async def attempt(n: int) -> tuple[int | None, str]:
            token = idp.token(f"made-up-{n}", signed_by="evil")
            async with WSClient(server.ws("/ws"), token=token) as ws:
                return await ws.wait_closed()

        closes = await asyncio.gather(*(attempt(n) for n in range(20)))
        assert set(closes) == {(1008, "invalid_token")}
        closes = await asyncio.gather(*(attempt(n) for n in range(20, 40)))
        assert set(closes) == {(1008, "invalid_token")}
        assert idp.requests == 1
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert (await ws.receive_json())["user"] == "user-1"
        assert idp.requests == 1
        await gate.aclose()


async def test_the_gate_starts_while_the_endpoint_is_down_and_recovers(idp: IdP) -> None:
    with LiveServer(idp.app) as stopped:
        port = stopped.port
    gate = jwks_gate(f"http://127.0.0.1:{port}{JWKS_PATH}", refetch_interval=0.5)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert await ws.wait_closed() == (1013, "auth_unavailable")
        failed = time.monotonic()
        with LiveServer(idp.app, port=port):
            await clock_passes(failed + 0.5)
            async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
                assert (await ws.receive_json())["user"] == "user-1"
        await gate.aclose()


async def test_a_slow_endpoint_is_answered_1013_within_wait_timeout(idp: IdP, idp_url: str) -> None:
    gate = jwks_gate(idp_url, wait_timeout=0.5, refetch_interval=0)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1", "alice")) as alice:
            assert (await alice.receive_json())["user"] == "alice"

            idp.publish("k1", "k2")
            idp.mode = "slow"
            started = time.monotonic()
            async with WSClient(server.ws("/ws"), token=idp.token("k2")) as ws:
                assert await ws.wait_closed() == (1013, "auth_unavailable")
            assert time.monotonic() - started < 0.5 + 1.5

            # A refresh that cannot be checked in time leaves the connection as it was.
            answer = await refresh(alice, idp.token("k2", "alice"))
            assert answer["type"] == "error"
            assert answer["error"]["code"] == "auth_unavailable"
            assert alice.state == "open"
            idp.release.set()
        await gate.aclose()


async def test_a_hostile_endpoint_is_answered_1013_and_the_gate_serves_on(
    idp: IdP, idp_url: str
) -> None:
    idp.mode = "huge_streamed"
    gate = jwks_gate(idp_url, refetch_interval=0)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert await ws.wait_closed() == (1013, "auth_unavailable")
        idp.mode = "good"
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert (await ws.receive_json())["user"] == "user-1"
        await gate.aclose()


async def test_a_gate_from_the_environment_follows_the_jwks_url(idp: IdP, idp_url: str) -> None:
    env = {
        "WSGATE_JWT_JWKS_URL": idp_url,
        "WSGATE_JWT_ALGORITHMS": "RS256",
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
    }
    gate = Gate(GateConfig.from_env(env))
    assert idp.requests == 0  # nothing is fetched at start-up
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert (await ws.receive_json())["user"] == "user-1"
        await gate.aclose()


# HMAC secrets


async def test_several_secrets_rotate_with_no_lost_tokens() -> None:
    old, new = TokenFactory(OLD_SECRET), TokenFactory(NEW_SECRET)
    env = {"WSGATE_JWT_SECRETS": f"{NEW_SECRET},{OLD_SECRET}", "WSGATE_ALLOW_MISSING_ORIGIN": "1"}
    gate = Gate(GateConfig.from_env(env))
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=old.valid("alice")) as alice:
            assert (await alice.receive_json())["user"] == "alice"
            answer = await refresh(alice, new.valid("alice"))
            assert answer["type"] == "auth"
        async with WSClient(server.ws("/ws"), token=new.valid("bob")) as bob:
            assert (await bob.receive_json())["user"] == "bob"
        other = TokenFactory("a-third-secret-nobody-listed-000000000")
        async with WSClient(server.ws("/ws"), token=other.valid("eve")) as eve:
            assert await eve.wait_closed() == (1008, "invalid_token")
