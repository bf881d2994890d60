"""GatedEndpoint: a Starlette WebSocket endpoint that gets each message parsed, checked and
isolated.

A handler receives the parsed message, never text. A JSON endpoint overrides
:meth:`GatedEndpoint.on_message`; a JSON-RPC endpoint registers methods with
:func:`rpc_method`. A handler that raises costs the client one error frame for that message,
not its connection, and the server log gets the traceback.

Exceptions a handler may raise to answer with an error frame::

    WSGateError
     └── ErrorReply         any row of the error-frame table, e.g. METHOD_NOT_FOUND
          └── InvalidParams  invalid_params (-32602)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeVar

import orjson
from starlette.endpoints import WebSocketEndpoint
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from wsgate import _options, close_codes
from wsgate._choices import PROTOCOLS
from wsgate._printable import printable
from wsgate.connection import Connection, answered_id, decoded
from wsgate.error_frames import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    MessageError,
    Protocol,
)
from wsgate.exceptions import ConfigurationError, ErrorReply, InvalidParams
from wsgate.middleware.format import FORMAT_KEY, REJECTED_KEY, FormatMiddleware

__all__ = ["ErrorReply", "GatedEndpoint", "InvalidParams", "rpc_method"]

logger = logging.getLogger("wsgate.endpoint")

_RPC_NAME: Final = "__wsgate_rpc_method__"
"""The attribute :func:`rpc_method` puts on the functions it registers."""
_FAILED: Final = (
    "The server failed to handle this message and logged why. The connection is still open: "
    "you may send the next message."
)
_NO_TYPE: Final = "This endpoint has no handler for messages of this type."
_NO_METHOD: Final = "This endpoint has no method of that name (method names are case-sensitive)."

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
Result = TypeVar("Result")


def rpc_method(name: str) -> Callable[[Handler], Handler]:
    """Register an ``async def`` of a :class:`GatedEndpoint` as the JSON-RPC method ``name``.

    The handler is called as ``await handler(websocket, params)``, where ``params`` is the
    request's array or object, or None when the request has none. What it returns is the
    ``result`` of the response. Names starting with ``rpc.`` are reserved by JSON-RPC 2.0.

    Example::

        @rpc_method("tools/list")
        async def list_tools(self, websocket: WebSocket, params: Any) -> dict[str, Any]:
            return {"tools": []}
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"a JSON-RPC method name must be a non-empty string, not {name!r}."
        )
    if name.startswith("rpc."):
        raise ConfigurationError(
            f"@rpc_method({name!r}): names that start with 'rpc.' are reserved by JSON-RPC 2.0."
        )

    def register(function: Handler) -> Handler:
        is_async = inspect.iscoroutinefunction(function)  # a variable: mypy keeps the type
        if not is_async:
            raise ConfigurationError(
                f"@rpc_method({name!r}) decorates {function.__qualname__}, which must be an "
                "async def."
            )
        setattr(function, _RPC_NAME, name)
        return function

    return register


