"""The close-code table: every way wsgate refuses a connection, in one place.

A refusal happens at one of two moments:

* **before accept** the handshake is answered with an HTTP status. When the server offers the
  ASGI ``websocket.http.response`` extension the body is JSON ``{"error": "<reason>"}``;
  otherwise the server answers 403 with an empty body.
* **after accept** the connection is accepted and closed at once with a close code and a
  reason. Browsers hide the HTTP status of a refused handshake (JavaScript only sees 1006),
  so refusals a client must be able to read are sent this way.

Middlewares never build close frames or denial responses themselves: they call
:func:`refuse` (during the handshake) or :func:`close_message` (on an open connection).

Some servers cannot send every row as the table says. daphne 4.2 speaks the ASGI websocket
spec 2.0 (it announces no ``spec_version``): it drops every close reason, and its protocol
layer (autobahn) refuses any close code but 1000 and 3000-4999. On such a server a
close from the table is sent as :data:`SERVER_DIFFERENCES` says: the code mapped into 4100-4199
(1008 is sent as 4108), after an error frame ``{"type": "error", "error": {"code": <reason>,
...}}`` that carries the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from wsgate._query import redact_query

__all__ = [
    "AUTH_REQUIRED",
    "AUTH_UNAVAILABLE",
    "BACKEND_UNAVAILABLE",
    "CLOSE_CODES",
    "CONNECTION_LIMIT",
    "CONNECT_RATE_LIMITED",
    "HEARTBEAT_TIMEOUT",
    "IDLE_TIMEOUT",
    "INTERNAL_ERROR",
    "INVALID_TOKEN",
    "MAX_LIFETIME",
    "MESSAGE_TOO_LARGE",
    "ORIGIN_NOT_ALLOWED",
    "RATE_LIMIT_ABUSE",
    "REVOKED",
    "SERVER_DIFFERENCES",
    "SLOW_CONSUMER",
    "SUBPROTOCOL_REQUIRED",
    "TOKEN_EXPIRED",
    "USER_MISMATCH",
    "WORKER_BUSY",
    "WORKER_CONNECT_RATE_LIMITED",
    "Refusal",
    "close_message",
    "reason_frame",
    "refuse",
]

DENIAL_EXTENSION = "websocket.http.response"


@dataclass(frozen=True)
class Refusal:
    """One row of the close-code table.

    Attributes:
        reason: The snake_case word the client receives as close reason or JSON error.
        close_code: The WebSocket close code used when refusing after accept.
        http_status: The HTTP status used when refusing before accept, or None for the
            rows that only ever end an open connection.
        handshake_only: True when the refusal can only happen before accept.
        description: When it happens, in one sentence, for docs and ``/ws/config``.
    """

    reason: str
    close_code: int
    http_status: int | None
    handshake_only: bool
    description: str


ORIGIN_NOT_ALLOWED = Refusal(
    "origin_not_allowed", 1008, 403, True, "The Origin header is not on the allow-list."
)
SUBPROTOCOL_REQUIRED = Refusal(
    "subprotocol_required",
    1002,
    400,
    True,
    "The token came in Sec-WebSocket-Protocol, but no other subprotocol was offered that the "
    "endpoint supports; a browser fails a handshake that echoes none.",
)
AUTH_REQUIRED = Refusal("auth_required", 1008, 401, False, "No token was offered.")
INVALID_TOKEN = Refusal(
    "invalid_token",
    1008,
    401,
    False,
    "The token is malformed or fails a check: signature, format, alg, aud, iss, nbf or iat.",
)
TOKEN_EXPIRED = Refusal("token_expired", 1008, 401, False, "The token's exp has passed.")
USER_MISMATCH = Refusal(
    "user_mismatch", 1008, 403, False, "The {user_id} in the path is not the token's subject."
)
AUTH_UNAVAILABLE = Refusal(
    "auth_unavailable",
    1013,
    503,
    False,
    "The auth service is unreachable, timing out or answering 5xx; try again later.",
)

BACKEND_UNAVAILABLE = Refusal(
    "backend_unavailable",
    1013,
    503,
    False,
    "The shared state backend (Redis) is down and the policy is fail_closed; try again later.",
)
CONNECTION_LIMIT = Refusal(
    "connection_limit",
    4008,
    429,
    False,
    "The user has too many open connections: the oldest is closed (evict_oldest) or the "
    "new one is (reject_new). Do not reconnect in a loop.",
)
CONNECT_RATE_LIMITED = Refusal(
    "connect_rate_limited",
    1013,
    429,
    False,
    "This client address opened connections faster than connect_rate_per_ip allows; try "
    "again after Retry-After seconds.",
)
WORKER_CONNECT_RATE_LIMITED = Refusal(
    "worker_connect_rate_limited",
    1013,
    503,
    False,
    "This worker process took connections faster than connect_rate_per_worker allows; try "
    "again after Retry-After seconds.",
)
WORKER_BUSY = Refusal(
    "worker_busy",
    1013,
    503,
    False,
    "This worker process holds max_connections_per_worker open connections; try again "
    "after Retry-After seconds.",
)
REVOKED = Refusal(
    "revoked",
    4003,
    403,
    False,
    "The user, or this token (its jti), was revoked: the open connections are closed, and "
    "new handshakes are refused until the revocation ends.",
)
MESSAGE_TOO_LARGE = Refusal(
    "message_too_large",
    1009,
    None,
    False,
    "A message was larger than the size limit and the size policy is close. The server's "
    "own cap (uvicorn --ws-max-size) also closes with 1009, but ASGI reports that close as "
    "the client's, so it is counted under client.",
)
RATE_LIMIT_ABUSE = Refusal(
    "rate_limit_abuse",
    1008,
    None,
    False,
    "The client kept sending after consecutive rate_limited answers (only when the "
    "escalation is configured).",
)
INTERNAL_ERROR = Refusal(
    "internal_error",
    1011,
    None,
    False,
    "The endpoint's handler failed on too many consecutive messages.",
)
HEARTBEAT_TIMEOUT = Refusal(
    "heartbeat_timeout", 4000, None, False, "The client did not answer the gate's ping in time."
)
IDLE_TIMEOUT = Refusal(
    "idle_timeout", 4001, None, False, "The client sent nothing for idle_timeout seconds."
)
MAX_LIFETIME = Refusal(
    "max_lifetime", 4002, None, False, "The connection reached max_lifetime; reconnect."
)
SLOW_CONSUMER = Refusal(
    "slow_consumer",
    1013,
    None,
    False,
    "The client stopped reading: a message waited send_timeout seconds for it to make room. "
    "The close frame comes after the messages it had not read.",
)

CLOSE_CODES: tuple[Refusal, ...] = (
    ORIGIN_NOT_ALLOWED,
    SUBPROTOCOL_REQUIRED,
    AUTH_REQUIRED,
    INVALID_TOKEN,
    TOKEN_EXPIRED,
    USER_MISMATCH,
    AUTH_UNAVAILABLE,
    BACKEND_UNAVAILABLE,
    CONNECTION_LIMIT,
    CONNECT_RATE_LIMITED,
    WORKER_CONNECT_RATE_LIMITED,
    WORKER_BUSY,
    REVOKED,
    MESSAGE_TOO_LARGE,
    RATE_LIMIT_ABUSE,
    INTERNAL_ERROR,
    HEARTBEAT_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_LIFETIME,
    SLOW_CONSUMER,
)


# Where a server that only sends 1000 and 3000-4999 gets the table's other codes: 1008 -> 4108.
_MAPPED_CODE_OFFSET = 3100

SERVER_DIFFERENCES: dict[str, dict[str, Any]] = {
    "daphne": {
        "detected_by": "scope['asgi'] without spec_version, and no scope['http_version']",
        "close_codes": {
            row.close_code: row.close_code + _MAPPED_CODE_OFFSET
            for row in CLOSE_CODES
            if not row.handshake_only and not (row.close_code == 1000 or row.close_code >= 3000)
        },
        "close_reason": "sent first, in an error frame: "
        '{"type": "error", "error": {"code": <reason>, "message": ..., "close_code": <code>}}',
    },
}
"""How each ASGI server that cannot send the table as it stands gets wsgate's closes instead,
for the docs and ``/ws/config``. Every other server sends the table unchanged."""


def _drops_close_reasons(scope: Scope | None) -> bool:
    """True on daphne 4.2, which drops close reasons: recognised by the scope it builds, with
    an ``asgi`` key that has no ``spec_version`` (websocket spec 2.0, before the close reason)
    and no ``http_version``. Test clients that build no ``asgi`` key are not mistaken for it.
    """
    if scope is None:
        return False
    asgi = scope.get("asgi")
    return isinstance(asgi, dict) and "spec_version" not in asgi and "http_version" not in scope


def close_message(refusal: Refusal, scope: Scope | None = None) -> Message:
    """The ASGI ``websocket.close`` message that ends an open connection with ``refusal``.

    Given the connection's ``scope``, the code is the one its server can send: on a server
    that drops close reasons, a code outside 1000 and 3000-4999 is sent as its equivalent in
    4100-4199 (see :data:`SERVER_DIFFERENCES`).
    """
    code = refusal.close_code
    if _drops_close_reasons(scope) and not (code == 1000 or 3000 <= code <= 4999):
        code += _MAPPED_CODE_OFFSET
    return {"type": "websocket.close", "code": code, "reason": refusal.reason}


def reason_frame(refusal: Refusal, scope: Scope) -> Message | None:
    """The error frame to send just before :func:`close_message` on a server that drops close
    reasons, so that the client still learns why; None on every other server."""
    if not _drops_close_reasons(scope):
        return None
    error = {
        "code": refusal.reason,
        "message": refusal.description,
        "close_code": close_message(refusal, scope)["code"],
    }
    return {
        "type": "websocket.send",
        "text": orjson.dumps({"type": "error", "error": error}).decode(),
    }


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    refusal: Refusal,
    *,
    before_accept: bool = False,
    subprotocol: str | None = None,
    detail: str = "",
    retry_after: int | None = None,
) -> None:
    """Refuse a connection that is still in its handshake. The app is never called.

    The refusal is counted in the gate's metrics and logged, in one line to the
    ``wsgate.access`` logger (see :func:`wsgate.metrics.report_refusal`).

    Args:
        refusal: The row of the close-code table to answer with.
        before_accept: Answer with an HTTP status instead of accept-then-close. Refusals
            marked ``handshake_only`` are always answered this way.
        subprotocol: The subprotocol to echo in the accept, so browsers complete the
            handshake and can read the close reason.
        detail: Why, for the log line only; never a token.
        retry_after: Seconds after which the client may try again, sent as ``Retry-After``
            with an HTTP status (a close frame has no room for it).

    Every query-string value in the scope is replaced by ``redacted`` first, so that the
    server's access line for the refused handshake holds no secret.
    """
    # Imported here: wsgate.metrics imports wsgate.exceptions, which imports this module.
    from wsgate.metrics import report_refusal

    # Before anything answers: the server logs the request line, query included, then. The
    # app never runs for a refused handshake, and before authentication nothing can tell
    # which parameter holds a secret, so every value goes.
    redact_query(scope)
    denied = refusal.handshake_only or (before_accept and refusal.http_status is not None)
    if not denied:
        close_code, status = refusal.close_code, None
    elif DENIAL_EXTENSION in scope.get("extensions", {}):
        close_code, status = None, refusal.http_status or 403
    else:
        close_code, status = None, 403  # what the server answers without the extension
    report_refusal(scope, refusal.reason, close_code=close_code, http_status=status, detail=detail)
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left during the handshake: nobody to answer
    try:
        if denied:
            await _deny(scope, send, refusal, retry_after)
        else:
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
            frame = reason_frame(refusal, scope)
            if frame is not None:
                await send(frame)
            await send(close_message(refusal, scope))
    except OSError:
        pass  # the client vanished mid-refusal; there is nothing left to tell it


async def _deny(scope: Scope, send: Send, refusal: Refusal, retry_after: int | None) -> None:
    if DENIAL_EXTENSION not in scope.get("extensions", {}):
        # Without the extension the server answers 403 with an empty body.
        await send(close_message(refusal))
        return
    status = refusal.http_status or 403  # refuse() only denies rows that have a status
    body = orjson.dumps({"error": refusal.reason})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer error="%s"' % refusal.reason.encode()))
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % retry_after))
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})
