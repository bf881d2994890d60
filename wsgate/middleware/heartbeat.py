"""HeartbeatMiddleware: the lifecycle of an open connection.

ASGI carries no WebSocket ping frames to the app, and a server's own keepalive (uvicorn
``--ws-ping-interval``) only proves that the TCP peer's WebSocket library is alive. This layer
pings at the application level, closes idle and too-old connections, and closes a connection
when its token expires unless the client refreshes the token in band.

Each connection has at most one deadline, never a task sleeping in a loop. A message only
records the time it arrived; when the deadline comes, the connection works out what is due
(token expiry, max lifetime, idle timeout, a ping or a missing answer), acts, and sets its
next deadline. The deadlines of all the connections of an event loop share one timer handle
on the loop: a handle of its own would cost each open connection about half a kilobyte.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import weakref
from typing import Any, Final

import orjson
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsgate import _options, close_codes
from wsgate._printable import printable
from wsgate.auth.base import GateUser, Identity, Verifier
from wsgate.close_codes import Refusal
from wsgate.connection import Connection, decoded, message_id
from wsgate.error_frames import (
    AUTH_UNAVAILABLE,
    INVALID_MESSAGE,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RATE_LIMITED,
    MessageError,
)
from wsgate.exceptions import AuthenticationError, AuthUnavailable, ConfigurationError
from wsgate.metrics import MAX_DETAIL

__all__ = ["PING_ID_PREFIX", "HeartbeatMiddleware", "Lifecycle"]

logger = logging.getLogger("wsgate.heartbeat")

PING_ID_PREFIX: Final = "wsgate-ping-"
"""The ``id`` of every JSON-RPC ping the gate sends starts with this."""

_JSON_PING: Final = '{"type":"ping"}'
# The frames this layer answers itself. JSON-RPC ping results map to "pong", refreshes to "auth".
_JSON_FRAMES: Final = frozenset({"ping", "pong", "auth"})
_RPC_METHODS: Final = {"ping": "ping", "auth/refresh": "auth"}
# asyncio runs a timer up to its clock resolution early; a deadline that close counts as due.
_EARLY: Final = 0.001


class HeartbeatMiddleware:
    """Ping quiet clients, and close connections that are dead, idle, too old or expired.

    Every ``interval`` seconds of silence from the client, the gate sends ``{"type": "ping"}``
    (on JSON-RPC endpoints, the request ``{"jsonrpc": "2.0", "id": "wsgate-ping-<n>",
    "method": "ping"}``). Any message from the client proves it alive; without one within
    ``timeout`` seconds of the ping, the connection is closed with 4000 ``heartbeat_timeout``.
    The gate answers the client's own ``{"type": "ping"}`` with ``{"type": "pong"}``.

    When the auth layer put a :class:`~wsgate.GateUser` with an ``exp`` in the scope, the
    connection is closed with 1008 ``token_expired`` at ``exp + leeway``, unless the client
    sends a fresh token first (``{"type": "auth", "token": ...}``, or the JSON-RPC request
    ``auth/refresh``), which ``verifier`` checks.

    Heartbeat and refresh frames are answered here and never reach the app. The names they
    use (``type`` ``ping``, ``pong`` and ``auth``; JSON-RPC methods ``ping`` and
    ``auth/refresh``) are reserved on gated endpoints.

    Args:
        app: The ASGI app to protect.
        interval: Seconds of silence from the client before the gate pings it, or None to
            send no pings.
        timeout: Seconds the client has to send anything after a ping.
        idle_timeout: Close with 4001 ``idle_timeout`` after this many seconds without a
            message for the app, or None (the default) to keep idle connections. Heartbeat
            and refresh frames do not count: a client that only answers pings is idle.
        max_lifetime: Close with 4002 ``max_lifetime`` this many seconds after accept, or None
            (the default) for no limit.
        verifier: Checks refreshed tokens: a :class:`~wsgate.JWTVerifier`, a
            :class:`~wsgate.RemoteVerifier` or anything with ``async verify(token)``. Without
            one, refresh messages are answered with a ``method_not_found`` error frame.
        leeway: Seconds a connection may stay open after its token's ``exp``. Give it the
            verifier's leeway, so a token accepted in the handshake is not closed at once.
        ping_limit: How many of the client's own pings one connection may send, as a
            ``limits`` rate (``"30/minute"``), or None for no bound. A ping over it is
            answered with a ``rate_limited`` error frame (``retry_after``, ``limit``) instead
            of a pong; the connection stays open.
        refresh_limit: How many in-band token refreshes one connection may send, as a
            ``limits`` rate (``"6/minute"``), or None for no bound. A refresh over it is
            answered with ``rate_limited`` and the verifier is not called.

    Attributes:
        armed_timers: How many deadlines the middleware's connections have set: at most one
            per open connection, 0 once every connection has ended.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        # Heartbeat
        interval: float | None = 45.0,
        timeout: float = 20.0,
        # Limits
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        # Token expiry and refresh
        verifier: Verifier | None = None,
        leeway: float = 0.0,
        # Bounds on the frames this layer answers, per connection
        ping_limit: str | None = "30/minute",
        refresh_limit: str | None = "6/minute",
    ) -> None:
        self.app = app
        self.interval = _optional_seconds("interval", interval)
        self.timeout = _options.seconds("timeout", timeout, positive=True)
        self.idle_timeout = _optional_seconds("idle_timeout", idle_timeout)
        self.max_lifetime = _optional_seconds("max_lifetime", max_lifetime)
        if verifier is not None and not isinstance(verifier, Verifier):
            raise ConfigurationError(
                f"verifier must have an async verify(token) method; got {verifier!r}."
            )
        self.verifier = verifier
        self.leeway = _options.seconds("leeway", leeway)
        self.ping_limit = _Bound.of("ping_limit", ping_limit)
        self.refresh_limit = _Bound.of("refresh_limit", refresh_limit)
        self.armed_timers = 0
        # The deadlines of this layer's connections, per event loop; a server runs one.
        self._deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Timers] = (
            weakref.WeakKeyDictionary()
        )
        self._last_deadlines: _Timers | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        connection, send = Connection.of(scope, send)
        lifecycle = self.begin(connection, scope)

        async def receive_message() -> Message:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    if message["type"] == "websocket.disconnect":
                        lifecycle.stop()  # even if the app lingers after the client left
                    return message
                frame = lifecycle.seen(message)
                if frame is None:
                    return message
                await lifecycle.answer(frame, decoded(message))

        async def send_message(message: Message) -> None:
            await send(message)
            lifecycle.sent()

        try:
            await self.app(scope, receive_message, send_message)
        finally:
            lifecycle.stop()

    def begin(self, connection: Connection, scope: Scope) -> Lifecycle:
        """The lifecycle of a new connection; its clocks start at the app's accept."""
        return Lifecycle(self, connection, scope)

    def _timers(self, loop: asyncio.AbstractEventLoop) -> _Timers:
        """The deadlines of this layer's connections on ``loop``."""
        timers = self._last_deadlines
        if timers is None or timers.loop() is not loop:
            timers = self._deadlines.get(loop)
            if timers is None:
                timers = self._deadlines[loop] = _Timers(loop)
            self._last_deadlines = timers
        return timers


