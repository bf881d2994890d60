"""GatedEndpoint over real sockets: replies, JSON-RPC 2.0 (section 7 replayed), isolation of
handler failures, and the per-message resource scope."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Router, WebSocketRoute
from starlette.websockets import WebSocket

from wsgate import ConfigurationError
from wsgate.endpoint import ErrorReply, GatedEndpoint, InvalidParams, rpc_method
from wsgate.error_frames import INVALID_MESSAGE, RATE_LIMITED
from wsgate.middleware.format import FormatMiddleware
from wsgate.testing import HandshakeRejected, LiveServer, WSClient

pytestmark = pytest.mark.anyio

SECRET_DETAIL = "postgres://admin:hunter2@db"

events: list[str] = []
"""What the fake per-message resource saw, in order."""
calls: list[Any] = []
"""What notification and response handlers were called with."""


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<any non-empty string>"


TEXT: Any = _AnyText()


class Resource:
    """A stand-in for a database session: it records commits and rollbacks."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __aenter__(self) -> Resource:
        events.append(f"open {self.name}")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        events.append(f"commit {self.name}" if kind is None else f"rollback {kind.__name__}")


class Chat(GatedEndpoint):
    def message_scope(self, websocket: WebSocket, message: Any) -> Resource:
        return Resource(message["type"])

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        kind = message["type"]
        if kind == "echo":
            return {"type": "echo", "payload": message.get("payload")}
        if kind == "twice":
            await self.reply(websocket, {"type": "one"}, to=message)
            await self.reply(websocket, {"type": "two", "payload": 2, "room": "r"}, to=message)
            return None
        if kind == "own-id":
            return {"type": "own", "id": "mine"}
        if kind == "format":
            return {"type": "format", "payload": websocket.scope["wsgate.format"]}
        if kind == "boom":
            raise RuntimeError(f"cannot reach {SECRET_DETAIL}")
        if kind == "unencodable":
            return {"type": "x", "payload": object()}
        if kind == "refuse":
            raise ErrorReply(RATE_LIMITED, "Slow down.", retry_after=1.5)
        if kind == "error":
            await self.error(websocket, INVALID_MESSAGE, "Not like that.", to=message, hint="x")
            return None
        return await super().on_message(websocket, message)


class Calculator(GatedEndpoint):
    """The methods of the examples in section 7 of the JSON-RPC 2.0 specification."""

    protocol = "jsonrpc"

    def message_scope(self, websocket: WebSocket, message: Any) -> Resource:
        return Resource(message.get("method", "response"))

    @rpc_method("subtract")
    async def subtract(self, websocket: WebSocket, params: Any) -> Any:
        if isinstance(params, list) and len(params) == 2:
            return params[0] - params[1]
        if isinstance(params, dict) and {"minuend", "subtrahend"} <= params.keys():
            return params["minuend"] - params["subtrahend"]
        raise InvalidParams("subtract takes [minuend, subtrahend] or an object of both.")

    @rpc_method("update")
    async def update(self, websocket: WebSocket, params: Any) -> None:
        calls.append(("update", params))

    @rpc_method("sum")
    async def sum(self, websocket: WebSocket, params: Any) -> Any:
        return sum(params)

    @rpc_method("notify_hello")
    async def notify_hello(self, websocket: WebSocket, params: Any) -> None:
        calls.append(("notify_hello", params))

    @rpc_method("get_data")
    async def get_data(self, websocket: WebSocket, params: Any) -> Any:
        return ["hello", 5]

    @rpc_method("fail")
    async def fail(self, websocket: WebSocket, params: Any) -> Any:
        raise RuntimeError(f"cannot reach {SECRET_DETAIL}")

    @rpc_method("unencodable")
    async def unencodable(self, websocket: WebSocket, params: Any) -> Any:
        return {"value": object()}

    @rpc_method("watch")
    async def watch(self, websocket: WebSocket, params: Any) -> Any:
        await self.notify(websocket, "progress", {"done": 1})
        await self.notify(websocket, "progress/end")
        return "watching"

    async def on_response(self, websocket: WebSocket, response: dict[str, Any]) -> None:
        calls.append(("response", response))


