"""The error-frame table: every way wsgate answers a message it will not pass on.

A refused *message* does not end the connection (that is :mod:`wsgate.close_codes`' job). The
client gets one error frame and the connection stays open. The frame has one content and
three shapes, chosen by the connection's format:

* JSON endpoints::

      {"type": "error", "error": {"code": "rate_limited", "message": "...", "retry_after": 2.0},
       "id": 7}

* legacy clients (``{"event": ..., "data": ...}``)::

      {"event": "error", "data": {"code": "rate_limited", "message": "...", "retry_after": 2.0},
       "id": 7}

* JSON-RPC 2.0 endpoints::

      {"jsonrpc": "2.0", "id": 7, "error": {"code": -32002, "message": "...",
       "data": {"reason": "rate_limited", "retry_after": 2.0}}}

``id`` is the offending message's own ``id`` when it had a valid one (JSON-RPC always carries
the key, ``null`` when unknown). A frame never contains a traceback, a secret or the offending
payload: ``message`` is written by wsgate, and ``extra`` holds only numbers and names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from wsgate._choices import Protocol

__all__ = [
    "AUTH_UNAVAILABLE",
    "BATCH_TOO_LARGE",
    "INTERNAL_ERROR",
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "INVALID_PARAMS",
    "MESSAGE_ERRORS",
    "MESSAGE_TOO_LARGE",
    "METHOD_NOT_FOUND",
    "RATE_LIMITED",
    "UNSUPPORTED_DATA",
    "WRONG_PROTOCOL",
    "MessageError",
    "Protocol",
    "error_frame",
]


@dataclass(frozen=True)
class MessageError:
    """One row of the error-frame table.

    Attributes:
        code: The snake_case code JSON and legacy clients get, and ``data.reason`` on JSON-RPC.
        jsonrpc_code: The JSON-RPC 2.0 error code: the spec's own for parse, request, method,
            params and internal errors; -32000..-32099 for wsgate's refusals.
        description: When it is sent, in one sentence, for docs and ``/ws/config``.
    """

    code: str
    jsonrpc_code: int
    description: str


INVALID_JSON = MessageError(
    "invalid_json",
    -32700,
    "The text frame is not valid JSON (NaN, Infinity, lone surrogates and nesting deeper than "
    "1024 levels included).",
)
INVALID_MESSAGE = MessageError(
    "invalid_message", -32600, "Valid JSON of the wrong shape; the message says what is wrong."
)
WRONG_PROTOCOL = MessageError(
    "wrong_protocol",
    -32600,
    "A JSON-RPC request on a JSON endpoint, or a plain JSON message on a JSON-RPC endpoint; "
    "the message names the right endpoint.",
)
UNSUPPORTED_DATA = MessageError(
    "unsupported_data", -32003, "A binary frame on an endpoint that speaks JSON text."
)
BATCH_TOO_LARGE = MessageError(
    "batch_too_large", -32004, "A JSON-RPC batch with more requests than the endpoint allows."
)
MESSAGE_TOO_LARGE = MessageError(
    "message_too_large", -32001, "The message is larger than the size limit; it was dropped."
)
RATE_LIMITED = MessageError(
    "rate_limited",
    -32002,
    "Over the rate limit: the message was dropped. retry_after says when to send again.",
)
METHOD_NOT_FOUND = MessageError(
    "method_not_found", -32601, "The JSON-RPC method (or message type) has no handler."
)
INVALID_PARAMS = MessageError(
    "invalid_params", -32602, "The handler refused the message's parameters."
)
AUTH_UNAVAILABLE = MessageError(
    "auth_unavailable",
    -32005,
    "The auth service could not check a refreshed token; the connection keeps its current "
    "token. Retry the refresh later.",
)
INTERNAL_ERROR = MessageError(
    "internal_error",
    -32603,
    "The handler failed on this message (the server logged why); the connection stays open.",
)

MESSAGE_ERRORS: tuple[MessageError, ...] = (
    INVALID_JSON,
    INVALID_MESSAGE,
    WRONG_PROTOCOL,
    UNSUPPORTED_DATA,
    BATCH_TOO_LARGE,
    MESSAGE_TOO_LARGE,
    RATE_LIMITED,
    METHOD_NOT_FOUND,
    INVALID_PARAMS,
    AUTH_UNAVAILABLE,
    INTERNAL_ERROR,
)


def error_object(
    error: MessageError,
    message: str,
    *,
    protocol: Protocol = "json",
    legacy: bool = False,
    message_id: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The error frame as a dict, in the connection's shape (see the module docstring)."""
    if protocol == "jsonrpc":
        data: dict[str, Any] = {"reason": error.code}
        if extra:
            data.update(extra)
        return {
            "jsonrpc": "2.0",
            "id": message_id,
            "error": {"code": error.jsonrpc_code, "message": message, "data": data},
        }
    body: dict[str, Any] = {"code": error.code, "message": message}
    if extra:
        body.update(extra)
    frame: dict[str, Any] = (
        {"event": "error", "data": body}
        if legacy
        else {
            "type": "error",
            "error": body,
        }
    )
    if message_id is not None:
        frame["id"] = message_id
    return frame


def error_frame(
    error: MessageError,
    message: str,
    *,
    protocol: Protocol = "json",
    legacy: bool = False,
    message_id: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The error frame as JSON text, ready for a ``websocket.send`` message."""
    frame = error_object(
        error, message, protocol=protocol, legacy=legacy, message_id=message_id, extra=extra
    )
    return orjson.dumps(frame).decode()
