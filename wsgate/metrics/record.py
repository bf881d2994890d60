"""What the hot path counts on: an endpoint's series, bound once, and one connection's record."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Literal

from starlette.types import Message

from wsgate.close_codes import CLOSE_CODES, Refusal
from wsgate.error_frames import MESSAGE_ERRORS, MessageError
from wsgate.metrics._families import APP, CLIENT, SERVER
from wsgate.metrics._series import Counter, Gauge, Histogram, _Value

if TYPE_CHECKING:
    from wsgate.connection import Connection
    from wsgate.metrics.memory import Metrics

METRICS_KEY: Final = "wsgate.metrics"
"""The scope key holding the connection's :class:`ConnectionRecord`."""


class EndpointMetrics:
    """The series of one endpoint, bound once, for the hot path to increment.

    Attributes:
        endpoint: The ``endpoint`` label.
        refused: ``connections_refused`` by reason.
        closed: ``connections_closed`` by reason.
        errors: ``message_errors`` by reason.
    """

    __slots__ = (
        "_metrics",
        "active",
        "auth_duration",
        "auth_failures",
        "closed",
        "endpoint",
        "errors",
        "evictions",
        "opened",
        "received",
        "refused",
        "sent",
    )

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        bind = metrics.bind
        self._metrics = metrics
        self.endpoint = endpoint
        self.opened: Counter = bind("connections_opened", endpoint)
        self.active: Gauge = bind("connections_active", endpoint)
        self.evictions: Counter = bind("evictions", endpoint)
        # Counted on every message: in memory always (_Value), whatever the metrics publish to.
        self.received: _Value = bind("messages_received", endpoint)
        self.sent: _Value = bind("messages_sent", endpoint)
        self.auth_duration: Histogram = bind("auth_duration_seconds", endpoint)
        self.auth_failures: Counter = bind("auth_failures", endpoint)
        # Every reason the gate knows starts at zero, so that rate() sees its first event.
        refusable = [row.reason for row in CLOSE_CODES if row.http_status is not None]
        closing = [row.reason for row in CLOSE_CODES if not row.handshake_only]
        self.refused: dict[str, Counter] = {
            reason: bind("connections_refused", endpoint, reason) for reason in (*refusable, APP)
        }
        self.closed: dict[str, Counter] = {
            reason: bind("connections_closed", endpoint, reason)
            for reason in (*closing, CLIENT, SERVER)
        }
        self.errors: dict[str, Counter] = {
            error.code: bind("message_errors", endpoint, error.code) for error in MESSAGE_ERRORS
        }

    def declare(self, close_codes: Iterable[Refusal], error_frames: Iterable[MessageError]) -> None:
        """Start the series of more rows at zero: those a user's checks declare."""
        bind, endpoint = self._metrics.bind, self.endpoint
        for row in close_codes:
            if row.http_status is not None and row.reason not in self.refused:
                self.refused[row.reason] = bind("connections_refused", endpoint, row.reason)
            if not row.handshake_only and row.reason not in self.closed:
                self.closed[row.reason] = bind("connections_closed", endpoint, row.reason)
        for error in error_frames:
            if error.code not in self.errors:
                self.errors[error.code] = bind("message_errors", endpoint, error.code)

    def refusal(self, reason: str) -> Counter:
        """The ``connections_refused`` series of ``reason``, bound if it is a new one."""
        series = self.refused.get(reason)
        if series is None:
            series = self.refused[reason] = self._metrics.bind(
                "connections_refused", self.endpoint, reason
            )
        return series

    def error(self, code: str) -> Counter:
        """The ``message_errors`` series of ``code``, bound if it is a new one."""
        series = self.errors.get(code)
        if series is None:
            series = self.errors[code] = self._metrics.bind("message_errors", self.endpoint, code)
        return series


class ConnectionRecord:
    """One connection as the metrics and the access log see it: ``scope["wsgate.metrics"]``.

    :class:`MetricsMiddleware` creates it at the start of the handshake. The layers report
    to it: :func:`~wsgate.close_codes.refuse` a refusal, the
    :class:`~wsgate.connection.Connection` an error frame, the auth layer how long the
    token took to verify.

    Attributes:
        series: The endpoint's series.
        started: When the handshake reached the gate (``time.monotonic()``).
        connection: The connection's :class:`~wsgate.connection.Connection`, once a layer
            created it.
        refusal: The reason the gate refused the handshake, or None.
        opened: True once the app accepted the connection.
        received: Messages from the client.
        sent: Messages to the client.
        closed_by: ``"client"`` or ``"server"``: who closed first; None while open.
        close_code: The code of that close.
        close_reason: The reason of that close.
    """

    __slots__ = (
        "close_code",
        "close_reason",
        "closed_by",
        "connection",
        "opened",
        "received",
        "refusal",
        "sent",
        "series",
        "started",
    )

    def __init__(self, series: EndpointMetrics) -> None:
        self.series = series
        self.started = time.monotonic()
        self.connection: Connection | None = None
        self.refusal: str | None = None
        self.opened = False
        self.received = 0
        self.sent = 0
        self.closed_by: Literal["client", "server"] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def duration(self) -> float:
        """Seconds since the handshake reached the gate."""
        return time.monotonic() - self.started

    def receiving(self, message: Message) -> None:
        """Note a message from the client on its way in: count it, or note the client's
        close."""
        kind = message["type"]
        if kind == "websocket.receive":
            self.received += 1
            self.series.received.value += 1  # what inc() does, without the call
        elif kind == "websocket.disconnect" and self.closed_by is None:
            self.closed_by = "client"
            self.close_code = message.get("code", 1005)
            self.close_reason = message.get("reason") or ""

    def sending(self, message: Message) -> bool:
        """Note a message to the client before it goes out: the accept opens the connection,
        the first close says who closed it. True for a ``websocket.send``, which
        :meth:`count_sent` counts once it has gone out."""
        kind = message["type"]
        if kind == "websocket.send":
            return True
        if kind == "websocket.accept":
            if self.refusal is None and not self.opened:
                self.opened = True
                self.series.opened.inc()
                self.series.active.inc()
        elif kind == "websocket.close" and self.closed_by is None:
            self.closed_by = "server"
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""
        return False

    def count_sent(self) -> None:
        """A ``websocket.send`` went out."""
        self.sent += 1
        self.series.sent.value += 1

    def refused(self, reason: str) -> None:
        """The handshake is refused with ``reason``; the app will never run."""
        self.refusal = reason
        self.series.refusal(reason).inc()
        if reason == "auth_unavailable":
            self.series.auth_failures.inc()

    def error(self, error: MessageError) -> None:
        """A message was refused or failed with ``error``."""
        self.series.error(error.code).inc()
        if error.code == "auth_unavailable":  # a token refresh the auth service did not check
            self.series.auth_failures.inc()

    def evicted(self) -> None:
        """The connection is closed to make room for a newer one of its user."""
        self.series.evictions.inc()

    def verified(self, seconds: float) -> None:
        """The handshake's token took ``seconds`` to verify (or to fail to)."""
        self.series.auth_duration.observe(seconds)