class Subclass(Calculator):
    @rpc_method("sum")
    async def total(self, websocket: WebSocket, params: Any) -> Any:
        return -sum(params)

    async def get_data(self, websocket: WebSocket, params: Any) -> Any:
        return "overridden"


class Strict(Chat):
    max_consecutive_failures = 2


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    rpc_router = Router([WebSocketRoute("/mismatch", Calculator)])
    app = Starlette(
        routes=[
            WebSocketRoute("/chat", FormatMiddleware(Chat, jsonrpc_endpoint="/rpc")),
            WebSocketRoute("/chat-alone", Chat),
            WebSocketRoute("/strict", FormatMiddleware(Strict)),
            WebSocketRoute("/rpc", FormatMiddleware(Calculator, protocol="jsonrpc")),
            WebSocketRoute("/rpc-alone", Calculator),
            WebSocketRoute("/subclass", Subclass),
            WebSocketRoute("/mismatch", FormatMiddleware(rpc_router)),
        ]
    )
    with LiveServer(app) as live:
        yield live


@pytest.fixture(autouse=True)
def fresh_records() -> None:
    events.clear()
    calls.clear()


# JSON endpoints: replies


@pytest.mark.parametrize("path", ["/chat", "/chat-alone"])
async def test_replies_echo_the_id(server: LiveServer, path: str) -> None:
    async with WSClient(server.ws(path)) as ws:
        await ws.send_json({"type": "echo", "payload": {"n": [1, 2]}, "id": "a"})
        assert await ws.receive_json() == {"type": "echo", "payload": {"n": [1, 2]}, "id": "a"}
        await ws.send_json({"type": "echo", "payload": 1})
        assert await ws.receive_json() == {"type": "echo", "payload": 1}
        await ws.send_json({"type": "twice", "id": 3})
        assert await ws.receive_json() == {"type": "one", "id": 3}
        assert await ws.receive_json() == {"type": "two", "payload": 2, "room": "r", "id": 3}
        await ws.send_json({"type": "own-id", "id": 4})
        assert await ws.receive_json() == {"type": "own", "id": "mine"}
        await ws.send_json({"type": "format"})
        assert await ws.receive_json() == {"type": "format", "payload": "json"}


@pytest.mark.parametrize("path", ["/chat", "/chat-alone"])
async def test_error_frames_from_handlers(server: LiveServer, path: str) -> None:
    async with WSClient(server.ws(path)) as ws:
        await ws.send_json({"type": "no-such-type", "id": 2})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "method_not_found", "message": TEXT},
            "id": 2,
        }
        await ws.send_json({"type": "refuse", "id": 5})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "rate_limited", "message": "Slow down.", "retry_after": 1.5},
            "id": 5,
        }
        await ws.send_json({"type": "error", "id": "e"})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "invalid_message", "message": "Not like that.", "hint": "x"},
            "id": "e",
        }
        await ws.send_json({"type": "echo", "payload": "alive"})
        assert (await ws.receive_json())["payload"] == "alive"


@pytest.mark.parametrize("path", ["/chat", "/chat-alone"])
async def test_legacy_clients_get_legacy_replies_and_errors(server: LiveServer, path: str) -> None:
    async with WSClient(server.ws(path)) as ws:
        await ws.send_json({"event": "echo", "data": {"x": 1}})
        assert await ws.receive_json() == {"event": "echo", "data": {"x": 1}}
        await ws.send_json({"event": "twice", "id": 3})
        assert await ws.receive_json() == {"event": "one", "id": 3}
        assert await ws.receive_json() == {"event": "two", "data": 2, "room": "r", "id": 3}
        await ws.send_json({"event": "format"})
        assert await ws.receive_json() == {"event": "format", "data": "legacy"}
        await ws.send_json({"event": "no-such-event", "id": 4})
        assert await ws.receive_json() == {
            "event": "error",
            "data": {"code": "method_not_found", "message": TEXT},
            "id": 4,
        }
        await ws.send_json({"event": "boom"})
        assert await ws.receive_json() == {
            "event": "error",
            "data": {"code": "internal_error", "message": TEXT},
        }
        await ws.send_text("{")
        assert (await ws.receive_json())["data"]["code"] == "invalid_json"


