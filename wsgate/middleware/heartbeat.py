"""HeartbeatMiddleware: the lifecycle of an open connection.

ASGI carries no WebSocket ping frames to the app, and a server's own keepalive (uvicorn
``--ws-ping-interval``) only proves that the TCP peer's WebSocket library is alive. This layer
pings at the application level, closes idle and too-old connections, and closes a connection
when its token expires unless the client refreshes the token in band.

This module holds the options and the engine's hooks. Each connection's timers and the frames
it answers are a :class:`~wsgate.middleware._lifecycle.Lifecycle`; the deadlines of all the
connections of an event loop share one timer handle, in :mod:`wsgate._timers`.
"""

from __future__ import annotations

import asyncio
import weakref

from starlette.types import ASGIApp

from wsgate import _options, close_codes
from wsgate._timers import Timers
from wsgate.auth.base import Verifier
from wsgate.connection import Connection
from wsgate.engine import CheckMiddleware
from wsgate.error_frames import (
    AUTH_UNAVAILABLE,
    INVALID_MESSAGE,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RATE_LIMITED,
)
from wsgate.exceptions import ConfigurationError
from wsgate.middleware._bounds import Bound
from wsgate.middleware._lifecycle import PING_ID_PREFIX, Lifecycle

__all__ = ["PING_ID_PREFIX", "HeartbeatMiddleware", "Lifecycle"]


class HeartbeatMiddleware(CheckMiddleware):
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

    close_codes = (
        close_codes.HEARTBEAT_TIMEOUT,
        close_codes.IDLE_TIMEOUT,
        close_codes.MAX_LIFETIME,
        close_codes.TOKEN_EXPIRED,
        close_codes.INVALID_TOKEN,
    )
    error_frames = (
        RATE_LIMITED,
        INVALID_MESSAGE,
        INVALID_PARAMS,
        METHOD_NOT_FOUND,
        AUTH_UNAVAILABLE,
    )

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
        self.ping_limit = Bound.of("ping_limit", ping_limit)
        self.refresh_limit = Bound.of("refresh_limit", refresh_limit)
        self.armed_timers = 0
        # The deadlines of this layer's connections, per event loop; a server runs one.
        self._deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timers] = (
            weakref.WeakKeyDictionary()
        )
        self._last_deadlines: Timers | None = None
        self._alone(app)

    # The hooks, in the order a connection meets them.

    def open(self, connection: Connection) -> Lifecycle:
        """The lifecycle of a new connection; its clocks start at the app's accept."""
        return Lifecycle(self, connection, connection.scope)

    def accepted(self, state: Lifecycle) -> None:
        """The app accepted the connection: start its clocks."""
        state.start()

    # Note a client message, and answer a ping, a pong or a token refresh here. The state's
    # own method, called as Lifecycle.message(state, message): a message then pays for one
    # call of this layer, not two.
    message = staticmethod(Lifecycle.message)  # type: ignore[assignment]

    def end(self, state: Lifecycle) -> None:
        """Stop the connection's timer, however it ended."""
        state.stop()

    def _timers(self, loop: asyncio.AbstractEventLoop) -> Timers:
        """The deadlines of this layer's connections on ``loop``."""
        timers = self._last_deadlines
        if timers is None or timers.loop() is not loop:
            timers = self._deadlines.get(loop)
            if timers is None:
                timers = self._deadlines[loop] = Timers(loop)
            self._last_deadlines = timers
        return timers


def _optional_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        return _options.seconds(name, value, positive=True)
    except ConfigurationError:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds, or None to turn it off, not {value!r}."
        ) from None
