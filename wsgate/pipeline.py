"""GatePipeline: a :class:`~wsgate.Gate`'s middlewares run by one ASGI app.

Nested, the gate's nine layers would cost every open connection nine coroutine frames that
live as long as it does, and a closure and a suspended frame for every layer that wraps
``receive``. The pipeline runs the very same middleware instances, through the hooks each of
them also uses on its own (``OriginMiddleware.check``, ``AuthMiddleware.authenticate``,
``MessageSizeMiddleware.too_large``, ``Lifecycle.seen``, ``RateLimitMiddleware.allows_now``,
``FormatMiddleware.check``...), in the chain's order:

* The handshake (metrics record, send timeout, origin, authentication) runs in calls that
  return before the app starts, so nothing of it stays on an open connection.
* A connection then costs one coroutine frame of the pipeline's own, one :class:`_Flow`
  object that holds what every layer keeps per connection, and the app gets the flow's
  ``receive`` and ``send``.
* Each message from the client goes through the checks in one loop: dropped once the
  connection is closed (an eviction, a refusal, the app's own close), then size, heartbeat,
  rate limit, format, and the app. A check waits only
  when it must: to send an error frame or a pong, to close, or for a shared rate-limit
  storage.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsgate._query import redact_query
from wsgate.backends._ratebatch import Keys
from wsgate.connection import SEND_TIMEOUT_KEY, Connection, decoded
from wsgate.metrics import ConnectionRecord, MetricsMiddleware
from wsgate.middleware.auth import AuthMiddleware
from wsgate.middleware.connections import ConnectionLimitMiddleware
from wsgate.middleware.format import FormatMiddleware
from wsgate.middleware.heartbeat import HeartbeatMiddleware, Lifecycle
from wsgate.middleware.origin import OriginMiddleware
from wsgate.middleware.ratelimit import RateLimitMiddleware
from wsgate.middleware.size import MessageSizeMiddleware

__all__ = ["GatePipeline"]


class GatePipeline:
    """Every check of a gate in front of ``app``, as one ASGI app.

    Behaves as the middlewares nested outermost first: metrics, send timeout, origin,
    authentication, connection limit, message size, heartbeat, rate limit, format. Each
    middleware keeps its options and its logic; the pipeline calls its hooks in that order.
    Non-websocket scopes go straight to ``app``.

    Args:
        app: The endpoint or app behind the gate.
        metrics: Counts the connection and logs its end.
        send_timeout: Seconds a send may wait for a client that is not reading, or None;
            put in ``scope["wsgate.send_timeout"]``.
        origin: The origin check.
        auth: The authentication.
        limit: The connection limit, or None.
        size: The message size limit.
        heartbeat: The heartbeat and timeouts.
        rate: The rate limit, or None.
        format: The format check, or None to pass messages through unchecked.

    Attributes:
        layers: The middlewares, outermost first.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: MetricsMiddleware,
        send_timeout: float | None,
        origin: OriginMiddleware,
        auth: AuthMiddleware,
        limit: ConnectionLimitMiddleware | None,
        size: MessageSizeMiddleware,
        heartbeat: HeartbeatMiddleware,
        rate: RateLimitMiddleware | None,
        format: FormatMiddleware | None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.send_timeout = send_timeout
        self.origin = origin
        self.auth = auth
        self.limit = limit
        self.size = size
        self.heartbeat = heartbeat
        self.rate = rate
        self.format = format
        # A text of at most this many characters is within the size limit, whatever it holds.
        self._fits = size.max_bytes // 4
        chain = (metrics, origin, auth, limit, size, heartbeat, rate, format)
        self.layers: tuple[object, ...] = tuple(layer for layer in chain if layer is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        record = self.metrics.open(scope)
        failed = False
        try:
            flow = await self._handshake(scope, receive, send, record)
            if flow is not None:
                try:
                    await self.app(scope, flow.receive, flow.send)
                finally:
                    await flow.end()
        except Exception:
            failed = True
            raise
        finally:
            self.metrics.finish(scope, record, failed)

    async def _handshake(
        self, scope: Scope, receive: Receive, send: Send, record: ConnectionRecord
    ) -> _Flow | None:
        """Check the handshake; the flow the app gets, or None when it was refused.

        A refusal neither opens nor closes the metrics' connection, so the checks get the
        server's own ``receive`` and ``send``.
        """
        scope[SEND_TIMEOUT_KEY] = self.send_timeout
        # The token leaves the scope before any check can answer: the server's access line
        # is written from the scope when the handshake is answered, whoever answers it.
        query = scope.get("query_string", b"")
        query_param = self.auth.extractor.query_param
        if query_param is not None:
            redact_query(scope, query_param)
        if not await self.origin.check(scope, receive, send):
            return None
        authenticated = await self.auth.authenticate(scope, receive, send, query=query)
        if authenticated is None:
            return None
        return _Flow(self, scope, receive, authenticated, record)


class _Flow:
    """One connection through a pipeline: what every layer keeps for it, and the ``receive``
    and ``send`` the app gets.

    It is the connection limit's :class:`~wsgate.middleware.connections.Slot` and the rate
    limit's :class:`~wsgate.middleware.ratelimit.RateState`; the heartbeat keeps its timers in
    a :class:`~wsgate.middleware.heartbeat.Lifecycle`.
    """

    __slots__ = (
        "_receive",
        "_send",
        "connection",
        "counted",
        "lifecycle",
        "limit_key",
        "onward",
        "pipeline",
        "rate_key",
        "rate_keys",
        "record",
        "refused",
        "scope",
    )

    # Set by the connection limit's and the rate limit's begin(), when they are configured.
    limit_key: str
    counted: bool | None  # None: to be counted by the connection limit
    rate_key: str
    rate_keys: Keys
    refused: int

    def __init__(
        self,
        pipeline: GatePipeline,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: ConnectionRecord,
    ) -> None:
        self.pipeline = pipeline
        self.scope = scope
        self.record = record
        self._receive = receive
        self._send = send
        # The connection sends through transmit(), and the app through the connection. When
        # a layer in front of the gate made the connection, the app sends through transmit().
        transmit = self.transmit
        self.connection, onward = Connection.of(scope, transmit)
        self.onward: Send | None = transmit if onward is transmit else None
        if pipeline.limit is not None:
            pipeline.limit.begin(self, scope)
        else:
            self.counted = False  # nothing to count: the app's messages take the hot path
        self.lifecycle: Lifecycle = pipeline.heartbeat.begin(self.connection, scope)
        if pipeline.rate is not None:
            pipeline.rate.begin(self, scope)
        if pipeline.format is not None:
            pipeline.format.start(self.connection, scope)

    async def receive(self) -> Message:
        """The app's ``receive``: the next message that passes every check."""
        # Few locals on purpose: this frame stays suspended on every idle connection. The
        # small checks are written out here rather than called: a message pays for each
        # call, and a server runs them with cold caches, several times slower than a loop.
        pipeline = self.pipeline
        while True:
            if self.counted is None and pipeline.limit and pipeline.limit.must_admit(self):
                await pipeline.limit.admit(self)
            message = await self._receive()
            if message["type"] != "websocket.receive":
                self.record.receiving(message)
                if message["type"] == "websocket.disconnect":
                    self.lifecycle.stop()  # even if the app lingers after the client left
                return message
            # What record.receiving() does for a message, in line (and no local: see above).
            self.record.received += 1
            self.record.series.received.value += 1
            if self.connection.closed:
                # Queued before the gate (an eviction, a size or rate refusal, a heartbeat
                # timeout) or the app closed the connection: for nobody now.
                continue
            text = message.get("text")
            if (text is None or len(text) > pipeline._fits) and pipeline.size.too_large(message):
                await pipeline.size.refuse(self.connection)
                continue
            frame = self.lifecycle.seen(message)
            if frame is not None:
                await self.lifecycle.answer(frame, decoded(message))
                continue
            if pipeline.rate is not None:
                batch = (
                    pipeline.rate.batch_of(self, message)
                    if self.connection.protocol == "jsonrpc"
                    else None
                )
                allowed: bool | None
                if batch is not None:
                    allowed = await pipeline.rate.allows_batch(self, message, batch)
                else:
                    allowed = pipeline.rate.allows_now(self)
                    if allowed is None:
                        allowed = await pipeline.rate.allows(self)
                if not allowed:
                    await pipeline.rate.refuse(self, message)
                    continue
            if pipeline.format is not None:
                answer = pipeline.format.check(self.connection, self.scope, message)
                if answer is not None:
                    await answer
                    continue
            return message

    async def send(self, message: Message) -> None:
        """The app's ``send``."""
        if message["type"] == "websocket.send" and self.counted is not None and self.onward is None:
            # An open connection's data frame, the hot path: to the server, counted.
            connection = self.connection
            if connection.closed:
                return  # the gate closed the connection under the app
            rest = connection.start_sending(self._send(message), message)
            if rest is not None:
                await rest
            record = self.record  # what record.count_sent() does, in line
            record.sent += 1
            record.series.sent.value += 1
            return
        limit = self.pipeline.limit
        if self.counted is None and limit and limit.must_admit(self, message):
            await limit.admit(self)
        if self.onward is None:
            await self.connection.send(message)
        else:
            await self.onward(message)
        self.lifecycle.sent()

    async def transmit(self, message: Message) -> None:
        """Where the connection's sends go, the gate's own included: counted, then out."""
        counted = self.record.sending(message)
        await self._send(message)
        if counted:
            self.record.count_sent()

    async def end(self) -> None:
        """Stop the timers and free the connection's slot, however the connection ended."""
        self.lifecycle.stop()
        if self.pipeline.limit is not None:
            await self.pipeline.limit.release(self)