async def test_the_endpoint_alone_checks_messages_itself(server: LiveServer) -> None:
    async with WSClient(server.ws("/chat-alone")) as ws:
        await ws.send_text("{not json")
        assert (await ws.receive_json())["error"]["code"] == "invalid_json"
        await ws.send_bytes(b"\x00")
        assert (await ws.receive_json())["error"]["code"] == "unsupported_data"
        await ws.send_json({"type": "", "id": 1})
        assert (await ws.receive_json())["error"]["code"] == "invalid_message"
        await ws.send_json({"jsonrpc": "2.0", "method": "echo", "id": 2})
        assert (await ws.receive_json())["error"]["code"] == "wrong_protocol"
        await ws.send_json({"type": "echo", "payload": "alive"})
        assert (await ws.receive_json())["payload"] == "alive"
    assert events == ["open echo", "commit echo"]  # refused messages never reach a handler


# JSON-RPC 2.0, section 7: every example, as written in the specification

SECTION_7: list[tuple[str, str | None]] = [
    # rpc call with positional parameters
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
        '{"jsonrpc": "2.0", "result": 19, "id": 1}',
    ),
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
        '{"jsonrpc": "2.0", "result": -19, "id": 2}',
    ),
    # rpc call with named parameters
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42},'
        ' "id": 3}',
        '{"jsonrpc": "2.0", "result": 19, "id": 3}',
    ),
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23},'
        ' "id": 4}',
        '{"jsonrpc": "2.0", "result": 19, "id": 4}',
    ),
    # a Notification
    ('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}', None),
    ('{"jsonrpc": "2.0", "method": "foobar"}', None),
    # rpc call of non-existent method
    (
        '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
        '{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}',
    ),
    # rpc call with invalid JSON
    (
        '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        '{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}',
    ),
    # rpc call with invalid Request object
    (
        '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
        '{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}',
    ),
    # rpc call Batch, invalid JSON
    (
        """[
          {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
          {"jsonrpc": "2.0", "method"
        ]""",
        '{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}',
    ),
    # rpc call with an empty Array
    (
        "[]",
        '{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}',
    ),
    # rpc call with an invalid Batch (but not empty)
    (
        "[1]",
        '[{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}]',
    ),
    # rpc call with invalid Batch
    (
        "[1,2,3]",
        """[
          {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
          {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
          {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}
        ]""",
    ),
    # rpc call Batch
    (
        """[
          {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
          {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
          {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
          {"foo": "boo"},
          {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
          {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
        ]""",
        """[
          {"jsonrpc": "2.0", "result": 7, "id": "1"},
          {"jsonrpc": "2.0", "result": 19, "id": "2"},
          {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
          {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
          {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
        ]""",
    ),
    # rpc call Batch (all notifications)
    (
        """[
          {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
          {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
        ]""",
        None,
    ),
]

PROBE = {"jsonrpc": "2.0", "method": "get_data", "id": "probe"}
PROBE_ANSWER = {"jsonrpc": "2.0", "result": ["hello", 5], "id": "probe"}


def comparable(response: Any, *, received: bool = True) -> Any:
    """A response with the error's message and data left out, batches sorted.

    The specification's examples show its own short messages; wsgate's are sentences, and
    its ``data`` carries the reason. Everything else must be exactly as written.
    """
    if isinstance(response, list):
        items = (comparable(item, received=received) for item in response)
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if "error" in response:
        error = response["error"]
        if received:
            assert error["message"] == TEXT
            assert isinstance(error["data"]["reason"], str)
        response = {**response, "error": {"code": error["code"]}}
    return response


