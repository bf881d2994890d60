"""Lifecycle: one open connection's timers, and the in-band frames the gate answers itself.

Each connection has at most one deadline, never a task sleeping in a loop. A message only
records the time it arrived; when the deadline comes, the connection works out what is due
(token expiry, max lifetime, idle timeout, a ping or a missing answer), acts, and sets its
next deadline in the event loop's shared :class:`~wsgate._timers.Timers`.

The frames answered here: the client's pings, its pongs to the gate's pings, and in-band
token refreshes. They never reach the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.authentication import AuthCredentials
from starlette.types import Message, Scope

from wsgate import close_codes
from wsgate._printable import printable
from wsgate._timers import EARLY, Entry
from wsgate.auth.base import GateUser, Identity
from wsgate.close_codes import Refusal
from wsgate.connection import Connection, decoded, message_id
from wsgate.engine import DROP, Verdict
from wsgate.error_frames import (
    AUTH_UNAVAILABLE,
    INVALID_MESSAGE,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RATE_LIMITED,
    MessageError,
)
from wsgate.exceptions import AuthenticationError, AuthUnavailable
from wsgate.metrics import MAX_DETAIL
from wsgate.middleware._bounds import Bound, Window

if TYPE_CHECKING:
    from wsgate.middleware.heartbeat import HeartbeatMiddleware

__all__ = ["PING_ID_PREFIX", "Lifecycle"]

logger = logging.getLogger("wsgate.heartbeat")

PING_ID_PREFIX: Final = "wsgate-ping-"
"""The ``id`` of every JSON-RPC ping the gate sends starts with this."""

_JSON_PING: Final = '{"type":"ping"}'
# The frames this layer answers itself. JSON-RPC ping results map to "pong", refreshes to "auth".
_JSON_FRAMES: Final = frozenset({"ping", "pong", "auth"})
_RPC_METHODS: Final = {"ping": "ping", "auth/refresh": "auth"}


class Lifecycle:
    """The timers and heartbeat state of one connection. Times are ``loop.time()`` values.

    The middleware's :meth:`~wsgate.HeartbeatMiddleware.open` hook makes one for each
    connection, and its other hooks, run by the engine alone or in a :class:`~wsgate.Gate`,
    call :meth:`start` at the app's accept, :meth:`message` for each message
    from the client, and :meth:`stop` at the end.
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
    )

    def __init__(self, gate: HeartbeatMiddleware, connection: Connection, scope: Scope) -> None:
        self.gate = gate
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.entry: Entry | None = None  # the next deadline
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
        self.ping_window: Window | None = None
        self.refresh_window: Window | None = None
        self.ends: float | None = None
        self.expires: float | None = None

    # The hot path: once per message.

    def message(self, message: Message) -> Awaitable[Verdict] | None:
        """Note a client message: None when it is for the app; else it is a ping, a pong or
        a token refresh for this layer, and the answer to await."""
        now = self.loop.time()
        self.last_seen = now
        value = decoded(message)
        if isinstance(value, dict):
            if self.connection.protocol == "json":
                kind = value.get("type")
                if isinstance(kind, str) and kind in _JSON_FRAMES and _well_formed(value):
                    return self.answered(kind, value)
            else:
                method = value.get("method")
                if method is None:  # a response: to the gate's ping, or to an app request
                    answered = value.get("id")
                    if isinstance(answered, str) and answered.startswith(PING_ID_PREFIX):
                        return self.answered("pong", value)
                elif (
                    isinstance(method, str)
                    and method in _RPC_METHODS
                    and value.get("jsonrpc") == "2.0"
                    and _well_formed(value)
                ):
                    return self.answered(_RPC_METHODS[method], value)
        self.last_active = now
        return None

    async def answered(self, frame: str, value: dict[str, Any]) -> Verdict:
        """Answer a frame :meth:`message` kept from the app, which does not get it."""
        await self.answer(frame, value)
        return DROP

    async def answer(self, frame: str, value: dict[str, Any]) -> None:
        """Answer a frame :meth:`message` kept from the app."""
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
                    self.ping_window = Window()
                if not await self._within(bound, self.ping_window, value, "pings"):
                    return
            await self._reply("pong", {}, message_id(value))
        else:
            bound = self.gate.refresh_limit
            if bound is not None:
                if self.refresh_window is None:
                    self.refresh_window = Window()
                if not await self._within(bound, self.refresh_window, value, "refreshes"):
                    return
            await self._refresh(value)

    async def _within(self, bound: Bound, window: Window, value: dict[str, Any], kind: str) -> bool:
        """Count a ping or a refresh against its bound; over it, answer ``rate_limited``."""
        wait = window.spend(bound, self.loop.time())
        if wait is None:
            return True
        with contextlib.suppress(OSError, RuntimeError):
            await self.connection.send_error(
                RATE_LIMITED,
                f"Over the limit of {bound.rate} {kind} on one connection; this one was not "
                "answered.",
                to=message_id(value),
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
            await self.connection.send_error(error, text, to=answered)

    # The timer

    def start(self) -> None:
        """Start the clocks: the app's accept went out."""
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
        due = now + EARLY
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


def _well_formed(value: dict[str, Any]) -> bool:
    """Whether a frame's ``id``, if any, can be echoed. A malformed frame is not this
    layer's: it goes on to the format layer, which says what is wrong with it."""
    return "id" not in value or message_id(value) is not None
