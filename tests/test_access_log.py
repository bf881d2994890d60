"""The access log: one structured line per refused and per closed connection, and no token in
any log line, error frame or metric, wherever the token came from."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.websockets import WebSocket

from tests.conftest import IntrospectionService
from wsgate import Gate, GateConfig, GatedEndpoint, RemoteVerifier
from wsgate.discovery import discovery_routes
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "access-log-test-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"
CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore")
"""The test's own clients, which log what they send at DEBUG: not the server's logs."""


class Echo(GatedEndpoint):
    protocol = "json"

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        return {"type": "echo", "payload": message.get("payload")}


def config(**overrides: Any) -> GateConfig:
    settings: dict[str, Any] = {
        "jwt_secret": SECRET,
        "allowed_origins": (ORIGIN,),
        "allow_missing_origin": True,
        "query_param": "access_token",
        "heartbeat_interval": None,
    }
    settings.update(overrides)
    return GateConfig(**settings)


def access(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "wsgate.access" and getattr(record, "event", None) == event
    ]


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold within 10 s"
        await anyio.sleep(0.02)


async def test_one_line_per_refused_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsgate")
    gate = Gate(config())
    app = Starlette(routes=[gate.route("/ws", Echo)])
    tokens = TokenFactory(SECRET)
    with LiveServer(app) as server:
        async with WSClient(server.ws("/ws"), token=tokens.expired("alice")) as ws:
            assert await ws.wait_closed() == (1008, "token_expired")
        with pytest.raises(HandshakeRejected):
            await WSClient(server.ws("/ws"), origin="https://evil.example").connect()
        await eventually(lambda: len(access(caplog, "refused")) == 2)
    expired, origin = access(caplog, "refused")
    assert expired.levelno == logging.INFO
    assert expired.getMessage().startswith("refused /ws from 127.0.0.1:")
    assert expired.getMessage().endswith(": 1008 token_expired (the token's exp has passed)")
    fields = {
        name: getattr(expired, name)
        for name in ("endpoint", "path", "reason", "close_code", "http_status", "detail")
    }
    assert fields == {
        "endpoint": "/ws",
        "path": "/ws",
        "reason": "token_expired",
        "close_code": 1008,
        "http_status": None,
        "detail": "the token's exp has passed",
    }
    assert expired.client.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert expired.duration >= 0  # type: ignore[attr-defined]
    assert (origin.reason, origin.http_status, origin.close_code) == (  # type: ignore[attr-defined]
        "origin_not_allowed",
        403,
        None,
    )
    # The refusal is the connection's only line: no "closed" line follows it.
    assert access(caplog, "closed") == []


async def test_one_line_per_closed_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsgate")
    gate = Gate(config())
    app = Starlette(routes=[gate.route("/ws/{user_id}", Echo)])
    tokens = TokenFactory(SECRET)
    with LiveServer(app) as server:
        async with WSClient(server.ws("/ws/alice"), token=tokens.valid("alice")) as ws:
            for n in range(2):
                await ws.send_json({"type": "echo", "payload": n})
                await ws.expect("echo")
            await ws.send_json({"type": "echo", "payload": "x" * 9000})  # too large
            await ws.expect("error")
        await eventually(lambda: len(access(caplog, "closed")) == 1)
    (line,) = access(caplog, "closed")
    fields = {
        name: getattr(line, name)
        for name in (
            "endpoint",
            "path",
            "user_id",
            "close_code",
            "reason",
            "closed_by",
            "messages_in",
            "messages_out",
        )
    }
    assert fields == {
        "endpoint": "/ws/{user_id}",
        "path": "/ws/alice",
        "user_id": "alice",
        "close_code": 1000,
        "reason": "client",
        "closed_by": "client",
        "messages_in": 3,
        "messages_out": 3,
    }
    connection_id = line.connection_id  # type: ignore[attr-defined]
    assert line.getMessage().startswith(f"closed /ws/alice {connection_id} for alice: 1000 client")
    assert line.getMessage().endswith(", 3 in, 3 out")
    assert line.duration > 0  # type: ignore[attr-defined]


def token_forms(token: str) -> list[str]:
    """What would give a token away in a log: the token, its subprotocol form, its signature."""
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    signature = token.rpartition(".")[2]  # empty for alg "none"
    return [token, encoded, signature] if len(signature) >= 8 else [token, encoded]


async def test_no_token_reaches_any_log_frame_or_metric(caplog: pytest.LogCaptureFixture) -> None:
    """A whole authentication run, every token source, every outcome; then grep."""
    caplog.set_level(logging.DEBUG)
    tokens = TokenFactory(SECRET)
    used: list[str] = []

    def token(kind: str, subject: str) -> str:
        value: str = "not.a.jwt-at-all" if kind == "garbage" else getattr(tokens, kind)(subject)
        used.append(value)
        return value

    service = IntrospectionService()
    local = Gate(config())
    strict = Gate(config(reject_before_accept=True))
    with LiveServer(service.app, log_level="info") as auth:
        verifier = RemoteVerifier(f"{auth.url}/introspect")
        remote = Gate(config(jwt_secret=None), verifier=verifier)

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await remote.aclose()  # in the server's loop, where the verifier's client runs

        app = Starlette(
            lifespan=lifespan,
            routes=[
                local.route("/ws/{user_id}", Echo),
                strict.route("/strict", Echo),
                remote.route("/remote", Echo),
                *discovery_routes(local),
            ],
        )
        with LiveServer(app, log_level="info") as server:
            # Accepted, through each source, with an in-band refresh.
            header = WSClient(server.ws("/ws/alice"), token=token("valid", "alice"))
            subprotocol = WSClient(
                server.ws("/ws/alice"),
                subprotocols=["chat"],
                token=token("valid", "alice"),
                token_via="subprotocol",
            )
            query = WSClient(server.ws(f"/ws/alice?access_token={token('valid', 'alice')}"))
            for client in (header, subprotocol, query):
                async with client as ws:
                    await ws.send_json({"type": "auth", "token": token("valid", "alice")})
                    await ws.expect("auth")
                    await ws.send_json({"type": "echo", "payload": 1})
                    await ws.expect("echo")
            # A refresh with someone else's token closes the connection.
            async with WSClient(server.ws("/ws/alice"), token=token("valid", "alice")) as ws:
                await ws.send_json({"type": "auth", "token": token("valid", "mallory")})
                assert await ws.wait_closed() == (1008, "invalid_token")

            # Refused after accept, through each source.
            for kind in ("expired", "wrong_signature", "garbage", "alg_none"):
                bad = token(kind, "alice")
                for client in (
                    WSClient(server.ws("/ws/alice"), token=bad),
                    WSClient(server.ws(f"/ws/alice?access_token={bad}")),
                ):
                    async with client as ws:
                        assert (await ws.wait_closed())[0] == 1008
                if kind != "garbage":  # a subprotocol entry must be an ASCII token
                    async with WSClient(
                        server.ws("/ws/alice"),
                        subprotocols=["chat"],
                        token=bad,
                        token_via="subprotocol",
                    ) as ws:
                        assert (await ws.wait_closed())[0] == 1008
            # Someone else's path, and two different tokens at once.
            async with WSClient(server.ws("/ws/bob"), token=token("valid", "alice")) as ws:
                assert await ws.wait_closed() == (1008, "user_mismatch")
            both = f"/ws/alice?access_token={token('valid', 'alice')}"
            async with WSClient(server.ws(both), token=token("valid", "carol")) as ws:
                assert await ws.wait_closed() == (1008, "invalid_token")

            # Refused before accept, with an HTTP status.
            for bad in (token("expired", "alice"), token("wrong_signature", "alice")):
                for client in (
                    WSClient(server.ws("/strict"), token=bad),
                    WSClient(server.ws(f"/strict?access_token={bad}")),
                ):
                    with pytest.raises(HandshakeRejected) as refused:
                        await client.connect()
                    assert refused.value.status == 401

            # The auth service: active, inactive, and unreachable.
            for value, reason in [("token-of-dave-1", None), ("bogus-token-2", "invalid_token")]:
                used.append(value)
                async with WSClient(server.ws("/remote"), token=value) as ws:
                    if reason is None:
                        await ws.send_json({"type": "echo"})
                        await ws.expect("echo")
                    else:
                        assert await ws.wait_closed() == (1008, reason)

            # The secure config, with good and bad bearer tokens.
            async with httpx.AsyncClient(base_url=server.url) as http:
                for value, status in [(token("valid", "op"), 200), (token("expired", "op"), 401)]:
                    response = await http.get(
                        "/ws/secure/config", headers={"Authorization": f"Bearer {value}"}
                    )
                    assert response.status_code == status
                exposition = (await http.get("/metrics")).text
            frames = [header, subprotocol, query]
            await eventually(
                lambda: (
                    sum(local.stats()["connections_closed"].values()) >= 4
                    and sum(remote.stats()["connections_closed"].values()) >= 1
                )
            )

    server_records = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert len(server_records) > 40
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in server_records)
    leaks = [form for value in used for form in token_forms(value) if form in text]
    assert leaks == []
    # The server's own access log saw the query string, with the token taken out.
    assert "/ws/alice?access_token=redacted" in text
    assert "/strict?access_token=redacted" in text
    # Nor in the frames the clients received, nor in the metrics.
    received = "\n".join(
        str(frame.data) for ws in frames for frame in ws.history if frame.direction == "received"
    )
    figures = f"{local.stats()} {strict.stats()} {remote.stats()} {exposition}"
    for value in used:
        for form in token_forms(value):
            assert form not in received
            assert form not in figures