def expected(response: Any) -> Any:
    """A response from the specification, or written in a test, made comparable."""
    return comparable(response, received=False)


@pytest.mark.parametrize("path", ["/rpc", "/rpc-alone"])
async def test_section_7_examples(server: LiveServer, path: str) -> None:
    async with WSClient(server.ws(path)) as ws:
        for request, answered in SECTION_7:
            await ws.send_text(request)
            if answered is None:
                # Nothing comes back: the next frame is the answer to the probe.
                await ws.send_json(PROBE)
                assert await ws.receive_json() == PROBE_ANSWER, request
                continue
            answer = await ws.receive_json()
            assert isinstance(answer, list) == answered.lstrip().startswith("["), request
            assert comparable(answer) == expected(json.loads(answered)), request
    # The notifications ran, though nobody was told.
    assert calls == [
        ("update", [1, 2, 3, 4, 5]),
        ("notify_hello", [7]),
        ("notify_hello", [7]),
    ]


async def test_invalid_params_and_null_ids(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "method": "subtract", "params": [1], "id": 7})
        assert await ws.receive_json() == {
            "jsonrpc": "2.0",
            "id": 7,
            "error": {
                "code": -32602,
                "message": "subtract takes [minuend, subtrahend] or an object of both.",
                "data": {"reason": "invalid_params"},
            },
        }
        await ws.send_json({"jsonrpc": "2.0", "method": "subtract", "params": [2, 1], "id": None})
        assert await ws.receive_json() == {"jsonrpc": "2.0", "id": None, "result": 1}
        await ws.send_json({"jsonrpc": "2.0", "method": "rpc.discover", "id": 8})
        assert (await ws.receive_json())["error"]["code"] == -32601


async def test_notifications_and_responses_from_the_client(server: LiveServer) -> None:
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "method": "watch", "id": 1})
        assert await ws.receive_json() == {
            "jsonrpc": "2.0",
            "method": "progress",
            "params": {"done": 1},
        }
        assert await ws.receive_json() == {"jsonrpc": "2.0", "method": "progress/end"}
        assert await ws.receive_json() == {"jsonrpc": "2.0", "id": 1, "result": "watching"}
        # The client answers a request the server sent: never answered back.
        response = {"jsonrpc": "2.0", "id": "q1", "result": {"ok": True}}
        await ws.send_json(response)
        await ws.send_json([response, PROBE])
        assert await ws.receive_json() == [PROBE_ANSWER]
        # A batch with rejected entries: the endpoint's responses and the rejections, in one.
        await ws.send_json([PROBE, {"foo": 1}])
        answer = await ws.receive_json()
        assert comparable(answer) == expected(
            [PROBE_ANSWER, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600}}]
        )
    assert calls == [("response", response), ("response", response)]


@pytest.mark.parametrize("path", ["/rpc", "/rpc-alone"])
async def test_ping_is_answered_even_in_a_batch(server: LiveServer, path: str) -> None:
    ping = {"jsonrpc": "2.0", "method": "ping", "id": "a"}
    async with WSClient(server.ws(path)) as ws:
        await ws.send_json(ping)
        assert await ws.receive_json() == {"jsonrpc": "2.0", "id": "a", "result": {}}
        await ws.send_json([ping, {"jsonrpc": "2.0", "method": "ping"}])
        assert await ws.receive_json() == [{"jsonrpc": "2.0", "id": "a", "result": {}}]
    assert events == []  # nothing of the endpoint's ran


