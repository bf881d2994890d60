"""FormatMiddleware: detect, check and parse each client message once, before the app.

An endpoint speaks one of two protocols. A JSON endpoint takes objects
``{"type": "<name>", "payload": <any>, "id": <string or integer>}``, and recognises the legacy
shape ``{"event": "<name>", "data": <any>}``, which it rewrites to the first before the app
sees it. A JSON-RPC endpoint takes JSON-RPC 2.0 requests, notifications and batches.

A message that is not what the endpoint speaks never reaches the app: the client gets an
error frame from :mod:`wsgate.error_frames` in its own shape, and the connection stays open.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Coroutine
from typing import Any, Final

import orjson
from starlette.types import ASGIApp, Message, Scope

from wsgate import _options
from wsgate._choices import PROTOCOLS
from wsgate.connection import (
    INVALID,
    NOT_TEXT,
    PARSED_KEY,
    REJECTED_KEY,
    UNPARSED,
    Connection,
    decoded,
    message_id,
)
from wsgate.engine import DROP, CheckMiddleware, Verdict
from wsgate.error_frames import (
    BATCH_TOO_LARGE,
    INVALID_JSON,
    INVALID_MESSAGE,
    UNSUPPORTED_DATA,
    WRONG_PROTOCOL,
    MessageError,
    Protocol,
)
from wsgate.exceptions import ConfigurationError

__all__ = ["FORMAT_KEY", "REJECTED_KEY", "FormatMiddleware"]

FORMAT_KEY: Final = "wsgate.format"
"""The scope key holding the connection's format: ``"json"``, ``"legacy"`` or ``"jsonrpc"``."""


_NOT_JSON: Final = (
    "The text frame is not valid JSON. NaN, Infinity, lone surrogates and nesting deeper than "
    "1024 levels are not accepted either."
)
_BINARY: Final = "This endpoint reads JSON in text frames; send the message as text, not binary."
_JSON_SHAPE: Final = (
    'Send an object {"type": "<name>", "payload": <any JSON>, "id": <string or integer>}; '
    'only "type" is required.'
)
_LEGACY_SHAPE: Final = (
    'A legacy message is an object {"event": "<name>", "data": <any JSON>, '
    '"id": <string or integer>}; only "event" is required.'
)
_RPC_SHAPE: Final = (
    'A JSON-RPC 2.0 request is an object {"jsonrpc": "2.0", "method": "<name>", '
    '"params": <array or object>, "id": <string, integer or null>}; "params" may be left out, '
    'and a notification has no "id". A batch is an array of requests.'
)
_REQUEST_ERRORS: Final = frozenset({INVALID_MESSAGE, WRONG_PROTOCOL})
"""The errors whose JSON-RPC frames carry ``data.detail``: the shape of a valid request."""

_ID_TYPES: Final = (str, int)
"""The types of a valid message ``id``; a boolean is neither (``type(True)`` is ``bool``)."""

Problem = tuple[MessageError, str]


