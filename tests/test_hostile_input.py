"""Hostile input, round 2: one regression test per defect found by attacking the example app,
over real sockets against the example app itself, each asserting on what a client or an
operator sees (frames, close codes, log lines, counters)."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import websockets.version

from examples.app import create_app
from tests.conftest import ALLOWED_ORIGIN, SECRET, database_url, example_config
from wsgate import Environment, Gate
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore")
"""The test's own clients, which log what they send at DEBUG: not the server's logs."""


@pytest.fixture
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """Start the example app in production mode, with settings of the test's own."""
    started: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        config = example_config(Environment.PRODUCTION, **overrides)
        app = create_app(config, database_url=database_url(tmp_path_factory))
        server = LiveServer(app, ws_max_size=config.server_max_size, log_level="info")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory(SECRET)


def gate_of(server: LiveServer) -> Gate:
    gate: Gate = server.app.state.gate  # type: ignore[attr-defined]
    return gate


def server_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"the condition did not hold within {within} s"
        await anyio.sleep(0.02)


def nested(depth: int) -> Any:
    """A JSON value of exactly ``depth`` levels of arrays."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# 1. Log forging


async def test_client_text_cannot_forge_log_lines(
    example: Callable[..., LiveServer], tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = example()
    forged = "/ws/x%0D%0ACRITICAL%20wsgate.auth:%20admin%20login"
    async with WSClient(server.ws(forged), origin=ALLOWED_ORIGIN) as ws:
        assert await ws.wait_closed() == (1008, "auth_required")
    # A token whose sub holds a line break and an ANSI escape, on a connection that closes.
    sub = "eve\r\nCRITICAL wsgate.auth: root login\x1b[2J"
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=tokens.valid(sub)) as ws:
        await ws.send_json({"type": "whoami"})
        assert (await ws.expect("whoami"))["payload"]["user"] == sub
    # A refused Origin and User-Agent with a C1 control character and a lot of padding.
    agent = "bot\x85" + "A" * 5000
    with pytest.raises(HandshakeRejected):
        await WSClient(
            server.ws("/ws"),
            origin="https://evil.example\x85" + "B" * 5000,
            headers={"User-Agent": agent},
        ).connect()
    await eventually(
        lambda: (
            sum(getattr(r, "event", None) == "refused" for r in caplog.records) >= 2
            and any(getattr(r, "event", None) == "closed" for r in caplog.records)
        )
    )

    records = [r for r in server_lines(caplog) if r.name.startswith("wsgate")]
    for record in records:
        message = record.getMessage()
        for control in ("\r", "\n", "\x1b", "\x85"):
            assert control not in message, message
        assert len(message) < 1500
        for name, value in vars(record).items():
            if isinstance(value, str) and name not in ("msg", "message"):
                assert value.isprintable(), (name, value)
                assert len(value) < 1500, name
    refused = [r for r in records if getattr(r, "event", None) == "refused"]
    assert refused[0].path == "/ws/x\\r\\nCRITICAL wsgate.auth: admin login"  # type: ignore[attr-defined]
    assert "/ws/x\\r\\nCRITICAL" in refused[0].getMessage()
    (closed,) = [r for r in records if getattr(r, "event", None) == "closed"]
    assert closed.user_id == "eve\\r\\nCRITICAL wsgate.auth: root login\\x1b[2J"  # type: ignore[attr-defined]
    origin = refused[1]
    assert origin.reason == "origin_not_allowed"  # type: ignore[attr-defined]
    # The client library may send the header as UTF-8 or Latin-1: either way, escaped.
    assert origin.detail.startswith("Origin https://evil.example")  # type: ignore[attr-defined]
    assert "\\x85BBB" in origin.detail  # type: ignore[attr-defined]
    assert origin.detail.endswith("characters)")  # type: ignore[attr-defined]
    assert origin.user_agent.startswith("bot")  # type: ignore[attr-defined]
    assert "\\x85AAA" in origin.user_agent  # type: ignore[attr-defined]


# 2. A query-string token in the server's access log


@pytest.mark.parametrize("origin", ["https://evil.example", None])
async def test_a_query_token_never_reaches_the_access_log(
    example: Callable[..., LiveServer],
    tokens: TokenFactory,
    caplog: pytest.LogCaptureFixture,
    origin: str | None,
) -> None:
    caplog.set_level(logging.INFO)
    server = example(query_param="access_token", allow_missing_origin=False)
    token = tokens.valid("alice")
    with pytest.raises(HandshakeRejected) as refused:
        await WSClient(server.ws(f"/ws?v=2&access_token={token}"), origin=origin).connect()
    assert refused.value.status == 403
    # Discovery, asked with the same query string.
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get(f"/ws/config?access_token={token}")).status_code == 200
    await eventually(
        lambda: sum("access_token=redacted" in r.getMessage() for r in caplog.records) >= 2
    )
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in server_lines(caplog))
    assert token not in text
    assert token.split(".")[1] not in text  # not even the claims
    assert '"WebSocket /ws?v=redacted&access_token=redacted" 403' in text
    assert "GET /ws/config?access_token=redacted HTTP/1.1" in text


async def test_a_query_token_still_authenticates(
    example: Callable[..., LiveServer], tokens: TokenFactory
) -> None:
    server = example(query_param="access_token")
    token = tokens.valid("alice")
    async with WSClient(server.ws(f"/ws?access_token={token}"), origin=ALLOWED_ORIGIN) as ws:
        await ws.send_json({"type": "whoami"})
        assert (await ws.expect("whoami"))["payload"]["user"] == "alice"


# 3 and 6. Nesting: what the gate lets through, the gate and the app can write back


@pytest.mark.parametrize("shape", ["json", "legacy"])
async def test_deeply_nested_messages_get_one_error_and_the_connection_stays(
    example: Callable[..., LiveServer], tokens: TokenFactory, shape: str
) -> None:
    server = example()
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=tokens.valid()) as ws:
        for depth in (65, 300, 1000):
            # By hand: orjson would not write it. The envelope object is one level more.
            payload = "[" * (depth - 1) + "]" * (depth - 1)
            envelope = (
                '{"type": "echo", "payload": ' if shape == "json" else '{"event": "echo", "data": '
            )
            await ws.send_text(f'{envelope}{payload}, "id": {depth}}}')
            error = await ws.receive_json()
            body = error["error"] if shape == "json" else error["data"]
            assert body["code"] == "invalid_message"
            assert "64 levels" in body["message"]
            assert body["max_depth"] == 64
            assert error["id"] == depth
        # The deepest message the limit allows goes through and comes back whole.
        allowed = nested(63)
        await ws.send_json({"type": "echo", "payload": allowed})
        echoed = await ws.receive_json()
        assert echoed["payload" if shape == "json" else "data"] == allowed
    assert ws.close_code == 1000
    stats = gate_of(server).stats()["endpoints"]["/ws"]
    assert stats["message_errors"].get("internal_error", 0) == 0
    assert stats["message_errors"]["invalid_message"] == 3


async def test_deeply_nested_jsonrpc_gets_one_error(
    example: Callable[..., LiveServer], tokens: TokenFactory
) -> None:
    server = example()
    async with WSClient(
        server.ws("/ws/mcp"), origin=ALLOWED_ORIGIN, token=tokens.valid(), subprotocols=["mcp"]
    ) as ws:
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": nested(500)}
        await ws.send_json(request)
        error = await ws.receive_json()
        assert error["id"] == 1
        assert error["error"]["code"] == -32600
        assert error["error"]["data"]["reason"] == "invalid_message"
        await ws.send_json({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert (await ws.receive_json())["id"] == 2


# 4. Time claims beyond a sane bound


@pytest.mark.parametrize("exp", [1e20, 2**64, -1])
async def test_absurd_time_claims_are_refused_alike_in_handshake_and_refresh(
    example: Callable[..., LiveServer], tokens: TokenFactory, exp: float
) -> None:
    server = example()
    absurd = tokens.valid("alice", exp=exp)
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=absurd) as ws:
        assert await ws.wait_closed() == (1008, "invalid_token")
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=tokens.valid("alice")) as ws:
        await ws.send_json({"type": "auth", "token": absurd})
        assert await ws.wait_closed() == (1008, "invalid_token")


# 5. A JSON-RPC batch costs one unit per request


def rpc(request_id: int | None, method: str = "tools/list") -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        request["id"] = request_id
    return request


async def test_each_request_of_a_batch_costs_one_unit(
    example: Callable[..., LiveServer], tokens: TokenFactory
) -> None:
    server = example(rate_limit="10/minute")
    async with WSClient(
        server.ws("/ws/mcp"), origin=ALLOWED_ORIGIN, token=tokens.valid(), subprotocols=["mcp"]
    ) as ws:
        # Seven requests and a notification: eight units of ten.
        await ws.send_json([*(rpc(n) for n in range(1, 8)), rpc(None, "notifications/initialized")])
        answers = await ws.receive_json()
        assert sorted(answer["id"] for answer in answers) == list(range(1, 8))
        assert all("result" in answer for answer in answers)
        # Two units left: the first two requests run, the other three are refused, each.
        await ws.send_json([rpc(n) for n in range(10, 15)])
        answers = {answer["id"]: answer for answer in await ws.receive_json()}
        assert set(answers) == {10, 11, 12, 13, 14}
        assert "result" in answers[10]
        assert "result" in answers[11]
        for refused in (12, 13, 14):
            error = answers[refused]["error"]
            assert error["code"] == -32002
            assert error["data"]["reason"] == "rate_limited"
            assert error["data"]["retry_after"] > 0
            assert error["data"]["limit"] == "10/minute"
        # Nothing left: a batch gets an error for each request, and a single request one.
        await ws.send_json([rpc(20), rpc(None, "notifications/initialized"), rpc(21)])
        answers = await ws.receive_json()
        assert [answer["id"] for answer in answers] == [20, 21]
        assert {answer["error"]["data"]["reason"] for answer in answers} == {"rate_limited"}
        await ws.send_json(rpc(30))
        assert (await ws.receive_json())["error"]["data"]["reason"] == "rate_limited"
        # Notifications only: one frame (id null) says why nothing ran; each counts once.
        await ws.send_json([rpc(None, "notifications/initialized")] * 2)
        error = await ws.receive_json()
        assert error["id"] is None
        assert error["error"]["data"]["reason"] == "rate_limited"
    stats = gate_of(server).stats()["endpoints"]["/ws/mcp"]
    assert stats["message_errors"]["rate_limited"] == 3 + 3 + 1 + 2


async def test_the_batch_cost_is_published(example: Callable[..., LiveServer]) -> None:
    server = example(rate_limit="10/minute")
    async with httpx.AsyncClient(base_url=server.url) as http:
        document = (await http.get("/ws/config")).json()
    assert document["limits"]["rate_limit_batch_cost"] == "one unit per request"
    assert document["limits"]["max_depth"] == 64
    assert document["heartbeat"]["ping_limit"] == "30/minute"
    assert document["heartbeat"]["refresh_limit"] == "6/minute"


# The per-connection bounds on pings and refreshes


async def test_pings_and_refreshes_are_bounded_per_connection(
    example: Callable[..., LiveServer], tokens: TokenFactory
) -> None:
    server = example(ping_limit="5/minute", refresh_limit="2/minute", rate_limit="1/minute")
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=tokens.valid()) as ws:
        for n in range(5):
            await ws.send_json({"type": "ping", "id": n})
            assert (await ws.expect("pong"))["id"] == n
        await ws.send_json({"type": "ping", "id": 99})
        error = await ws.expect("error")
        assert error["id"] == 99
        assert error["error"]["code"] == "rate_limited"
        assert error["error"]["limit"] == "5/minute"
        assert 0 < error["error"]["retry_after"] <= 60
        for _ in range(2):
            await ws.send_json({"type": "auth", "token": tokens.valid()})
            await ws.expect("auth")
        await ws.send_json({"type": "auth", "token": tokens.valid()})
        assert (await ws.expect("error"))["error"]["code"] == "rate_limited"
        await ws.send_json({"type": "echo", "payload": 1})  # the message budget is its own
        assert (await ws.expect("echo"))["payload"] == 1
    assert ws.close_code == 1000


# 7. A client cannot poison a metric


@pytest.mark.parametrize("code", [1009, 4008, 1008, 4000])
async def test_a_client_close_counts_as_the_client_s(
    example: Callable[..., LiveServer], tokens: TokenFactory, code: int
) -> None:
    server = example()
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=tokens.valid()) as ws:
        await ws.send_json({"type": "echo"})
        await ws.expect("echo")
        await ws.close(code, "message_too_large")
    gate = gate_of(server)
    await eventually(lambda: sum(closed(gate).values()) == 1)
    assert closed(gate) == {"client": 1}


def closed(gate: Gate) -> dict[str, int]:
    counts: dict[str, int] = gate.stats()["endpoints"]["/ws"]["connections_closed"]
    return counts


# Every error frame is counted, whoever sends it


async def test_the_endpoint_s_own_error_frames_are_counted(
    example: Callable[..., LiveServer], tokens: TokenFactory
) -> None:
    server = example()
    async with WSClient(server.ws("/ws"), origin=ALLOWED_ORIGIN, token=tokens.valid()) as ws:
        await ws.send_json({"type": "no-such-type"})
        assert (await ws.expect("error"))["error"]["code"] == "method_not_found"
        await ws.send_json({"type": "say", "room": "lobby"})
        assert (await ws.expect("error"))["error"]["code"] == "invalid_params"
    async with WSClient(
        server.ws("/ws/mcp"), origin=ALLOWED_ORIGIN, token=tokens.valid(), subprotocols=["mcp"]
    ) as ws:
        await ws.send_json(rpc(1, "no/such/method"))
        assert (await ws.receive_json())["error"]["data"]["reason"] == "method_not_found"
        await ws.send_json([rpc(2, "no/such/method"), rpc(3, "tools/call")])
        assert len(await ws.receive_json()) == 2
    endpoints = gate_of(server).stats()["endpoints"]
    assert endpoints["/ws"]["message_errors"] == {"method_not_found": 1, "invalid_params": 1}
    assert endpoints["/ws/mcp"]["message_errors"] == {"method_not_found": 2, "invalid_params": 1}


# What the server refuses before the gate sees the handshake (docs/close-codes.md)


async def raw_handshake(server: LiveServer, headers: str) -> tuple[int, bytes]:
    """Send a handshake by hand (no client library sends these) and read the answer."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n"
    )
    with anyio.fail_after(5):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(request.encode("latin-1"))
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


