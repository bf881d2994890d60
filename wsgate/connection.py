"""What the gate's layers share about one WebSocket connection, and the decode-once cache.

Each :class:`~wsgate.Engine` calls :meth:`Connection.of` at the start of a connection (a
:class:`~wsgate.Gate` is one engine for all of its checks). The first one creates the
:class:`Connection` and stores it in ``scope["wsgate.connection"]``; engines nested inside
it find it there. It owns the connection's ``send``: whichever check ends the connection (an
eviction from another connection's task, a heartbeat timer, a size refusal) goes through
:meth:`Connection.close`, which is idempotent, and whatever the app sends after that is
dropped instead of raising in the server.

A message is decoded from JSON at most once per connection layer stack: :func:`decoded`
parses the text of a ``websocket.receive`` message on first use and keeps the result in the
message itself, where every later layer and the endpoint find it.

A client that stops reading cannot hold up the task that sends to it: when the server cannot
take a message at once, :meth:`Connection.send` waits at most ``send_timeout`` seconds, then
closes the connection with 1013 ``slow_consumer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from types import CoroutineType
from typing import Any, Final

import anyio
import orjson
from starlette.requests import HTTPConnection
from starlette.types import Message, Scope, Send

from wsgate._printable import printable
from wsgate.close_codes import SLOW_CONSUMER, Refusal, close_message, reason_frame
from wsgate.error_frames import MessageError, Protocol, error_object
from wsgate.exceptions import NoGateUser
from wsgate.metrics import METRICS_KEY, ConnectionRecord

__all__ = [
    "INVALID",
    "NOT_TEXT",
    "Connection",
    "answered_id",
    "decoded",
    "gate_connection",
    "message_id",
]

logger = logging.getLogger("wsgate.connection")

SCOPE_KEY: Final = "wsgate.connection"
SEND_TIMEOUT_KEY: Final = "wsgate.send_timeout"
"""The scope key a :class:`~wsgate.Gate` puts its ``send_timeout`` under, for the connection."""
DEFAULT_SEND_TIMEOUT: Final = 10.0
"""Seconds a send may wait for a client that is not reading, unless the scope says otherwise."""
PARSED_KEY: Final = "wsgate.json"
"""Where :func:`decoded` keeps the parsed value in a ``websocket.receive`` message."""
REJECTED_KEY: Final = "wsgate.rejected"
"""The ``websocket.receive`` message key holding the error objects of a JSON-RPC batch's
requests that the gate answered itself (invalid, or over the rate limit), when the batch
also had requests that go on; the endpoint adds them to the batch's response."""


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INVALID: Final = _Marker("INVALID")
"""What :func:`decoded` returns for text that is not valid JSON."""
NOT_TEXT: Final = _Marker("NOT_TEXT")
"""What :func:`decoded` returns for a binary frame."""
UNPARSED: Final = _Marker("UNPARSED")


async def _gone(message: Message) -> None:
    """The ``send`` of a connection whose app returned."""


def decoded(message: Mapping[str, Any]) -> Any:
    """The parsed JSON of a ``websocket.receive`` message, parsed once and cached in it.

    Returns :data:`INVALID` for text that is not JSON (orjson refuses NaN, Infinity, lone
    surrogates and nesting beyond 1024 levels), and :data:`NOT_TEXT` for a binary frame.
    ``message`` is typed as any mapping so that every framework's message type is taken
    (Litestar's and Quart's are ``TypedDict`` s); it is the ASGI message dict, written to.
    """
    value: Any = message.get(PARSED_KEY, UNPARSED)  # no KeyError raised on the first call
    if value is not UNPARSED:
        return value
    text = message.get("text")
    if text is None:
        value = NOT_TEXT
    else:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = INVALID
    message[PARSED_KEY] = value  # type: ignore[index]  # the ASGI message, a dict
    return value


def message_id(value: Any) -> str | int | None:
    """The ``id`` of a decoded message when it is a string or an integer, else None."""
    if isinstance(value, dict):
        candidate = value.get("id")
        if isinstance(candidate, (str, int)) and not isinstance(candidate, bool):
            return candidate
    return None


_ASGI_RECEIVE_KEYS: Final = frozenset({"type", "text", "bytes", PARSED_KEY, REJECTED_KEY})


