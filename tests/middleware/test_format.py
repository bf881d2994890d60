"""FormatMiddleware over real sockets: every bad input gets its frame and the connection lives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute, websocket_session
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from tests.middleware.mounting import Mounting, gate
from wsgate import ConfigurationError
from wsgate.connection import PARSED_KEY, Connection, decoded
from wsgate.endpoint import GatedEndpoint
from wsgate.error_frames import Protocol
from wsgate.middleware.format import FORMAT_KEY, REJECTED_KEY, FormatMiddleware
from wsgate.testing import LiveServer, WSClient

pytestmark = pytest.mark.anyio


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<any non-empty string>"


TEXT: Any = _AnyText()


@websocket_session
async def mirror(websocket: WebSocket) -> None:
    """Tell the client what the app got: the parsed value, the text and the format."""
    connection: Connection = websocket.scope["wsgate.connection"]
    at_accept = [connection.protocol, websocket.scope[FORMAT_KEY]]
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        cached = PARSED_KEY in message  # parsed by the middleware, not again by the app
        await websocket.send_json(
            {
                "app": {
                    "parsed": decoded(message),
                    "text": message.get("text"),
                    "cached": cached,
                    "format": websocket.scope[FORMAT_KEY],
                    "legacy": connection.legacy,
                    "rejected": message.get(REJECTED_KEY),
                    "at_accept": at_accept,
                }
            }
        )


def checked(
    mounting: Mounting,
    app: ASGIApp,
    *,
    protocol: Protocol = "json",
    legacy: bool = True,
    max_batch: int = 50,
    json_endpoint: str | None = None,
    jsonrpc_endpoint: str | None = None,
) -> ASGIApp:
    """``app`` behind the format check: the middleware alone, or inside a gate."""
    if mounting == "alone":
        return FormatMiddleware(
            app,
            protocol=protocol,
            legacy=legacy,
            max_batch=max_batch,
            json_endpoint=json_endpoint,
            jsonrpc_endpoint=jsonrpc_endpoint,
        )
    return gate(legacy_messages=legacy, max_batch=max_batch).wrap(
        app,
        protocol=protocol,
        dev_bypass=True,
        json_endpoint=json_endpoint,
        jsonrpc_endpoint=jsonrpc_endpoint,
    )


@pytest.fixture(scope="module")
def server(mounting: Mounting) -> Iterator[LiveServer]:
    app = Starlette(
        routes=[
            WebSocketRoute("/json", checked(mounting, mirror, jsonrpc_endpoint="/rpc")),
            WebSocketRoute("/json-bare", checked(mounting, mirror)),
            WebSocketRoute("/no-legacy", checked(mounting, mirror, legacy=False)),
            WebSocketRoute(
                "/rpc",
                checked(mounting, mirror, protocol="jsonrpc", max_batch=3, json_endpoint="/json"),
            ),
            WebSocketRoute("/rpc-bare", checked(mounting, mirror, protocol="jsonrpc")),
            Route("/health", checked(mounting, PlainTextResponse("ok"))),
        ]
    )
    with LiveServer(app) as live:
        yield live


async def app_saw(ws: WSClient) -> dict[str, Any]:
    """The next frame, which must come from the app."""
    frame = await ws.receive_json()
    assert "app" in frame, f"expected the app's frame, got {frame!r}"
    seen: dict[str, Any] = frame["app"]
    assert seen["cached"] is True
    return seen


async def assert_json_open(ws: WSClient) -> None:
    """The connection still works, and the app sees the next message, not a refused one."""
    await ws.send_json({"type": "probe", "id": "p"})
    assert (await app_saw(ws))["parsed"] == {"type": "probe", "id": "p"}


async def assert_rpc_open(ws: WSClient) -> None:
    await ws.send_json({"jsonrpc": "2.0", "method": "probe", "id": "p"})
    assert (await app_saw(ws))["parsed"] == {"jsonrpc": "2.0", "method": "probe", "id": "p"}


# JSON endpoints: what passes


async def test_a_valid_message_reaches_the_app_parsed_once(server: LiveServer) -> None:
    message = {"type": "chat", "payload": {"n": [1, None]}, "id": "a", "room": "lobby"}
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_json(message)
        seen = await app_saw(ws)
        assert seen["parsed"] == message
        assert json.loads(seen["text"]) == message
        assert seen["format"] == "json"
        assert seen["at_accept"] == ["json", "json"]
        assert seen["legacy"] is False
        await ws.send_json({"type": "x", "id": 7})
        assert (await app_saw(ws))["parsed"] == {"type": "x", "id": 7}


# JSON endpoints: every way to be refused


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"type": "echo", "payload": NaN}',
        '{"type": "echo", "payload": Infinity}',
        '{"type": "echo", "payload": -Infinity}',
        '{"type": "echo", "payload": "\\ud800"}',
        '{"type": "echo", "payload": 1e999999}',
        "[" * 1100 + "]" * 1100,
        "",
        "\x00\x01\x02",
        '{"type": "echo",}',
    ],
    ids=[
        "syntax",
        "nan",
        "infinity",
        "minus-infinity",
        "lone-surrogate",
        "overflow",
        "too-deep",
        "empty",
        "control",
        "trailing-comma",
    ],
)
async def test_invalid_json(server: LiveServer, text: str) -> None:
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_text(text)
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "invalid_json", "message": TEXT},
        }
        await assert_json_open(ws)


@pytest.mark.parametrize(
    ("message", "named", "echoed"),
    [
        ([1, 2], "object", None),
        ("just a string", "object", None),
        (5, "object", None),
        (None, "object", None),
        ({"payload": 1, "id": 3}, '"type"', 3),
        ({"type": "", "id": "e"}, '"type"', "e"),
        ({"type": 5}, '"type"', None),
        ({"type": ["dup"]}, '"type"', None),
        ({"type": None}, '"type"', None),
        ({"type": "echo", "id": {"no": 1}}, '"id"', None),
        ({"type": "echo", "id": True}, '"id"', None),
        ({"type": "echo", "id": None}, '"id"', None),
        ({"type": "echo", "id": 1.5}, '"id"', None),
        ({"__proto__": {"type": "admin"}}, '"type"', None),
    ],
)
async def test_valid_json_of_the_wrong_shape(
    server: LiveServer, message: Any, named: str, echoed: Any
) -> None:
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_json(message)
        error = await ws.receive_json()
        assert error["type"] == "error"
        assert error["error"]["code"] == "invalid_message"
        assert named in error["error"]["message"]
        assert '{"type": "<name>"' in error["error"]["message"]  # and what to send instead
        assert error.get("id") == echoed
        assert ("id" in error) == (echoed is not None)
        await assert_json_open(ws)


async def test_jsonrpc_on_a_json_endpoint_names_the_jsonrpc_endpoint(server: LiveServer) -> None:
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        error = await ws.receive_json()
        assert error == {
            "type": "error",
            "error": {"code": "wrong_protocol", "message": TEXT},
            "id": 1,
        }
        assert "/rpc" in error["error"]["message"]
        # Even with a "type": the "jsonrpc" key decides.
        await ws.send_json({"jsonrpc": "2.0", "type": "echo"})
        assert (await ws.receive_json())["error"]["code"] == "wrong_protocol"
        await assert_json_open(ws)
    async with WSClient(server.ws("/json-bare")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "method": "ping"})
        error = await ws.receive_json()
        assert "JSON-RPC endpoint" in error["error"]["message"]


async def test_binary_frames(server: LiveServer) -> None:
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_bytes(b'{"type": "echo"}')
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "unsupported_data", "message": TEXT},
        }
        await assert_json_open(ws)


async def test_many_bad_messages_in_a_row_keep_the_connection(server: LiveServer) -> None:
    async with WSClient(server.ws("/json")) as ws:
        for _ in range(30):
            await ws.send_text("{")
        for _ in range(30):
            assert (await ws.receive_json())["error"]["code"] == "invalid_json"
        await assert_json_open(ws)


# Legacy clients


async def test_legacy_messages_are_normalised_before_the_app(server: LiveServer) -> None:
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_json({"event": "chat", "data": {"x": 1}, "id": 2, "room": "lobby"})
        seen = await app_saw(ws)
        normal = {"type": "chat", "payload": {"x": 1}, "id": 2, "room": "lobby"}
        assert seen["parsed"] == normal
        assert json.loads(seen["text"]) == normal  # a plain endpoint reading text sees it too
        assert seen["format"] == "legacy"
        assert seen["legacy"] is True
        assert seen["at_accept"] == ["json", "json"]

        await ws.send_json({"event": "hello"})
        assert (await app_saw(ws))["parsed"] == {"type": "hello"}
        await ws.send_json({"event": "nothing", "data": None})
        assert (await app_saw(ws))["parsed"] == {"type": "nothing", "payload": None}

        # From now on, errors take the legacy shape.
        await ws.send_text("{not json")
        assert await ws.receive_json() == {
            "event": "error",
            "data": {"code": "invalid_json", "message": TEXT},
        }
        await ws.send_json({"type": "", "id": 9})
        assert await ws.receive_json() == {
            "event": "error",
            "data": {"code": "invalid_message", "message": TEXT},
            "id": 9,
        }
        await assert_json_open(ws)


@pytest.mark.parametrize(
    ("message", "named", "echoed"),
    [
        ({"event": "", "id": 4}, '"event"', 4),
        ({"event": 5}, '"event"', None),
        ({"event": "chat", "id": [1]}, '"id"', None),
    ],
)
async def test_invalid_legacy_messages_get_legacy_errors(
    server: LiveServer, message: Any, named: str, echoed: Any
) -> None:
    async with WSClient(server.ws("/json")) as ws:
        await ws.send_json(message)
        error = await ws.receive_json()
        assert error["event"] == "error"
        assert error["data"]["code"] == "invalid_message"
        assert named in error["data"]["message"]
        assert '{"event": "<name>"' in error["data"]["message"]
        assert error.get("id") == echoed
        await assert_json_open(ws)


async def test_legacy_detection_can_be_turned_off(server: LiveServer) -> None:
    async with WSClient(server.ws("/no-legacy")) as ws:
        await ws.send_json({"event": "chat", "data": 1, "id": 1})
        error = await ws.receive_json()
        assert (error["type"], error["error"]["code"], error["id"]) == (
            "error",
            "invalid_message",
            1,
        )
        assert '"type"' in error["error"]["message"]
        assert "legacy" in error["error"]["message"]
        await ws.send_json({"type": "probe"})
        seen = await app_saw(ws)
        assert (seen["format"], seen["legacy"]) == ("json", False)


async def test_a_modern_client_is_not_affected_by_a_legacy_one(server: LiveServer) -> None:
    async with WSClient(server.ws("/json")) as legacy, WSClient(server.ws("/json")) as modern:
        await legacy.send_json({"event": "chat"})
        assert (await app_saw(legacy))["format"] == "legacy"
        await modern.send_text("{")
        assert (await modern.receive_json())["type"] == "error"
        await modern.send_json({"type": "chat"})
        assert (await app_saw(modern))["format"] == "json"


# JSON-RPC endpoints: single messages


async def test_valid_requests_notifications_and_responses_reach_the_app(
    server: LiveServer,
) -> None:
    valid = [
        {"jsonrpc": "2.0", "method": "m", "params": [1, 2], "id": 1},
        {"jsonrpc": "2.0", "method": "m", "params": {"a": 1}, "id": "x"},
        {"jsonrpc": "2.0", "method": "m", "id": None},
        {"jsonrpc": "2.0", "method": "m"},
        {"jsonrpc": "2.0", "method": "rpc.discover", "id": 2},
        {"jsonrpc": "2.0", "id": "q1", "result": {"answer": 42}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}},
    ]
    async with WSClient(server.ws("/rpc")) as ws:
        for request in valid:
            await ws.send_json(request)
            seen = await app_saw(ws)
            assert seen["parsed"] == request
            assert seen["rejected"] is None
            assert seen["format"] == "jsonrpc"
            assert seen["at_accept"] == ["jsonrpc", "jsonrpc"]


async def test_parse_error(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_text('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
        assert await ws.receive_json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": TEXT, "data": {"reason": "invalid_json"}},
        }
        await assert_rpc_open(ws)


@pytest.mark.parametrize(
    ("text", "named", "echoed"),
    [
        ("5", "request", None),
        ('"ping"', "request", None),
        ("null", "request", None),
        ('{"jsonrpc": "1.0", "id": 1, "method": "m"}', '"2.0"', 1),
        ('{"jsonrpc": 2.0, "id": 1, "method": "m"}', '"2.0"', 1),
        ('{"id": 1, "method": "m"}', '"jsonrpc"', 1),
        ('{"foo": "boo"}', '"jsonrpc"', None),
        ('{"jsonrpc": "2.0", "id": {"a": 1}, "method": "m"}', '"id"', None),
        ('{"jsonrpc": "2.0", "id": true, "method": "m"}', '"id"', None),
        ('{"jsonrpc": "2.0", "id": 1.5, "method": "m"}', '"id"', None),
        ('{"jsonrpc": "2.0", "method": 1, "params": "bar"}', '"method"', None),
        ('{"jsonrpc": "2.0", "id": 1, "method": "m", "params": "x"}', '"params"', 1),
        ('{"jsonrpc": "2.0", "id": 1, "method": "m", "params": 3}', '"params"', 1),
        ('{"jsonrpc": "2.0", "id": 1, "method": "m", "params": null}', '"params"', 1),
        ('{"jsonrpc": "2.0", "id": 1}', '"method"', 1),
        ('{"jsonrpc": "2.0", "result": 1}', '"id"', None),
        ('{"jsonrpc": "2.0", "id": 1, "result": 1, "error": {}}', "not both", 1),
    ],
)
async def test_invalid_requests(server: LiveServer, text: str, named: str, echoed: Any) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_text(text)
        error = await ws.receive_json()
        assert error == {
            "jsonrpc": "2.0",
            "id": echoed,
            "error": {
                "code": -32600,
                "message": TEXT,
                "data": {"reason": "invalid_message", "detail": TEXT},
            },
        }
        assert named in error["error"]["message"]
        assert '"jsonrpc": "2.0"' in error["error"]["data"]["detail"]
        await assert_rpc_open(ws)


async def test_plain_json_on_a_jsonrpc_endpoint_names_the_json_endpoint(
    server: LiveServer,
) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        for message, echoed in [
            ({"type": "echo", "payload": 1}, None),
            ({"type": "echo", "id": 9}, 9),
            ({"event": "echo"}, None),
        ]:
            await ws.send_json(message)
            error = await ws.receive_json()
            assert error == {
                "jsonrpc": "2.0",
                "id": echoed,
                "error": {
                    "code": -32600,
                    "message": TEXT,
                    "data": {"reason": "wrong_protocol", "detail": TEXT},
                },
            }
            assert "/json" in error["error"]["message"]
            assert "jsonrpc" in error["error"]["data"]["detail"]
        await assert_rpc_open(ws)
    async with WSClient(server.ws("/rpc-bare")) as ws:
        await ws.send_json({"type": "echo"})
        assert "JSON endpoint" in (await ws.receive_json())["error"]["message"]


async def test_binary_frames_on_a_jsonrpc_endpoint(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_bytes(b"\x00")
        assert await ws.receive_json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32003, "message": TEXT, "data": {"reason": "unsupported_data"}},
        }
        await assert_rpc_open(ws)


# JSON-RPC endpoints: batches


async def test_an_empty_batch_is_one_error_object(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_text("[]")
        error = await ws.receive_json()
        assert isinstance(error, dict)
        assert (error["id"], error["error"]["code"]) == (None, -32600)
        assert error["error"]["data"]["reason"] == "invalid_message"
        await assert_rpc_open(ws)


async def test_a_batch_over_max_batch_is_one_error_object(server: LiveServer) -> None:
    request = {"jsonrpc": "2.0", "method": "m", "id": 1}
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json([request] * 3)
        assert len((await app_saw(ws))["parsed"]) == 3
        await ws.send_json([request] * 4)
        assert await ws.receive_json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32004,
                "message": TEXT,
                "data": {"reason": "batch_too_large", "limit": 3},
            },
        }
        await assert_rpc_open(ws)


async def test_a_batch_of_invalid_entries_is_answered_here(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_text('[1, {"jsonrpc": "2.0", "method": 5, "id": "b"}, {"type": "x"}]')
        errors = await ws.receive_json()
        assert [(error["id"], error["error"]["code"]) for error in errors] == [
            (None, -32600),
            ("b", -32600),
            (None, -32600),
        ]
        assert [error["error"]["data"]["reason"] for error in errors] == [
            "invalid_message",
            "invalid_message",
            "wrong_protocol",
        ]
        await assert_rpc_open(ws)


async def test_valid_entries_reach_the_app_and_rejected_ones_wait_in_the_message(
    server: LiveServer,
) -> None:
    request = {"jsonrpc": "2.0", "method": "m", "id": 1}
    notification = {"jsonrpc": "2.0", "method": "n"}
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json([request, {"foo": "boo", "id": 5}, notification])
        seen = await app_saw(ws)
        assert seen["parsed"] == [request, notification]
        assert seen["rejected"] == [
            {
                "jsonrpc": "2.0",
                "id": 5,
                "error": {
                    "code": -32600,
                    "message": TEXT,
                    "data": {"reason": "invalid_message", "detail": TEXT},
                },
            }
        ]
        # A batch of notifications is the app's to (not) answer.
        await ws.send_json([notification, notification])
        seen = await app_saw(ws)
        assert seen["parsed"] == [notification, notification]
        assert seen["rejected"] is None


# Options and other scopes


async def test_http_requests_pass_through(server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/health")
    assert (response.status_code, response.text) == (200, "ok")


class RPCEndpoint(GatedEndpoint):
    protocol = "jsonrpc"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"protocol": "xml"}, "protocol must be one of 'json', 'jsonrpc', not 'xml'."),
        ({"max_batch": 0}, "max_batch must be a positive integer, not 0."),
        ({"max_batch": True}, "max_batch must be a positive integer, not True."),
        ({"legacy": "yes"}, "legacy must be True or False, not 'yes'."),
        ({"json_endpoint": ""}, "json_endpoint must be the endpoint's path"),
        ({"jsonrpc_endpoint": 5}, "jsonrpc_endpoint must be the endpoint's path"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        FormatMiddleware(mirror, **options)
    assert str(raised.value).startswith(message)


def test_the_protocol_must_match_a_gated_endpoint() -> None:
    with pytest.raises(ConfigurationError, match="pass protocol='jsonrpc'"):
        FormatMiddleware(RPCEndpoint)
    assert FormatMiddleware(RPCEndpoint, protocol="jsonrpc").protocol == "jsonrpc"