async def test_the_server_refuses_some_handshakes_before_the_gate(
    example: Callable[..., LiveServer], tokens: TokenFactory
) -> None:
    server = example()
    origin, bearer = f"Origin: {ALLOWED_ORIGIN}\r\n", f"Authorization: Bearer {tokens.valid()}\r\n"
    cases = {
        "two origins": (f"{origin}{origin}{bearer}", 400),
        "= in a subprotocol": (
            f"{origin}Sec-WebSocket-Protocol: chat, base64url.bearer.e30=\r\n",
            400,
        ),
        "/ in a subprotocol": (f"{origin}Sec-WebSocket-Protocol: chat, a/b\r\n", 400),
        "+ in a subprotocol": (f"{origin}Sec-WebSocket-Protocol: chat, a+b\r\n", 101),
    }
    if int(websockets.version.version.split(".")[0]) >= 17:
        # Older websockets (16, the last for Python 3.10) leave it unanswered (see the docs).
        cases["headers over 8 KiB"] = (f"{origin}X-Pad: {'a' * 9000}\r\n{bearer}", 431)
    for name, (headers, expected) in cases.items():
        status, _ = await raw_handshake(server, headers)
        assert status == expected, name
    # Only the last reached the gate, and it answered it: the server answered the others.
    await eventually(lambda: refused(gate_of(server)) != {})
    assert refused(gate_of(server)) == {"auth_required": 1}


def refused(gate: Gate) -> dict[str, int]:
    counts: dict[str, int] = gate.stats()["endpoints"]["/ws"]["connections_refused"]
    return counts