def answered_id(to: object) -> str | int | None:
    """The ``id`` to echo in an answer ``to`` a client message: ``to`` is that message,
    parsed or as its ASGI ``websocket.receive`` message, or its ``id`` itself (a string or
    an integer). Only the ``id`` is ever taken, never the content."""
    if isinstance(to, (str, int)) and not isinstance(to, bool):
        return to
    if (
        isinstance(to, dict)
        and to.get("type") == "websocket.receive"
        and to.keys() <= _ASGI_RECEIVE_KEYS
    ):
        to = decoded(to)
    return message_id(to)


_UNSET: Final = _Marker("UNSET")


def _deprecated_message_id(method: str, message_id: Any) -> None:
    """Warn a caller of ``method`` that passed ``message_id=``, which ``to=`` replaces."""
    warnings.warn(
        f"Connection.{method}(message_id=...) is deprecated and will be removed in the next "
        f"release: pass to={message_id!r} instead (to= takes the message being answered or "
        "its id).",
        DeprecationWarning,
        stacklevel=3,
    )


def identity_key(scope: Scope, prefix: str, key: Callable[[Scope], str] | None = None) -> str:
    """Whose a connection is, for per-user limits: ``key(scope)`` when given, else the
    authenticated user (not the dev bypass user), else the client address; namespaced by
    kind so that user ids and addresses never collide."""
    if key is not None:
        return f"{prefix}key:{key(scope)}"
    user: Any = scope.get("user")
    if getattr(user, "is_authenticated", False) and not getattr(user, "is_dev", False):
        return f"{prefix}user:{user.identity}"
    client = scope.get("client")
    return f"{prefix}ip:{client[0] if client else 'unknown'}"


_ids = itertools.count(1)
_PROCESS = f"{os.getpid():x}"