async def test_methods_are_inherited_and_overridable(server: LiveServer) -> None:
    assert Subclass.rpc_methods["sum"] == "total"
    assert Subclass.rpc_methods["get_data"] == "get_data"
    async with WSClient(server.ws("/subclass")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": 1})
        assert (await ws.receive_json())["result"] == -3
        await ws.send_json(PROBE)
        assert (await ws.receive_json())["result"] == "overridden"
        await ws.send_json({"jsonrpc": "2.0", "method": "subtract", "params": [3, 2], "id": 2})
        assert (await ws.receive_json())["result"] == 1


# Per-message error isolation

CONNECTION_ID = re.compile(r"on connection [0-9a-f]+-\d+$")


def failures_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    records = [record for record in caplog.records if record.name == "wsgate.endpoint"]
    return [record for record in records if record.levelno == logging.ERROR]


async def test_a_failing_handler_costs_one_message(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="wsgate.endpoint")
    async with WSClient(server.ws("/chat")) as ws:
        await ws.send_json({"type": "boom", "id": 1})
        failed = await ws.receive(timeout=5)
        assert json.loads(failed) == {
            "type": "error",
            "error": {"code": "internal_error", "message": TEXT},
            "id": 1,
        }
        assert "hunter2" not in failed
        assert "RuntimeError" not in failed
        assert "Traceback" not in failed
        await ws.send_json({"type": "unencodable", "id": 2})
        assert (await ws.receive_json())["error"]["code"] == "internal_error"
        await ws.send_json({"type": "echo", "payload": "alive"})
        assert (await ws.receive_json())["payload"] == "alive"
    logged = failures_logged(caplog)
    assert len(logged) == 2
    assert CONNECTION_ID.search(logged[0].getMessage()), logged[0].getMessage()
    assert "'boom'" in logged[0].getMessage()
    assert logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])  # the details are in the server log


async def test_a_failing_method_costs_one_request(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="wsgate.endpoint")
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json({"jsonrpc": "2.0", "method": "fail", "id": 1})
        failed = await ws.receive(timeout=5)
        assert json.loads(failed) == {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32603, "message": TEXT, "data": {"reason": "internal_error"}},
        }
        assert "hunter2" not in failed
        await ws.send_json({"jsonrpc": "2.0", "method": "unencodable", "id": 2})
        assert (await ws.receive_json())["error"]["code"] == -32603
        # A failing notification is logged, not answered.
        await ws.send_json({"jsonrpc": "2.0", "method": "fail"})
        # In a batch, the failure is one entry's error; the others get their results.
        await ws.send_json([{"jsonrpc": "2.0", "method": "fail", "id": "f"}, PROBE])
        answer = await ws.receive_json()
        assert comparable(answer) == expected(
            [PROBE_ANSWER, {"jsonrpc": "2.0", "id": "f", "error": {"code": -32603}}]
        )
    logged = failures_logged(caplog)
    assert len(logged) == 4
    assert all(CONNECTION_ID.search(record.getMessage()) for record in logged)
    assert "method 'fail'" in logged[0].getMessage()


@pytest.mark.parametrize("path", ["/chat", "/chat-alone"])
async def test_consecutive_failures_close_the_connection(
    server: LiveServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.CRITICAL, logger="wsgate.endpoint")
    async with WSClient(server.ws(path)) as ws:
        for n in range(4):
            await ws.send_json({"type": "boom", "id": n})
            assert (await ws.receive_json())["error"]["code"] == "internal_error"
        # A success resets the count.
        await ws.send_json({"type": "echo", "payload": "ok"})
        assert (await ws.receive_json())["payload"] == "ok"
        for n in range(4):
            await ws.send_json({"type": "boom", "id": n})
            assert (await ws.receive_json())["error"]["code"] == "internal_error"
        # So does an error the handler chose to send.
        await ws.send_json({"type": "refuse"})
        assert (await ws.receive_json())["error"]["code"] == "rate_limited"
        for n in range(5):
            await ws.send_json({"type": "boom", "id": n})
        for _ in range(5):
            assert (await ws.receive_json())["error"]["code"] == "internal_error"
        assert await ws.wait_closed() == (1011, "internal_error")


async def test_max_consecutive_failures_is_a_class_attribute(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="wsgate.endpoint")
    async with WSClient(server.ws("/strict")) as ws:
        await ws.send_json({"type": "boom"})
        await ws.send_json({"type": "boom"})
        await ws.send_json({"type": "echo"})  # never handled: the connection closes first
        assert await ws.wait_closed() == (1011, "internal_error")
        received = [frame.json() for frame in ws.history if frame.direction == "received"]
        assert [frame["error"]["code"] for frame in received] == ["internal_error"] * 2
    assert events == ["open boom", "rollback RuntimeError"] * 2