class Lifecycle:
    """The timers and heartbeat state of one connection. Times are ``loop.time()`` values.

    :meth:`HeartbeatMiddleware.begin` makes one; the middleware, or a
    :class:`~wsgate.Gate`'s pipeline, calls :meth:`seen` and :meth:`answer` for each message
    from the client, :meth:`sent` after each message from the app, and :meth:`stop` at the
    end.
    """

    __slots__ = (
        "connection",
        "credentials",
        "ends",
        "entry",
        "expires",
        "gate",
        "last_active",
        "last_seen",
        "loop",
        "ping_sent",
        "ping_window",
        "pings",
        "refresh_window",
        "user",
        "waiting",
    )

    def __init__(self, gate: HeartbeatMiddleware, connection: Connection, scope: Scope) -> None:
        self.gate = gate
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.entry: _Entry | None = None  # the next deadline
        self.waiting = True  # for the app's accept, which starts the clocks
        user = scope.get("user")
        self.user = user if isinstance(user, GateUser) else None
        credentials = scope.get("auth")
        self.credentials = credentials if isinstance(credentials, AuthCredentials) else None
        now = self.loop.time()
        self.last_seen = now  # any message from the client
        self.last_active = now  # a message that reached the app
        self.ping_sent: float | None = None  # the unanswered ping, if any
        self.pings = 0
        # What the client's pings and refreshes spent of their bounds; each made by the
        # first one, since most connections never send either.
        self.ping_window: _Window | None = None
        self.refresh_window: _Window | None = None
        self.ends: float | None = None
        self.expires: float | None = None

    # The hot path: once per message.

    def seen(self, message: Message) -> str | None:
        """Note a client message; return ``"ping"``, ``"pong"`` or ``"auth"`` when it is a
        frame for this layer, None when it is for the app."""
        now = self.loop.time()
        self.last_seen = now
        value = decoded(message)
        if isinstance(value, dict):
            if self.connection.protocol == "json":
                kind = value.get("type")
                if isinstance(kind, str) and kind in _JSON_FRAMES and _well_formed(value):
                    return kind
            else:
                method = value.get("method")
                if method is None:  # a response: to the gate's ping, or to an app request
                    answered = value.get("id")
                    if isinstance(answered, str) and answered.startswith(PING_ID_PREFIX):
                        return "pong"
                elif (
                    isinstance(method, str)
                    and method in _RPC_METHODS
                    and value.get("jsonrpc") == "2.0"
                    and _well_formed(value)
                ):
                    return _RPC_METHODS[method]
        self.last_active = now
        return None

    async def answer(self, frame: str, value: dict[str, Any]) -> None:
        """Answer a frame :meth:`seen` kept from the app."""
        if frame == "pong":
            # Any message proves the client alive, but only a pong moves the next ping
            # forward, so that pings stay an interval apart when timeout > interval.
            if self.ping_sent is not None:
                self.ping_sent = None
                self._arm()
        elif frame == "ping":
            bound = self.gate.ping_limit
            if bound is not None:
                if self.ping_window is None:
                    self.ping_window = _Window()
                if not await self._within(bound, self.ping_window, value, "pings"):
                    return
            await self._reply("pong", {}, message_id(value))
        else:
            bound = self.gate.refresh_limit
            if bound is not None:
                if self.refresh_window is None:
                    self.refresh_window = _Window()
                if not await self._within(bound, self.refresh_window, value, "refreshes"):
                    return
            await self._refresh(value)

    async def _within(
        self, bound: _Bound, window: _Window, value: dict[str, Any], kind: str
    ) -> bool:
        """Count a ping or a refresh against its bound; over it, answer ``rate_limited``."""
        wait = window.spend(bound, self.loop.time())
        if wait is None:
            return True
        with contextlib.suppress(OSError, RuntimeError):
            await self.connection.send_error(
                RATE_LIMITED,
                f"Over the limit of {bound.rate} {kind} on one connection; this one was not "
                "answered.",
                message_id=message_id(value),
                retry_after=max(math.ceil(wait * 10) / 10, 0.1),
                limit=bound.rate,
            )
        return False

    async def _reply(self, kind: str, result: dict[str, Any], answered: str | int | None) -> None:
        """Answer a request: ``{"type": kind, "payload": result}``, or a JSON-RPC result."""
        if self.connection.protocol == "jsonrpc":
            if answered is not None:  # a notification gets no response
                await self._send({"jsonrpc": "2.0", "id": answered, "result": result})
            return
        frame: dict[str, Any] = {"type": kind}
        if result:
            frame["payload"] = result
        if answered is not None:
            frame["id"] = answered
        await self._send(frame)

    # Token refresh

    async def _refresh(self, value: dict[str, Any]) -> None:
        connection = self.connection
        rpc = connection.protocol == "jsonrpc"
        answered = message_id(value)
        verifier = self.gate.verifier
        if verifier is None:
            await self._error(
                METHOD_NOT_FOUND,
                "In-band token refresh is not configured on this endpoint; reconnect with "
                "the new token instead.",
                answered,
            )
            return
        if self.user is None:
            await self._error(
                INVALID_MESSAGE,
                "This connection was not opened with a token, so there is none to refresh.",
                answered,
            )
            return
        params = value.get("params") if rpc else value
        token = params.get("token") if isinstance(params, dict) else None
        if not isinstance(token, str) or not token:
            where = 'params {"token": "<jwt>"}' if rpc else 'a "token" field'
            await self._error(
                INVALID_PARAMS if rpc else INVALID_MESSAGE,
                f"A token refresh needs {where} holding the new token as a string.",
                answered,
            )
            return

        identity: Identity | None = None
        try:
            identity = await verifier.verify(token)
        except AuthUnavailable as exc:
            logger.warning(
                "token refresh on connection %s not checked: %s", connection.id, printable(exc)
            )
        except AuthenticationError as exc:
            self._refused(exc.refusal, str(exc))
            await connection.close(exc.refusal)
            return
        except Exception:
            logger.exception("verifier %r raised an undocumented exception", verifier)
        if identity is None:
            await self._error(
                AUTH_UNAVAILABLE,
                "The auth service could not check the new token. The connection keeps its "
                "current token until it expires; try the refresh again later.",
                answered,
            )
            return
        if connection.closed:
            return  # the old token expired while the new one was being checked
        if identity.subject != self.user.identity:
            self._refused(close_codes.INVALID_TOKEN, "the new token belongs to another subject")
            await connection.close(close_codes.INVALID_TOKEN)
            return

        self.user.verified = identity  # the app reads the new claims from the same object
        self.user.is_dev = False
        if self.credentials is not None:
            self.credentials.scopes = list(identity.scopes)
        self.expires = self._token_deadline()
        self._arm()
        expires_at = identity.expires_at
        if expires_at is not None and expires_at.is_integer():
            expires_at = int(expires_at)  # as it was in the token
        await self._reply("auth", {"expires_at": expires_at}, answered)

    def _refused(self, refusal: Refusal, detail: str) -> None:
        # The detail comes from the verifier's exception, which never holds the token.
        logger.info(
            "token refresh refused on connection %s: %s (%s)",
            self.connection.id,
            refusal.reason,
            printable(detail, MAX_DETAIL),
        )

    def _token_deadline(self) -> float | None:
        if self.user is None or self.user.verified.expires_at is None:
            return None
        # exp is wall-clock time; the timer runs on the loop's monotonic clock.
        remaining = self.user.verified.expires_at + self.gate.leeway - time.time()
        return self.loop.time() + remaining

    # Sending from the gate. The client may have vanished: the next receive says so.

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._send_text(orjson.dumps(frame).decode())

    async def _send_text(self, text: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await self.connection.send_text(text)

    async def _error(self, error: MessageError, text: str, answered: str | int | None) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await self.connection.send_error(error, text, message_id=answered)

    # The timer

    def sent(self) -> None:
        """Note that a message from the app went out: the accept starts the clocks."""
        if self.waiting and self.connection.accepted:
            self.start()

    def start(self) -> None:
        """Start the clocks: the app's accept went out."""
        self.waiting = False
        if self.connection.closed:
            return
        now = self.loop.time()
        self.last_seen = self.last_active = now
        if self.gate.max_lifetime is not None:
            self.ends = now + self.gate.max_lifetime
        self.expires = self._token_deadline()
        self._arm()

    def stop(self) -> None:
        """Cancel the timer, whatever way the connection ended."""
        self.waiting = False
        self._cancel()

    def _cancel(self) -> None:
        entry = self.entry
        if entry is not None:
            self.entry = None
            self.gate._timers(self.loop).cancel(entry)
            self.gate.armed_timers -= 1

    def _arm(self) -> None:
        """Set the deadline to the next one, or earlier; none, no deadline."""
        if self.connection.closed:
            return  # nothing left to time; stop() cancels what is still set
        deadline = self._next_deadline()
        if self.entry is not None:
            if deadline is not None and self.entry.when <= deadline:
                return  # it comes first, and sets the next one then
            self._cancel()
        if deadline is not None:
            self.entry = self.gate._timers(self.loop).add(deadline, self)
            self.gate.armed_timers += 1

    def _next_deadline(self) -> float | None:
        gate = self.gate
        deadlines = [when for when in (self.expires, self.ends) if when is not None]
        if gate.idle_timeout is not None:
            deadlines.append(self.last_active + gate.idle_timeout)
        if gate.interval is not None:
            if self.ping_sent is None:
                deadlines.append(self.last_seen + gate.interval)
            else:
                deadlines.append(self.ping_sent + gate.timeout)
        return min(deadlines, default=None)

    def fire(self) -> None:
        """The deadline came: act on what is due, then set the next deadline."""
        self.entry = None
        self.gate.armed_timers -= 1
        connection = self.connection
        if connection.closed:
            return
        now = self.loop.time()
        due = now + _EARLY
        if self.ping_sent is not None and self.last_seen >= self.ping_sent:
            self.ping_sent = None  # the client spoke since the ping
        refusal = self._overdue(due)
        if refusal is not None:
            logger.info("closing connection %s: %s", connection.id, refusal.reason)
            connection.close_soon(refusal)
            return
        interval = self.gate.interval
        if interval is not None and self.ping_sent is None and due >= self.last_seen + interval:
            self.ping_sent = now
            connection.spawn(self._send_text(self._ping_frame()))
        self._arm()

    def _overdue(self, due: float) -> Refusal | None:
        """The refusal whose deadline has passed at ``due``, the first in this order."""
        gate = self.gate
        if self.expires is not None and due >= self.expires:
            return close_codes.TOKEN_EXPIRED
        if self.ends is not None and due >= self.ends:
            return close_codes.MAX_LIFETIME
        if gate.idle_timeout is not None and due >= self.last_active + gate.idle_timeout:
            return close_codes.IDLE_TIMEOUT
        if self.ping_sent is not None and due >= self.ping_sent + gate.timeout:
            return close_codes.HEARTBEAT_TIMEOUT
        return None

    def _ping_frame(self) -> str:
        # Read when the timer fires: the format layer sets the protocol after this layer starts.
        if self.connection.protocol != "jsonrpc":
            return _JSON_PING
        self.pings += 1
        ping = {"jsonrpc": "2.0", "id": f"{PING_ID_PREFIX}{self.pings}", "method": "ping"}
        return orjson.dumps(ping).decode()


class _Bound:
    """A per-connection bound on one kind of frame: ``amount`` in ``period`` seconds."""

    __slots__ = ("amount", "period", "rate")

    def __init__(self, rate: str, amount: int, period: float) -> None:
        self.rate = rate
        self.amount = amount
        self.period = period

    @classmethod
    def of(cls, name: str, rate: str | None) -> _Bound | None:
        if rate is None:
            return None
        item = _options.rate(name, rate)
        return cls(rate, item.amount, float(item.get_expiry()))


class _Window:
    """What one connection spent of a :class:`_Bound`, in fixed windows from its first use."""

    __slots__ = ("count", "until")

    def __init__(self) -> None:
        self.count = 0
        self.until = -math.inf

    def spend(self, bound: _Bound, now: float) -> float | None:
        """Spend one: None when within ``bound``, else the seconds until the window ends."""
        if now >= self.until:
            self.until = now + bound.period
            self.count = 0
        if self.count >= bound.amount:
            return self.until - now
        self.count += 1
        return None


class _Entry:
    """A connection's deadline in a :class:`_Timers` heap; cancelled, it holds no lifecycle."""

    __slots__ = ("lifecycle", "when")

    def __init__(self, when: float, lifecycle: Lifecycle) -> None:
        self.when = when
        self.lifecycle: Lifecycle | None = lifecycle

    def __lt__(self, other: _Entry) -> bool:
        return self.when < other.when


class _Timers:
    """The deadlines of a layer's connections on one event loop, behind one timer handle.

    A cancelled deadline stays in the heap, emptied, until it comes up or the heap is
    rebuilt: that happens once the cancelled outnumber the live, so the heap never holds
    more than about twice as many entries as there are deadlines.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop holds this object (through its timer handle), and a closed loop
        # must not be kept alive by the deadlines it left behind.
        self.loop = weakref.ref(loop)
        self.heap: list[_Entry] = []
        self.cancelled = 0
        # The timer handle, weakly too (a handle holds its loop), and its moment: uvloop
        # answers call_at() for a past moment with a plain Handle, which has no when().
        self.handle: weakref.ref[asyncio.Handle] | None = None
        self.at = 0.0

    def add(self, when: float, lifecycle: Lifecycle) -> _Entry:
        entry = _Entry(when, lifecycle)
        heapq.heappush(self.heap, entry)
        if self._handle() is None or when < self.at:
            self._schedule(when)
        return entry

    def cancel(self, entry: _Entry) -> None:
        entry.lifecycle = None  # the connection can be freed now, not at the deadline
        self.cancelled += 1
        if self.cancelled > _REBUILD_AFTER and 2 * self.cancelled > len(self.heap):
            self.heap = [entry for entry in self.heap if entry.lifecycle is not None]
            heapq.heapify(self.heap)
            self.cancelled = 0
            if not self.heap:
                self._cancel_handle()

    def _handle(self) -> asyncio.Handle | None:
        """The pending timer handle, if any (the loop holds it until it runs)."""
        return self.handle() if self.handle is not None else None

    def _cancel_handle(self) -> None:
        handle = self._handle()
        if handle is not None:
            handle.cancel()
        self.handle = None

    def _schedule(self, when: float) -> None:
        self._cancel_handle()
        loop = self.loop()
        if loop is not None and not loop.is_closed():
            self.handle = weakref.ref(loop.call_at(when, self._fire))
            self.at = when

    def _fire(self) -> None:
        self.handle = None
        # The loop may run a timer up to its clock's resolution early: what falls due that
        # soon is due now, or the timer would fire again and again until it is.
        loop = self.loop()
        if loop is None:
            return
        due = loop.time() + _EARLY
        heap, now_due = self.heap, []
        while heap and heap[0].when <= due:
            lifecycle = heapq.heappop(heap).lifecycle
            if lifecycle is None:
                self.cancelled -= 1
            else:
                now_due.append(lifecycle)
        for lifecycle in now_due:
            try:
                lifecycle.fire()
            except Exception:  # one connection's failure must not stop the others' timers
                logger.exception("the heartbeat of connection %s failed", lifecycle.connection.id)
        if heap and self._handle() is None:
            self._schedule(heap[0].when)


_REBUILD_AFTER: Final = 64
"""Cancelled deadlines a heap keeps before it may be rebuilt without them."""


def _well_formed(value: dict[str, Any]) -> bool:
    """Whether a frame's ``id``, if any, can be echoed. A malformed frame is not this
    layer's: it goes on to the format layer, which says what is wrong with it."""
    return "id" not in value or message_id(value) is not None


def _optional_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        return _options.seconds(name, value, positive=True)
    except ConfigurationError:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds, or None to turn it off, not {value!r}."
        ) from None