class FormatMiddleware(CheckMiddleware):
    """Pass the app only messages of the endpoint's format, parsed once.

    Each ``websocket.receive`` message is parsed with :func:`wsgate.connection.decoded`; the
    parsed value stays in the message, so the app (a :class:`~wsgate.GatedEndpoint`, or any
    code that calls ``decoded(message)``) does not parse it again. A message the endpoint
    cannot take is answered with an error frame (``invalid_json``, ``invalid_message``,
    ``wrong_protocol``, ``unsupported_data``, ``batch_too_large``) carrying the message's
    ``id`` when it had a valid one; the app never sees it and the connection stays open.

    At the start of each connection the middleware sets ``connection.protocol``, and
    ``scope["wsgate.format"]`` to ``"json"`` or ``"jsonrpc"``. On a JSON endpoint, a legacy
    message ``{"event": ..., "data": ...}`` is rewritten to ``{"type": ..., "payload": ...}``
    (in the parsed value and in ``message["text"]``), the connection is marked legacy so that
    errors take the legacy shape, and ``scope["wsgate.format"]`` becomes ``"legacy"``.

    On a JSON-RPC endpoint, the invalid entries of a batch are answered for the app: their
    error objects are left in ``message["wsgate.rejected"]``, and the parsed value holds only
    the valid entries. A batch with no valid entry is answered here, with an array of errors.

    Args:
        app: The ASGI app to protect.
        protocol: ``"json"`` (the default) or ``"jsonrpc"``.
        legacy: On a JSON endpoint, accept the legacy ``{"event", "data"}`` shape.
        max_batch: The most requests a JSON-RPC batch may hold; a larger one is answered
            with one ``batch_too_large`` error.
        max_depth: The deepest nesting of arrays and objects a message may have, from 1 to
            128 (``[[1]]`` is 2 deep). A deeper one is answered with one ``invalid_message``
            error that names the limit. What the gate lets through, wsgate's JSON writer
            (orjson, which stops at 254 levels) can write back, in a legacy rewrite, an
            echo or a reply that wraps the message.
        json_endpoint: The path of the server's JSON endpoint, named in the error a JSON-RPC
            endpoint sends for a plain JSON message, e.g. ``"/ws"``.
        jsonrpc_endpoint: The path of the server's JSON-RPC endpoint, named in the error a
            JSON endpoint sends for a JSON-RPC request, e.g. ``"/ws/mcp"``.
    """

    error_frames = (
        INVALID_JSON,
        INVALID_MESSAGE,
        WRONG_PROTOCOL,
        UNSUPPORTED_DATA,
        BATCH_TOO_LARGE,
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        protocol: Protocol = "json",
        legacy: bool = True,
        max_batch: int = 50,
        max_depth: int = 64,
        json_endpoint: str | None = None,
        jsonrpc_endpoint: str | None = None,
    ) -> None:
        checked = _options.choice("protocol", protocol, PROTOCOLS)
        self.protocol: Protocol = "jsonrpc" if checked == "jsonrpc" else "json"
        declared = getattr(app, "protocol", None)
        if isinstance(app, type) and declared in PROTOCOLS and declared != self.protocol:
            raise ConfigurationError(
                f"{app.__name__} speaks {declared!r}, but the FormatMiddleware in front of it "
                f"was given protocol={protocol!r}; pass protocol={declared!r}."
            )
        if not isinstance(legacy, bool):
            raise ConfigurationError(f"legacy must be True or False, not {legacy!r}.")
        self.legacy = legacy
        self.max_batch = _options.count("max_batch", max_batch)
        self.max_depth = _options.depth("max_depth", max_depth)
        # A text shorter than this cannot nest deeper than max_depth: "[" * n + "]" * n.
        self._shallow = 2 * (self.max_depth + 1)
        self.too_deep = (
            f"The message nests arrays and objects more than {self.max_depth} levels deep; "
            f"this endpoint accepts at most {self.max_depth}."
        )
        self.json_endpoint = _path("json_endpoint", json_endpoint)
        self.jsonrpc_endpoint = _path("jsonrpc_endpoint", jsonrpc_endpoint)
        self.json_wrong_protocol = (
            'This endpoint speaks plain JSON messages {"type": ...}, not JSON-RPC; send '
            + (
                f"JSON-RPC requests to {jsonrpc_endpoint}."
                if jsonrpc_endpoint
                else "JSON-RPC requests to the server's JSON-RPC endpoint."
            )
        )
        self.rpc_wrong_protocol = "This endpoint speaks JSON-RPC 2.0; send " + (
            f'plain JSON messages {{"type": ...}} to {json_endpoint}.'
            if json_endpoint
            else 'plain JSON messages {"type": ...} to the server\'s JSON endpoint.'
        )
        self._alone(app)

    # The hooks, in the order a connection meets them.

    def open(self, connection: Connection) -> Connection:
        """Record the endpoint's format for a new connection."""
        self.start(connection, connection.scope)
        return connection

    def start(self, connection: Connection, scope: Scope) -> None:
        """Record the endpoint's format for a new connection, before any message flows."""
        connection.protocol = self.protocol
        scope[FORMAT_KEY] = self.protocol

    def message(self, state: Connection, message: Message) -> Awaitable[Verdict] | None:
        """Check one ``websocket.receive`` message, at once: None to pass it on; else the
        answer to await, an error frame, and the message goes no further."""
        connection = state
        # The heartbeat has parsed it already, in the gate: found in line, without a call.
        value = message.get(PARSED_KEY, UNPARSED)
        if value is UNPARSED:
            value = decoded(message)
        text = message.get("text")
        # Counting brackets is C-fast and rules out almost every message; strings holding
        # brackets only cost the walk, never a wrong answer.
        if (
            text is not None
            and len(text) >= self._shallow
            and text.count("[") + text.count("{") > self.max_depth
            and self._too_deep(value)
        ):
            if self._is_legacy(value):
                self._speaks_legacy(connection, connection.scope)  # in the client's shape
            return _quietly(
                connection.send_error(
                    INVALID_MESSAGE,
                    self.too_deep,
                    to=message_id(value),
                    max_depth=self.max_depth,
                )
            )
        if self.protocol == "json":
            if type(value) is dict:
                # The common case at once: {"type": "<name>", ...} with a valid "id" or none.
                kind = value.get("type")
                if (
                    type(kind) is str
                    and kind
                    and type(value.get("id", "")) in _ID_TYPES
                    and "jsonrpc" not in value
                ):
                    return None
            problem = self._json_problem(connection, connection.scope, message, value)
        elif isinstance(value, list):
            return self._check_batch(connection, message, value)
        else:
            problem = self._rpc_problem(value, in_batch=False)
        if problem is None:
            return None
        error, text = problem
        extra: dict[str, Any] = {"detail": _RPC_SHAPE} if self._with_detail(error) else {}
        return _quietly(connection.send_error(error, text, to=message_id(value), **extra))

    async def admit(self, connection: Connection, scope: Scope, message: Message) -> bool:
        """Check one ``websocket.receive`` message: True to pass it on, False when it was
        answered with an error here."""
        answer = self.message(connection, message)
        if answer is None:
            return True
        await answer
        return False

    # JSON

    def _json_problem(
        self, connection: Connection, scope: Scope, message: Message, value: Any
    ) -> Problem | None:
        if not isinstance(value, dict):
            if value is NOT_TEXT:
                return UNSUPPORTED_DATA, _BINARY
            if value is INVALID:
                return INVALID_JSON, _NOT_JSON
            return (
                INVALID_MESSAGE,
                f"The message is {_described(value)}, not an object. {_JSON_SHAPE}",
            )
        if "jsonrpc" in value:
            return WRONG_PROTOCOL, self.json_wrong_protocol
        if "type" not in value:
            if "event" in value and self.legacy:
                return self._normalise_legacy(connection, scope, message, value)
            if "event" in value:
                return INVALID_MESSAGE, (
                    'The message has no "type"; this endpoint does not accept legacy '
                    f'{{"event", "data"}} messages. {_JSON_SHAPE}'
                )
            return INVALID_MESSAGE, f'The message has no "type". {_JSON_SHAPE}'
        kind = value["type"]
        if not isinstance(kind, str) or not kind:
            return INVALID_MESSAGE, (
                f'"type" must be a non-empty string, not {_described(kind)}. {_JSON_SHAPE}'
            )
        return _id_problem(value, _JSON_SHAPE)

    def _normalise_legacy(
        self, connection: Connection, scope: Scope, message: Message, value: dict[str, Any]
    ) -> Problem | None:
        self._speaks_legacy(connection, scope)
        event = value["event"]
        if not isinstance(event, str) or not event:
            return INVALID_MESSAGE, (
                f'"event" must be a non-empty string, not {_described(event)}. {_LEGACY_SHAPE}'
            )
        problem = _id_problem(value, _LEGACY_SHAPE)
        if problem is not None:
            return problem
        normal: dict[str, Any] = {"type": event}
        if "data" in value:
            normal["payload"] = value["data"]
        for key, item in value.items():
            if key != "event" and key != "data":
                normal.setdefault(key, item)
        message[PARSED_KEY] = normal
        message["text"] = orjson.dumps(normal).decode()
        return None

    # JSON-RPC 2.0

    def _check_batch(
        self, connection: Connection, message: Message, batch: list[Any]
    ) -> Awaitable[Verdict] | None:
        if not batch:
            return _quietly(
                connection.send_error(
                    INVALID_MESSAGE,
                    "The batch is empty; send at least one request.",
                    detail=_RPC_SHAPE,
                )
            )
        if len(batch) > self.max_batch:
            return _quietly(
                connection.send_error(
                    BATCH_TOO_LARGE,
                    f"A batch may hold at most {self.max_batch} requests and this one holds "
                    f"{len(batch)}; split it into smaller batches.",
                    limit=self.max_batch,
                )
            )
        valid: list[Any] = []
        # The rate limit may have answered the batch's last requests already.
        rejected: list[dict[str, Any]] = list(message.get(REJECTED_KEY, ()))
        for entry in batch:
            problem = self._rpc_problem(entry, in_batch=True)
            if problem is None:
                valid.append(entry)
                continue
            error, text = problem
            extra: dict[str, Any] = {"detail": _RPC_SHAPE} if self._with_detail(error) else {}
            rejected.append(connection.error_object(error, text, to=message_id(entry), **extra))
        if not valid:
            return _quietly(connection.send_text(orjson.dumps(rejected).decode()))
        if rejected:
            message[PARSED_KEY] = valid
            message[REJECTED_KEY] = rejected
        return None

    def _rpc_problem(self, value: Any, *, in_batch: bool) -> Problem | None:
        if not isinstance(value, dict):
            if value is NOT_TEXT:
                return UNSUPPORTED_DATA, _BINARY
            if value is INVALID:
                return INVALID_JSON, _NOT_JSON
            if in_batch:
                return INVALID_MESSAGE, f"A batch entry is {_described(value)}, not a request."
            return INVALID_MESSAGE, (
                f"The message is {_described(value)}, not a request (an object) or a batch "
                "(an array of requests)."
            )
        if "jsonrpc" not in value:
            if "type" in value or "event" in value:
                return WRONG_PROTOCOL, self.rpc_wrong_protocol
            return INVALID_MESSAGE, 'The request has no "jsonrpc": "2.0" member.'
        if value["jsonrpc"] != "2.0":
            return INVALID_MESSAGE, '"jsonrpc" must be exactly the string "2.0".'
        if "id" in value:
            request_id = value["id"]
            if request_id is not None and message_id(value) is None:
                return INVALID_MESSAGE, (
                    f'"id" must be a string, an integer or null, not {_described(request_id)}.'
                )
        if "method" in value:
            method = value["method"]
            if not isinstance(method, str):
                return INVALID_MESSAGE, f'"method" must be a string, not {_described(method)}.'
            if "params" in value and not isinstance(value["params"], (list, dict)):
                return INVALID_MESSAGE, (
                    f'"params" must be an array or an object, not {_described(value["params"])}.'
                )
            return None
        if "result" in value or "error" in value:
            # A response to a request the server sent: the app takes it.
            if "id" not in value:
                return INVALID_MESSAGE, 'A response needs the "id" of the request it answers.'
            if "result" in value and "error" in value:
                return INVALID_MESSAGE, 'A response has "result" or "error", not both.'
            return None
        return INVALID_MESSAGE, 'The request has no "method".'

    def _is_legacy(self, value: Any) -> bool:
        return (
            self.protocol == "json"
            and self.legacy
            and type(value) is dict
            and "event" in value
            and "type" not in value
        )

    @staticmethod
    def _speaks_legacy(connection: Connection, scope: Scope) -> None:
        """The client speaks the legacy shape: so do its errors, from here on."""
        connection.legacy = True
        scope[FORMAT_KEY] = "legacy"

    def _too_deep(self, value: Any) -> bool:
        """Whether ``value`` nests deeper than ``max_depth``."""
        limit = self.max_depth
        if type(value) is not dict and type(value) is not list:
            return False  # a scalar, or text that is not JSON at all
        pending: list[tuple[Any, int]] = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            if depth > limit:
                return True
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    pending.append((child, depth + 1))
        return False

    def _with_detail(self, error: MessageError) -> bool:
        return self.protocol == "jsonrpc" and error in _REQUEST_ERRORS


async def _quietly(answer: Coroutine[Any, Any, None]) -> Verdict:
    """Send an answer to a client that may have left (its next receive says so); the message
    it answers goes no further."""
    with contextlib.suppress(OSError):
        await answer
    return DROP


def _id_problem(value: dict[str, Any], shape: str) -> Problem | None:
    if "id" in value and message_id(value) is None:
        return INVALID_MESSAGE, (
            f'"id" must be a string or an integer, not {_described(value["id"])}. {shape}'
        )
    return None


def _described(value: Any) -> str:
    """What kind of JSON value ``value`` is, for an error message; never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number with a fraction or an exponent"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _path(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    raise ConfigurationError(f"{name} must be the endpoint's path, such as '/ws', not {value!r}.")
