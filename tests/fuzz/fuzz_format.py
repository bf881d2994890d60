"""Fuzz target: format detection and JSON / JSON-RPC validation (``FormatMiddleware``).

Each input is one client message (a text frame, or a binary one) on a JSON endpoint (legacy
messages allowed or not) or a JSON-RPC endpoint, checked by ``FormatMiddleware.admit``, the
entry point the middleware runs for every message. The harness is in process: a connection
whose ``send`` records frames, and no socket, since fuzzing over sockets is too slow.

The documented outcomes: the message passes to the app, parsed, in a shape the endpoint
takes (and nothing is sent); or it is answered with exactly one error frame from the
error-frame table, in the client's shape, and never reaches the app. An error frame never
repeats the message's content other than its ``id``. What passes, wsgate's own JSON writer
can write back, wrapped in a reply envelope (the serializer round trip). Anything else, an
exception included, is a crash.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.fuzz._input import Input
from wsgate.connection import PARSED_KEY, Connection
from wsgate.error_frames import MESSAGE_ERRORS
from wsgate.middleware.format import REJECTED_KEY, FormatMiddleware

MIDDLEWARES = [
    FormatMiddleware(None, protocol="json"),  # type: ignore[arg-type]  # admit() only
    FormatMiddleware(None, protocol="json", legacy=False),  # type: ignore[arg-type]
    FormatMiddleware(None, protocol="jsonrpc", max_batch=4),  # type: ignore[arg-type]
    FormatMiddleware(None, protocol="json", max_depth=3),  # type: ignore[arg-type]
    FormatMiddleware(None, protocol="jsonrpc", max_depth=128),  # type: ignore[arg-type]
]
CODES = {error.code for error in MESSAGE_ERRORS}
RPC_CODES = {error.jsonrpc_code for error in MESSAGE_ERRORS}
MARKER = "S3CR3T"
"""Seeds put this in messages; no error frame may carry it, except inside an ``id``."""
# Pieces the fuzzer splices into messages, to reach deep shapes quickly.
PIECES = [
    b'{"type":',
    b'{"event":',
    b'{"jsonrpc":"2.0",',
    b'"method":',
    b'"params":',
    b'"id":',
    b'"data":',
    b'"payload":',
    b'"result":',
    b'"error":',
    b'"S3CR3T"',
    b"[",
    b"]",
    b"[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]",
    b"{",
    b"}",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"18446744073709551616",
    b'"\\ud800"',
    b"NaN",
]


def _message(given: Input) -> dict[str, Any]:
    if given.byte() % 8 == 0:
        return {"type": "websocket.receive", "bytes": given.raw(64)}
    if given.flag():
        raw = given.raw(400)
    else:
        raw = b"".join(
            given.choice(PIECES) if given.flag() else given.raw(8) for _ in range(given.number(24))
        )
    return {"type": "websocket.receive", "text": raw.decode("utf-8", "replace")}


def _drive(middleware: FormatMiddleware, message: dict[str, Any]) -> tuple[bool, list[Any]]:
    """Run ``admit`` to completion; nothing in it waits, since ``send`` never does."""
    sent: list[Any] = []

    async def send(outgoing: Any) -> None:
        sent.append(outgoing)

    scope: dict[str, Any] = {"type": "websocket", "path": "/"}
    connection, _ = Connection.of(scope, send)
    connection.accepted = True
    middleware.start(connection, scope)
    step = middleware.admit(connection, scope, message)
    try:
        step.send(None)
    except StopIteration as done:
        return done.value, sent
    raise AssertionError("admit() waited on something")


def _check_error(frame: Any, rpc: bool) -> None:
    if rpc:
        assert isinstance(frame, dict), frame
        assert frame.get("jsonrpc") == "2.0", frame
        assert "id" in frame
        assert frame["id"] is None or isinstance(frame["id"], (str, int))
        error = frame["error"]
        assert error["code"] in RPC_CODES, frame
        assert isinstance(error["message"], str), frame
        assert error["data"]["reason"] in CODES, frame
    else:
        body = frame["error"] if "type" in frame else frame["data"]
        assert frame.get("type", frame.get("event")) == "error", frame
        assert body["code"] in CODES, frame
        assert isinstance(body["message"], str), frame
        assert "id" not in frame or isinstance(frame["id"], (str, int)), frame
    without_id = {key: value for key, value in frame.items() if key != "id"}
    assert MARKER not in orjson.dumps(without_id).decode(), frame


def check(data: bytes) -> None:
    given = Input(data)
    middleware = given.choice(MIDDLEWARES)
    rpc = middleware.protocol == "jsonrpc"
    message = _message(given)
    original_text = message.get("text")

    admitted, sent = _drive(middleware, message)

    if not admitted:
        assert len(sent) == 1, sent
        assert sent[0]["type"] == "websocket.send", sent
        frame = orjson.loads(sent[0]["text"])
        for one in frame if isinstance(frame, list) else [frame]:
            _check_error(one, rpc)
        return
    assert sent == [], sent
    value = message[PARSED_KEY]
    # The serializer round trip: an echo, or a reply that wraps the message twice more.
    assert orjson.loads(orjson.dumps({"type": "reply", "payload": [value]})) == {
        "type": "reply",
        "payload": [value],
    }
    if not rpc:
        assert isinstance(value, dict), value
        assert isinstance(value.get("type"), str), value
        assert value["type"], value
        assert "id" not in value or isinstance(value["id"], (str, int)), value
        assert "jsonrpc" not in value, value
        if message["text"] != original_text:  # a legacy message, rewritten for the app
            assert middleware.legacy
            assert orjson.loads(message["text"]) == value
        return
    entries = value if isinstance(value, list) else [value]
    assert entries, value
    assert len(entries) <= middleware.max_batch, value
    for entry in entries:
        assert isinstance(entry, dict), entry
        assert entry.get("jsonrpc") == "2.0", entry
        assert ("method" in entry and isinstance(entry["method"], str)) or (
            "id" in entry and ("result" in entry) != ("error" in entry)
        ), entry
    for rejected in message.get(REJECTED_KEY, []):
        _check_error(rejected, rpc=True)


if __name__ == "__main__":
    from tests.fuzz._atheris import fuzz

    fuzz(check)