class GatedEndpoint(WebSocketEndpoint):
    """A WebSocket endpoint that gets each message parsed and checked, and survives its bugs.

    Behind a :class:`~wsgate.FormatMiddleware` (a :class:`~wsgate.Gate` puts one in front)
    the endpoint reads the message the middleware parsed; alone, it runs the same checks
    itself, with the middleware's defaults.

    On a JSON endpoint (``protocol = "json"``) override :meth:`on_message`. On a JSON-RPC
    endpoint (``protocol = "jsonrpc"``) register methods with :func:`rpc_method`; unknown
    methods get -32601, notifications are never answered, and a batch is answered with one
    array. ``ping`` is answered with an empty result unless the class registers its own.

    A handler that raises gets its message answered with ``internal_error`` (-32603), without
    any detail; the traceback goes to the ``wsgate.endpoint`` logger with the connection id.
    After ``max_consecutive_failures`` failed messages in a row the connection is closed with
    1011 ``internal_error``.

    Do not override ``decode`` or ``on_receive``: they are the dispatcher. ``on_connect``
    (accept) and ``on_disconnect`` are Starlette's.

    Attributes:
        protocol: ``"json"`` or ``"jsonrpc"``; a class attribute.
        max_consecutive_failures: Failed messages in a row before the connection is closed;
            a class attribute, 5 by default. A message handled without an exception resets
            the count.
        rpc_methods: The registered JSON-RPC methods: method name to attribute name.
        connection: The connection's :class:`~wsgate.connection.Connection`.
    """

    protocol: ClassVar[Protocol] = "json"
    max_consecutive_failures: ClassVar[int] = 5
    rpc_methods: ClassVar[Mapping[str, str]] = MappingProxyType({})
    _format: ClassVar[FormatMiddleware]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        _options.choice(f"{name}.protocol", cls.protocol, PROTOCOLS)
        _options.count(f"{name}.max_consecutive_failures", cls.max_consecutive_failures)
        methods: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            mine: dict[str, str] = {}
            for attribute, value in vars(klass).items():
                method = getattr(value, _RPC_NAME, None)
                if method is None:
                    continue
                if method in mine:
                    raise ConfigurationError(
                        f"{klass.__name__} registers the JSON-RPC method {method!r} twice: "
                        f"{mine[method]} and {attribute}."
                    )
                mine[method] = attribute
            methods.update(mine)
        if methods and cls.protocol != "jsonrpc":
            raise ConfigurationError(
                f"{name} registers JSON-RPC methods but its protocol is {cls.protocol!r}; "
                "set protocol = 'jsonrpc' on the class."
            )
        cls.rpc_methods = MappingProxyType(methods)
        cls._format = FormatMiddleware(cls, protocol=cls.protocol)

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.connection, self.send = Connection.of(scope, send)
        spoken = scope.get(FORMAT_KEY)
        self._standalone: FormatMiddleware | None = None
        if spoken is None:
            self._standalone = self._format
            self._standalone.start(self.connection, scope)
        elif (spoken == "jsonrpc") != (self.protocol == "jsonrpc"):
            raise ConfigurationError(
                f"{type(self).__name__} speaks {self.protocol!r}, but the FormatMiddleware in "
                f"front of it checks {spoken!r} messages; give it protocol={self.protocol!r}."
            )
        self._failures = 0

    # Handlers: override these.

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        """Handle one JSON message ``{"type": ..., "payload": ..., "id": ...}``.

        Return a frame such as ``{"type": "echo", "payload": ...}`` to have it sent with
        :meth:`reply` once :meth:`message_scope` has exited cleanly, or None after sending
        what you want. The default answers ``method_not_found``: call it for types you do not
        handle.
        """
        raise ErrorReply(METHOD_NOT_FOUND, _NO_TYPE)

    async def on_response(self, websocket: WebSocket, response: dict[str, Any]) -> None:
        """Handle a JSON-RPC response from the client to a request the endpoint sent it.

        The default ignores it. A response is never answered.
        """

    def message_scope(
        self, websocket: WebSocket, message: Any
    ) -> AbstractAsyncContextManager[object]:
        """The context entered around each handler call, for a per-message resource.

        It sees the handler's exception, so a database session can commit on success and
        roll back on error. Each request of a JSON-RPC batch gets its own. The default does
        nothing.
        """
        return contextlib.nullcontext()

    # Replies

    async def reply(
        self, websocket: WebSocket, frame: Mapping[str, Any], *, to: object = None
    ) -> None:
        """Send ``frame`` (``{"type": ..., "payload": ...}``) in the client's format.

        A legacy client gets ``{"event": type, "data": payload}``. The ``id`` of ``to``, the
        message being answered (or that ``id`` itself), is echoed unless ``frame`` has an
        ``id`` of its own.
        """
        if self.connection.legacy:
            shaped: dict[str, Any] = {"event": frame["type"]}
            if "payload" in frame:
                shaped["data"] = frame["payload"]
            for key, value in frame.items():
                if key != "type" and key != "payload":
                    shaped[key] = value
        else:
            shaped = dict(frame)
        answered = answered_id(to)
        if answered is not None:
            shaped.setdefault("id", answered)
        await websocket.send_text(orjson.dumps(shaped).decode())

    async def error(
        self,
        websocket: WebSocket,
        error: MessageError,
        message: str,
        *,
        to: object = None,
        **extra: Any,
    ) -> None:
        """Send an error frame in the client's shape, echoing the ``id`` of ``to``.

        The error is counted in the gate's ``message_errors``, as every error frame is.

        Args:
            error: The row of the error-frame table, e.g. ``wsgate.error_frames.INVALID_MESSAGE``.
            message: A sentence for the client saying what is wrong and what to do.
            to: The message being answered, or its ``id``: only the ``id`` is echoed.
            extra: Numbers and names added to the error.
        """
        self.connection.count_error(error)
        await self._send_error(websocket, error, message, to=to, **extra)

    async def _send_error(
        self, websocket: WebSocket, error: MessageError, message: str, *, to: object, **extra: Any
    ) -> None:
        """Send an error frame already counted (by :meth:`_isolated`)."""
        await self.connection.send_error(error, message, to=to, count=False, **extra)

    async def notify(self, websocket: WebSocket, method: str, params: Any = None) -> None:
        """Send the client a JSON-RPC notification (a request without ``id``)."""
        notification: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            notification["params"] = params
        await websocket.send_text(orjson.dumps(notification).decode())

    # The dispatcher

    async def decode(self, websocket: WebSocket, message: Message) -> Any:
        """Hand :meth:`on_receive` the ASGI message itself: its parsed value is cached in it."""
        return message

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        """Dispatch one ASGI ``websocket.receive`` message to the handlers."""
        message: Message = data
        if self.connection.closed:
            return  # queued before the close; whoever closed it, nobody will read the answer
        if self._standalone is not None and not await self._standalone.admit(
            self.connection, self.scope, message
        ):
            return
        value = decoded(message)
        if self.protocol == "jsonrpc":
            await self._answer_rpc(websocket, value, message.get(REJECTED_KEY, ()))
        else:
            await self._answer_json(websocket, value)
        if self._failures >= self.max_consecutive_failures:
            logger.warning(
                "closing connection %s: %d messages in a row failed",
                self.connection.id,
                self._failures,
            )
            await self.connection.close(close_codes.INTERNAL_ERROR)

    async def _answer_json(self, websocket: WebSocket, message: dict[str, Any]) -> None:
        outcome = await self._isolated(
            self._handle_json(websocket, message), "a message of type", message["type"]
        )
        if outcome is not None:
            with contextlib.suppress(OSError):  # the client left; the next receive says so
                await self._send_error(
                    websocket, outcome.error, outcome.message, to=message, **outcome.extra
                )

    async def _handle_json(self, websocket: WebSocket, message: dict[str, Any]) -> None:
        async with self.message_scope(websocket, message):
            frame = await self.on_message(websocket, message)
        if frame is not None:
            await self.reply(websocket, frame, to=message)

    async def _answer_rpc(
        self, websocket: WebSocket, value: Any, rejected: Sequence[dict[str, Any]]
    ) -> None:
        if isinstance(value, dict):
            response = await self._call(websocket, value)
            if response is None:
                return
            answer: Any = response
        else:
            responses: list[Any] = []
            for request in value:
                if self._failures >= self.max_consecutive_failures:
                    break  # the connection is about to close; stop calling a failing handler
                response = await self._call(websocket, request)
                if response is not None:
                    responses.append(response)
            responses.extend(rejected)
            if not responses:
                return  # a batch of notifications gets no response at all
            answer = responses
        with contextlib.suppress(OSError):
            await websocket.send_text(orjson.dumps(answer).decode())

    async def _call(self, websocket: WebSocket, request: dict[str, Any]) -> dict[str, Any] | None:
        """Run one request, notification or response; return the response to send, if any."""
        if "method" not in request:
            await self._isolated(
                self._handle_response(websocket, request), "the response to", request["id"]
            )
            return None
        method = request["method"]
        attribute = self.rpc_methods.get(method)
        if attribute is None:
            # MCP's liveness check. The lifecycle layer answers a lone ping; this one was in a
            # batch, or no gate is in front.
            outcome: Any = {}
            if method != "ping":
                outcome = ErrorReply(METHOD_NOT_FOUND, _NO_METHOD)
                self.connection.count_error(METHOD_NOT_FOUND)
        else:
            handler = getattr(self, attribute)
            outcome = await self._isolated(
                self._handle_request(websocket, request, handler), "method", method
            )
        if "id" not in request:
            return None  # a notification is never answered, not even with an error
        if isinstance(outcome, ErrorReply):
            return self.connection.error_object(
                outcome.error,
                outcome.message,
                to=request,
                count=False,  # counted where it happened, in _isolated
                **outcome.extra,
            )
        return {"jsonrpc": "2.0", "id": request["id"], "result": outcome}

    async def _handle_request(
        self,
        websocket: WebSocket,
        request: dict[str, Any],
        handler: Callable[[WebSocket, Any], Awaitable[Any]],
    ) -> orjson.Fragment:
        async with self.message_scope(websocket, request):
            result = await handler(websocket, request.get("params"))
        # Serialised here, so that a result orjson cannot encode fails this request only.
        return orjson.Fragment(orjson.dumps(result))

    async def _handle_response(self, websocket: WebSocket, response: dict[str, Any]) -> None:
        async with self.message_scope(websocket, response):
            await self.on_response(websocket, response)

    async def _isolated(
        self, call: Awaitable[Result], subject: str, name: object
    ) -> Result | ErrorReply:
        """Await ``call``; an exception becomes the ErrorReply to answer with, counted.

        ``subject`` and ``name`` say what failed, in the log line only.
        """
        try:
            result = await call
        except ErrorReply as reply:
            self._failures = 0
            self.connection.count_error(reply.error)
            return reply
        except Exception:
            self._failures += 1
            self.connection.count_error(INTERNAL_ERROR)
            logger.exception(
                "%s failed on %s %s on connection %s",
                type(self).__name__,
                subject,
                printable(repr(name)),
                self.connection.id,
            )
            return ErrorReply(INTERNAL_ERROR, _FAILED)
        self._failures = 0
        return result


GatedEndpoint._format = FormatMiddleware(GatedEndpoint)