async def test_a_failing_batch_closes_after_answering(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="wsgate.endpoint")
    async with WSClient(server.ws("/rpc")) as ws:
        batch = [{"jsonrpc": "2.0", "method": "fail", "id": n} for n in range(8)]
        await ws.send_json(batch)
        answer = await ws.receive_json()
        # The handler is not called again once the limit is reached.
        assert [response["id"] for response in answer] == [0, 1, 2, 3, 4]
        assert await ws.wait_closed() == (1011, "internal_error")
    assert events.count("open fail") == 5


# The per-message resource


async def test_the_message_scope_commits_or_rolls_back(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="wsgate.endpoint")
    async with WSClient(server.ws("/chat")) as ws:
        await ws.send_json({"type": "echo"})
        await ws.receive_json()
        assert events == ["open echo", "commit echo"]
        events.clear()
        await ws.send_json({"type": "boom"})
        await ws.receive_json()
        assert events == ["open boom", "rollback RuntimeError"]
        events.clear()
        await ws.send_json({"type": "refuse"})
        await ws.receive_json()
        assert events == ["open refuse", "rollback ErrorReply"]
        events.clear()
        await ws.send_json({"type": "no-such-type"})
        await ws.receive_json()
        assert events == ["open no-such-type", "rollback ErrorReply"]


async def test_each_request_of_a_batch_has_its_own_scope(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="wsgate.endpoint")
    async with WSClient(server.ws("/rpc")) as ws:
        await ws.send_json(
            [
                {"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": 1},
                {"jsonrpc": "2.0", "method": "fail", "id": 2},
                {"jsonrpc": "2.0", "method": "subtract", "params": "x", "id": 3},
                {"jsonrpc": "2.0", "method": "subtract", "params": [1], "id": 4},
                {"jsonrpc": "2.0", "method": "no-such-method", "id": 5},
                {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
            ]
        )
        answer = await ws.receive_json()
        assert {response["id"] for response in answer} == {1, 2, 3, 4, 5}
    assert events == [
        "open sum",
        "commit sum",
        "open fail",
        "rollback RuntimeError",
        "open subtract",  # the request with params [1]: "x" never reached the method
        "rollback InvalidParams",
        "open notify_hello",
        "commit notify_hello",
    ]


# Configuration


async def test_a_protocol_mismatch_fails_loudly(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    with pytest.raises(HandshakeRejected) as rejected:
        await WSClient(server.ws("/mismatch")).connect()
    assert rejected.value.status == 500
    raised = [record.exc_info[1] for record in caplog.records if record.exc_info]
    assert any(isinstance(exc, ConfigurationError) for exc in raised)
    assert "Calculator speaks 'jsonrpc'" in str(raised[-1])


def test_class_definition_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"reserved by JSON-RPC 2\.0"):
        rpc_method("rpc.discover")
    with pytest.raises(ConfigurationError, match="non-empty string"):
        rpc_method("")
    with pytest.raises(ConfigurationError, match="must be an async def"):

        @rpc_method("sync")  # type: ignore[type-var]
        def sync(self: Any, websocket: WebSocket, params: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="registers the JSON-RPC method 'm' twice"):

        class Twice(GatedEndpoint):
            protocol = "jsonrpc"

            @rpc_method("m")
            async def one(self, websocket: WebSocket, params: Any) -> None: ...

            @rpc_method("m")
            async def two(self, websocket: WebSocket, params: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="set protocol = 'jsonrpc'"):

        class Forgot(GatedEndpoint):
            @rpc_method("m")
            async def one(self, websocket: WebSocket, params: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"Bad\.protocol must be one of"):

        class Bad(GatedEndpoint):
            protocol = "xml"  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match=r"Zero\.max_consecutive_failures must be"):

        class Zero(GatedEndpoint):
            max_consecutive_failures = 0