class Connection:
    """One WebSocket connection as the gate sees it.

    Attributes:
        id: A short id unique in this process, for logs (``"1f2a-17"``).
        protocol: ``"json"`` or ``"jsonrpc"``; set by the format layer, used for error frames.
        legacy: True once the client has spoken the legacy ``{"event", "data"}`` shape.
        opened_at: When the gate first saw the connection (``time.monotonic()``).
        accepted: True once the app's accept went out.
        closed: True once a close went out, from the app or from the gate.
        close_code: The code of that close, or None.
        close_reason: The reason of that close, or None.
        send_timeout: Seconds a send may wait for the client to read before the connection
            is closed with 1013 ``slow_consumer``, or None to wait as long as it takes. Taken
            from ``scope["wsgate.send_timeout"]`` (a Gate sets it), else 10.
        record: The :class:`~wsgate.metrics.ConnectionRecord` the gate's metrics layer put in
            ``scope["wsgate.metrics"]``, or None without one.
    """

    __slots__ = (
        "_send",
        "_tasks",
        "accepted",
        "close_code",
        "close_reason",
        "closed",
        "id",
        "legacy",
        "opened_at",
        "protocol",
        "record",
        "scope",
        "send_timeout",
    )

    def __init__(self, scope: Scope, send: Send) -> None:
        self.id = f"{_PROCESS}-{next(_ids)}"
        self.scope = scope
        self.protocol: Protocol = "json"
        self.legacy = False
        self.opened_at = time.monotonic()
        self.accepted = False
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.send_timeout: float | None = scope.get(SEND_TIMEOUT_KEY, DEFAULT_SEND_TIMEOUT)
        self.record: ConnectionRecord | None = scope.get(METRICS_KEY)
        if self.record is not None:
            self.record.connection = self
        self._send = send
        # Created by the first spawn: most connections never spawn a task, and an empty set
        # costs every open connection 216 bytes.
        self._tasks: set[asyncio.Task[Any]] | None = None

    @classmethod
    def of(cls, scope: Scope, send: Send) -> tuple[Connection, Send]:
        """The connection of ``scope``, and the ``send`` to hand to the next layer.

        The first layer to ask creates the connection and gets its guarded :meth:`send`;
        later layers get the existing connection and keep the ``send`` they were given.
        """
        existing: Connection | None = scope.get(SCOPE_KEY)
        if existing is not None:
            return existing, send
        connection = cls(scope, send)
        scope[SCOPE_KEY] = connection
        return connection, connection.send

    def release(self) -> None:
        """Forget the server's ``send`` once the app returned: a later send is dropped."""
        self._send = _gone

    @property
    def user(self) -> Any:
        """``scope["user"]``, set by the auth layer, or None."""
        return self.scope.get("user")

    async def send(self, message: Message) -> None:
        """Send an ASGI message, remembering accept and close; dropped once closed.

        When the server cannot take the message at once (the client stopped reading and the
        socket's buffers are full), the send waits at most ``send_timeout`` seconds. Then the
        message is dropped, the connection is closed with 1013 ``slow_consumer`` (the close
        frame follows whatever the client has not read yet), and every later send is dropped
        at once.
        """
        if self.closed:
            return  # the gate closed the connection under the app; the app learns on receive
        kind = message["type"]
        if kind == "websocket.accept":
            self.accepted = True
        elif kind == "websocket.close":
            self._mark_closed(message.get("code", 1000), message.get("reason") or "")
        rest = self.start_sending(self._send(message), message)
        if rest is not None:
            await rest

    def start_sending(self, sending: Awaitable[None], message: Message) -> Awaitable[None] | None:
        """Run ``sending``, the server's send of ``message``, up to its first wait: None when
        it finished there, else what is left to await, within ``send_timeout``.

        Almost always the server has written the frame and finished at once, and no timer
        was needed. For :class:`~wsgate.Engine`, which sends an open
        connection's messages without a coroutine of this class in between.
        """
        if self.send_timeout is None or type(sending) is not CoroutineType:
            return sending
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return None
        return self._wait_for_client(sending, waiting_on, message)

    async def _wait_for_client(
        self, sending: CoroutineType[Any, Any, Any], waiting_on: Any, message: Message
    ) -> None:
        """Finish a send that waits for the client to read, within ``send_timeout``."""
        try:
            with anyio.fail_after(self.send_timeout):
                await _resume(sending, waiting_on)
            return
        except TimeoutError:
            pass
        if message["type"] == "websocket.close":
            retry = message  # the app's own close: deliver it when the client reads again
        elif not self.closed:
            logger.warning(
                "closing connection %s with 1013 slow_consumer: the client read nothing for "
                "send_timeout=%g s",
                self.id,
                self.send_timeout,
            )
            self._mark_closed(SLOW_CONSUMER.close_code, SLOW_CONSUMER.reason)
            retry = close_message(SLOW_CONSUMER, self.scope)
        else:
            return  # another send already timed out and closed the connection
        # The close frame waits behind the unread data; the server takes it when the client
        # reads again or goes away, and then tells the app through its receive.
        self.spawn(self._deliver(retry))

    async def _deliver(self, message: Message) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await self._send(message)

    async def send_text(self, text: str) -> None:
        """Send a text frame from the gate itself (a ping, an error)."""
        await self.send({"type": "websocket.send", "text": text})

    async def send_error(
        self,
        error: MessageError,
        message: str,
        *,
        to: object = None,
        count: bool = True,
        message_id: Any = _UNSET,
        **extra: Any,
    ) -> None:
        """Answer one message with an error frame in the client's shape; the connection stays.

        For any handler, :class:`~wsgate.GatedEndpoint` or not (FastAPI, Litestar, Quart,
        raw ASGI): ``gate_connection(websocket).send_error(INVALID_PARAMS, "...", to=msg)``
        with ``INVALID_PARAMS`` from :mod:`wsgate.error_frames`. The error is counted in the
        gate's metrics.

        Args:
            error: The row of the error-frame table.
            message: A sentence for the client saying what is wrong and what to do.
            to: The message being answered (parsed, or its ASGI ``websocket.receive``
                message), or its ``id``: the ``id`` is echoed, never the content. The same
                argument as ``GatedEndpoint.error``'s and ``reply``'s.
            count: False when the error was counted already, where it happened.
            message_id: Deprecated: the ``id`` to echo. Pass it as ``to=`` instead.
            extra: Numbers and names added to the error.
        """
        if message_id is not _UNSET:
            _deprecated_message_id("send_error", message_id)
        frame = self._error_frame(error, message, to, message_id, count, extra)
        # A client that vanished gets nothing; the app learns it from its next receive.
        with contextlib.suppress(OSError):
            await self.send_text(orjson.dumps(frame).decode())

    def error_object(
        self,
        error: MessageError,
        message: str,
        *,
        to: object = None,
        count: bool = True,
        message_id: Any = _UNSET,
        **extra: Any,
    ) -> dict[str, Any]:
        """The error answering one message, shaped for this connection's format and counted:
        what :meth:`send_error` sends, and what a JSON-RPC batch's response holds for each
        request that failed. Every error frame wsgate sends is shaped here.

        Args:
            to: The message being answered, or its ``id``, as :meth:`send_error` takes it.
            count: False when the error was counted already, where it happened.
            message_id: Deprecated: the ``id`` to echo. Pass it as ``to=`` instead.
        """
        if message_id is not _UNSET:
            _deprecated_message_id("error_object", message_id)
        return self._error_frame(error, message, to, message_id, count, extra)

    def _error_frame(
        self,
        error: MessageError,
        message: str,
        to: object,
        message_id: Any,
        count: bool,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        if count:
            self.count_error(error)
        answered = answered_id(to) if message_id is _UNSET else message_id
        return error_object(
            error,
            message,
            protocol=self.protocol,
            legacy=self.legacy,
            message_id=answered,
            extra=extra,
        )

    def count_error(self, error: MessageError) -> None:
        """Count a message refused or failed with ``error`` in the gate's metrics, for an
        answer sent some other way than :meth:`send_error`."""
        if self.record is not None:
            self.record.error(error)

    async def close(self, refusal: Refusal) -> bool:
        """Close the connection with ``refusal``'s code and reason, once.

        Safe to call from any task. Returns False when it was already closed or never
        accepted (then there is nothing to close).
        """
        if self.closed or not self.accepted:
            return False
        self._mark_closed(refusal.close_code, refusal.reason)
        # The client may have vanished already; the server then has nothing to send.
        with contextlib.suppress(OSError, RuntimeError):
            frame = reason_frame(refusal, self.scope)
            if frame is not None:  # the server drops close reasons: say it first
                await self._send(frame)
            await self._send(close_message(refusal, self.scope))
        return True

    def close_soon(self, refusal: Refusal) -> None:
        """Close the connection from synchronous code, such as a timer callback."""
        if self.closed or not self.accepted:
            return
        self.spawn(self.close(refusal))

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in a task owned by this connection (from a timer callback)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    @property
    def pending_tasks(self) -> int:
        """How many tasks the gate still runs for this connection (normally 0)."""
        return len(self._tasks) if self._tasks is not None else 0

    def _mark_closed(self, code: int, reason: str) -> None:
        self.closed = True
        self.close_code = code
        self.close_reason = reason

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self.accepted else "handshake"
        return f"<Connection {self.id} {printable(self.scope.get('path', ''))} {state}>"


def gate_connection(connection: HTTPConnection | Mapping[str, Any]) -> Connection:
    """The :class:`Connection` the gate keeps for a connection it let in, typed for type
    checkers: what any handler sends an error frame through.

    ``connection`` is the handler's ``WebSocket`` (any Starlette ``HTTPConnection``, FastAPI's
    included), or the ASGI ``scope`` of any framework (``socket.scope`` in Litestar,
    ``websocket.scope`` in Quart, the ``scope`` of a plain ASGI app)::

        await gate_connection(websocket).send_error(INVALID_PARAMS, "Say it again.", to=message)

    Raises :class:`~wsgate.NoGateUser` when no gate is in front of the connection.
    """
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    found = scope.get(SCOPE_KEY)
    if not isinstance(found, Connection):
        raise NoGateUser(
            f"{printable(scope.get('path', 'this connection'))} has no gate in front of it, so "
            "it has no wsgate Connection: put the endpoint behind the gate, with gate.route() "
            "or gate.wrap()."
        )
    return found


async def _resume(sending: CoroutineType[Any, Any, Any], waiting_on: Any) -> None:
    """Finish a coroutine that was run by hand up to its first wait.

    ``waiting_on`` is what it yielded for the event loop (an asyncio future, or None). The
    task gets it as if the coroutine had yielded it itself, and whatever ends the wait (the
    future's result, or a cancellation by the timeout) goes on to the coroutine.
    """
    while True:
        try:
            await _Yield(waiting_on)
        except BaseException as exc:
            try:
                waiting_on = sending.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return


class _Yield:
    """An awaitable that yields one value to the running task, as a coroutine's await does."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, None]:
        yield self.value
