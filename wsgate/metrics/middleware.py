"""The outermost layer of a gated endpoint: it counts the connection and logs its end."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from wsgate._printable import printable
from wsgate.close_codes import Refusal
from wsgate.error_frames import MessageError
from wsgate.exceptions import ConfigurationError
from wsgate.metrics._families import APP, CLIENT, SERVER
from wsgate.metrics.access import _client, _user_id, access_logger, report_refusal
from wsgate.metrics.memory import Metrics
from wsgate.metrics.record import METRICS_KEY, ConnectionRecord

if TYPE_CHECKING:
    from wsgate.engine import Engine


class MetricsMiddleware:
    """Count a WebSocket endpoint's connections and messages, and log each one's end.

    The outermost layer of every endpoint a :class:`~wsgate.Gate` wraps. It puts a
    :class:`ConnectionRecord` in ``scope["wsgate.metrics"]``, counts every message in and out
    (one increment each), and when the connection ends, counts it and logs one line to the
    ``wsgate.access`` logger (refusals are logged where they are decided, by
    :func:`~wsgate.close_codes.refuse`). The line's ``extra=`` fields are ``event``
    (``"closed"``), ``endpoint``, ``path``, ``connection_id``, ``user_id``, ``client``,
    ``close_code``, ``reason``, ``closed_by``, ``duration`` (seconds), ``messages_in`` and
    ``messages_out``.

    Args:
        app: The ASGI app to observe.
        metrics: Where to count; a new :class:`Metrics` by default.
        endpoint: The ``endpoint`` label: the route path, or ``"*"`` for a whole app. Never
            the request's own path, whose user ids would make a label per user.
        close_codes: Close-code rows of your own checks, counted from zero with wsgate's.
        error_frames: Error-frame rows of your own checks, counted from zero with wsgate's.
    """

    _engine: Engine | None = None

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None = None,
        endpoint: str = "*",
        close_codes: Iterable[Refusal] = (),
        error_frames: Iterable[MessageError] = (),
    ) -> None:
        if metrics is not None and not isinstance(metrics, Metrics):
            raise ConfigurationError(
                f"metrics must be a Metrics or PrometheusMetrics from wsgate.metrics, not "
                f"{metrics!r}."
            )
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigurationError(
                f"endpoint must be the route path, such as '/ws', or '*', not {endpoint!r}."
            )
        self.app = app
        self.metrics = metrics if metrics is not None else Metrics()
        self.series = self.metrics.endpoint(endpoint)
        self.series.declare(close_codes, error_frames)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self._engine
        if engine is None:
            from wsgate.engine import Engine  # the engine's module imports this package

            engine = self._engine = Engine(self.app, (), metrics=self)
        await engine(scope, receive, send)

    def open(self, scope: Scope) -> ConnectionRecord:
        """Start the record of a new connection, in ``scope["wsgate.metrics"]``."""
        record = ConnectionRecord(self.series)
        scope[METRICS_KEY] = record
        self.metrics.watch()
        return record

    def finish(self, scope: Scope, record: ConnectionRecord, failed: bool) -> None:
        """Count the end of a connection and log its line; ``failed`` when the app raised."""
        connection, record.connection = record.connection, None  # no cycle left behind
        if record.refusal is not None:
            return  # refuse() counted and logged it
        series = self.series
        if not record.opened:
            if record.closed_by == "server":  # the app closed the handshake: the server's 403
                report_refusal(scope, APP, close_code=None, http_status=403)
            return  # else the client left during the handshake
        series.active.dec()
        code = record.close_code
        if record.closed_by == "server":
            reason = record.close_reason if record.close_reason in series.closed else SERVER
        elif record.closed_by == "client":
            # Whatever code the close carries: a client may send 1009 or 4008 itself, and a
            # gate refusal is counted only when the gate refused. (The server's own size cap
            # reports 1009 the same way, and cannot be told apart from it.)
            reason = CLIENT
        else:  # the app returned or raised without closing; the server closes for it
            reason, code = ("internal_error", 1011) if failed else (SERVER, 1000)
        series.closed[reason].inc()
        if not access_logger.isEnabledFor(logging.INFO):
            return  # spare every connection the fields of a line nobody reads
        user = connection.user if connection is not None else None
        path, user_id = printable(scope.get("path", "")), _user_id(user)
        access_logger.info(
            "closed %s %s for %s: %s %s by the %s after %.1f s, %d in, %d out",
            path,
            connection.id if connection is not None else "-",
            user_id or "anonymous",
            code,
            reason,
            record.closed_by or "server",
            record.duration,
            record.received,
            record.sent,
            extra={
                "event": "closed",
                "endpoint": series.endpoint,
                "path": path,
                "connection_id": connection.id if connection is not None else None,
                "user_id": user_id,
                "client": _client(scope),
                "close_code": code,
                "reason": reason,
                "closed_by": record.closed_by or "server",
                "duration": round(record.duration, 3),
                "messages_in": record.received,
                "messages_out": record.sent,
            },
        )
