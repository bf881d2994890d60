"""The gate's counters and gauges, and the one log line per refused or closed connection.

Every figure is labelled by endpoint (the route path, ``"*"`` for a gate in front of a whole
app); those that count outcomes are labelled by reason too, a row of the close-code table
(:data:`wsgate.CLOSE_CODES`) or of the error-frame table (:data:`wsgate.MESSAGE_ERRORS`).
The values live in this process's memory (:class:`Metrics`, what ``gate.stats()`` reads), or
in prometheus-client (:class:`PrometheusMetrics`, with the ``prometheus`` extra).

How the pieces fit, per gated endpoint::

    MetricsMiddleware        the outermost layer: counts messages in and out, logs the close
     └── ConnectionRecord    one per connection, in scope["wsgate.metrics"]; refuse(), the
          │                  Connection and the auth layer report to it
          └── EndpointMetrics  the endpoint's series, bound once when the endpoint is wrapped
               └── Metrics     where the values live: memory, or PrometheusMetrics

The hot path pays one increment of a number in memory per message, on a series bound in
advance: no label lookup, no string formatting, no prometheus-client call (those happen when
a scrape collects the values).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from starlette.authentication import BaseUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsgate._printable import printable
from wsgate.close_codes import CLOSE_CODES
from wsgate.error_frames import MESSAGE_ERRORS, MessageError
from wsgate.exceptions import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    from wsgate.config import GateConfig
    from wsgate.connection import Connection

__all__ = [
    "FAMILIES",
    "METRICS_KEY",
    "ConnectionRecord",
    "EndpointMetrics",
    "Family",
    "Metrics",
    "MetricsMiddleware",
    "PrometheusMetrics",
    "default_metrics",
    "report_refusal",
]

access_logger = logging.getLogger("wsgate.access")
"""One INFO line per refused connection and per closed connection, with ``extra=`` fields."""

METRICS_KEY: Final = "wsgate.metrics"
"""The scope key holding the connection's :class:`ConnectionRecord`."""

CLIENT: Final = "client"
"""The ``connections_closed`` reason of a connection the client closed (or lost)."""
SERVER: Final = "server"
"""The ``connections_closed`` reason of a connection the app closed, with a reason of its own."""
MAX_DETAIL: Final = 300
"""The most characters of a refusal's ``detail`` a log line shows."""
APP: Final = "app"
"""The ``connections_refused`` reason of a handshake the app itself refused."""


@dataclass(frozen=True)
class Family:
    """One metric: its key in ``gate.stats()``, its kind and what it counts.

    Attributes:
        key: The key in ``gate.stats()``; the Prometheus name is :attr:`name`.
        kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
        by_reason: Labelled by ``reason`` as well as ``endpoint``.
        help: What it counts, in one sentence.
    """

    key: str
    kind: Literal["counter", "gauge", "histogram"]
    by_reason: bool
    help: str

    @property
    def name(self) -> str:
        """The name Prometheus exposes, e.g. ``wsgate_connections_opened_total``."""
        return f"wsgate_{self.key}_total" if self.kind == "counter" else f"wsgate_{self.key}"

    @property
    def labels(self) -> tuple[str, ...]:
        return ("endpoint", "reason") if self.by_reason else ("endpoint",)


FAMILIES: tuple[Family, ...] = (
    Family("connections_opened", "counter", False, "Connections the app accepted."),
    Family("connections_active", "gauge", False, "Connections open now."),
    Family(
        "connections_refused",
        "counter",
        True,
        "Handshakes refused, by close-code table reason (app: refused by the app itself).",
    ),
    Family(
        "connections_closed",
        "counter",
        True,
        "Accepted connections that ended, by reason: the close-code table reason when the gate "
        "closed them, client when the client did, server when the app did.",
    ),
    Family(
        "evictions",
        "counter",
        False,
        "Open connections closed with 4008 to make room for a newer one of the same user.",
    ),
    Family("messages_received", "counter", False, "Messages from clients, before any check."),
    Family(
        "messages_sent",
        "counter",
        False,
        "Messages to clients: the app's, and the gate's pings, pongs and error frames.",
    ),
    Family(
        "message_errors",
        "counter",
        True,
        "Messages refused or failed, by error-frame table reason; internal_error counts the "
        "handler failures the connection survived.",
    ),
    Family(
        "auth_duration_seconds",
        "histogram",
        False,
        "Time to verify a handshake's token, in seconds (RemoteVerifier: the auth service's "
        "answer, or its cache).",
    ),
    Family(
        "auth_failures",
        "counter",
        False,
        "Tokens that could not be checked: the auth service was unreachable, slow, failing, or "
        "its circuit open.",
    ),
)
_FAMILY: Final = {family.key: family for family in FAMILIES}

_AUTH_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Bounds of the auth latency histogram, in seconds; RemoteVerifier times out at 5 s."""


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Counter, Protocol):
    def dec(self, amount: float = 1) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Value:
    """A counter or gauge in memory."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class _Summary:
    """A histogram in memory: how many observations, and their sum."""

    __slots__ = ("count", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.count += 1
        self.sum += amount


Sample = tuple[str, str, str, float]
"""(family key, endpoint, reason, value); a histogram gives reasons ``count`` and ``sum``."""


class Metrics:
    """The counters and gauges of a gate, in this process's memory.

    A :class:`~wsgate.Gate` creates one (``gate.metrics``) unless given another;
    ``gate.stats()`` returns :meth:`stats`. :class:`PrometheusMetrics` counts the same way
    and publishes the values to prometheus-client as well.

    Attributes:
        started: When the metrics were created (``time.monotonic()``), for the uptime.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._series: dict[tuple[str, str, str], Any] = {}
        self._endpoints: dict[str, EndpointMetrics] = {}

    @property
    def uptime(self) -> float:
        """Seconds since the metrics were created."""
        return time.monotonic() - self.started

    def endpoint(self, endpoint: str) -> EndpointMetrics:
        """The series of ``endpoint``, bound on first use."""
        found = self._endpoints.get(endpoint)
        if found is None:
            found = self._endpoints[endpoint] = EndpointMetrics(self, endpoint)
        return found

    def bind(self, key: str, endpoint: str, reason: str = "") -> Any:
        """The series of family ``key`` for these labels: something with ``inc`` (and ``dec``
        for a gauge) or ``observe`` (a histogram). Call it once, not per event."""
        labels = (key, endpoint, reason)
        series = self._series.get(labels)
        if series is None:
            family = _FAMILY[key]
            series = self._series[labels] = self._new_series(family, endpoint, reason)
        return series

    def stats(self) -> dict[str, Any]:
        """Every figure as a dict: totals at the top level, and per endpoint.

        Example::

            {"uptime": 61.2, "connections_opened": 12, "connections_active": 3,
             "connections_refused": {"auth_required": 2}, "connections_closed": {"client": 9},
             "evictions": 0, "messages_received": 230, "messages_sent": 241,
             "message_errors": {"rate_limited": 4}, "auth_failures": 0,
             "auth_duration_seconds": {"count": 14, "sum": 0.021},
             "endpoints": {"/ws": {...the same keys...}}}

        Reasons that never happened are left out of the ``reason`` dicts.
        """
        totals = _empty_stats()
        endpoints: dict[str, dict[str, Any]] = {}
        for key, endpoint, reason, value in self.samples():
            family = _FAMILY[key]
            if endpoint not in endpoints:
                endpoints[endpoint] = _empty_stats()
            _add(totals, family, reason, value)
            _add(endpoints[endpoint], family, reason, value)
        return {"uptime": round(self.uptime, 3), **totals, "endpoints": endpoints}

    def samples(self) -> Iterator[Sample]:
        """Every value, as (family key, endpoint, reason, value)."""
        for (key, endpoint, reason), series in list(self._series.items()):
            if isinstance(series, _Summary):
                yield key, endpoint, "count", series.count
                yield key, endpoint, "sum", series.sum
            else:
                yield key, endpoint, reason, series.value

    def watch(self) -> None:
        """Called by :class:`MetricsMiddleware` at the start of every connection, in the
        server's event loop. Nothing to do here; :class:`PrometheusMetrics` publishes from it."""

    def close(self) -> None:
        """Release what the metrics hold; the gate calls it from ``aclose()``."""

    def _new_series(self, family: Family, endpoint: str, reason: str) -> Any:
        return _Summary() if family.kind == "histogram" else _Value()


class PrometheusMetrics(Metrics):
    """The gate's metrics, published through prometheus-client for Prometheus to scrape.

    Needs the ``prometheus`` extra: ``pip install 'wsgate[prometheus]'``. A gate uses it by
    default when the extra is installed and ``metrics_path`` is set, and
    :func:`wsgate.discovery.discovery_routes` serves :meth:`exposition` there.

    The figures are counted in memory, as by :class:`Metrics`, and handed to prometheus-client
    when they are collected, so that a message never pays for a prometheus-client call. Only
    the auth latency goes to prometheus-client at once: its histogram needs every observation.

    With several worker processes (``uvicorn --workers N``), set ``PROMETHEUS_MULTIPROC_DIR``
    to an empty directory before the server starts. Every worker then publishes its values
    there every ``publish_interval`` seconds and when the gate closes, and a scrape answered
    by any worker adds them all up. The gauge of open connections counts live workers only; a
    worker removes its own at shutdown (``gate.aclose()``). Use one gate per process in that
    mode.

    Args:
        registry: Where to register the metrics in single-process mode. Defaults to a
            registry of their own, so that several gates in one process never clash; give
            ``prometheus_client.REGISTRY`` to serve them with your app's own metrics.

    Attributes:
        publish_interval: Seconds between two publications of a worker's values in
            multiprocess mode.
    """

    publish_interval: float = 1.0

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        try:
            import prometheus_client
        except ImportError:
            raise ConfigurationError(
                "PrometheusMetrics needs prometheus-client: pip install 'wsgate[prometheus]'."
            ) from None
        super().__init__()
        self._lock = threading.Lock()
        self._published: list[_Published] = []
        self._publishing_loop: asyncio.AbstractEventLoop | None = None
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess_dir is not None:
            registry = None  # every scrape collects the workers' files instead
        elif registry is None:
            registry = prometheus_client.CollectorRegistry()
        self.registry = registry
        if registry is not None:
            # Registered before the metrics, so collected first: it publishes their values.
            registry.register(cast("Collector", _Publisher(self)))
        self._families: dict[str, Any] = {}
        for family in FAMILIES:
            options: dict[str, Any] = {"registry": registry}
            if family.kind == "counter":
                kind: Any = prometheus_client.Counter
            elif family.kind == "gauge":
                kind = prometheus_client.Gauge
                options["multiprocess_mode"] = "livesum"
            else:
                kind = prometheus_client.Histogram
                options["buckets"] = _AUTH_BUCKETS
            # prometheus-client adds the _total suffix of a counter itself.
            self._families[family.key] = kind(
                f"wsgate_{family.key}", family.help, family.labels, **options
            )

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type.

        In multiprocess mode, the sum over every worker's values.
        """
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if self.multiprocess_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.publish()  # this worker's values are exact; the others' at most a second old
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        assert registry is not None  # set in __init__ unless in multiprocess mode
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def publish(self) -> None:
        """Hand prometheus-client what was counted since the last time. Thread-safe."""
        with self._lock:
            for published in list(self._published):
                value = published.series.value  # read once: the loop may be counting
                if published.gauge:
                    published.child.set(value)
                elif value != published.done:
                    published.child.inc(value - published.done)
                    published.done = value

    def watch(self) -> None:
        if self.multiprocess_dir is None:
            return  # a scrape publishes
        loop = asyncio.get_running_loop()
        if self._publishing_loop is not loop:
            self._publishing_loop = loop
            loop.call_later(self.publish_interval, self._tick, loop)

    def close(self) -> None:
        self._publishing_loop = None
        self.publish()
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._publishing_loop is not loop:
            return  # closed, or publishing from another loop now
        self.publish()
        loop.call_later(self.publish_interval, self._tick, loop)

    def _new_series(self, family: Family, endpoint: str, reason: str) -> Any:
        labels = (endpoint, reason) if family.by_reason else (endpoint,)
        child = self._families[family.key].labels(*labels)
        if family.kind == "histogram":
            return _Observed(child)
        series = _Value()
        self._published.append(_Published(series, child, gauge=family.kind == "gauge"))
        return series


class _Published:
    """A series counted in memory, and its prometheus-client child."""

    __slots__ = ("child", "done", "gauge", "series")

    def __init__(self, series: _Value, child: Any, *, gauge: bool) -> None:
        self.series = series
        self.child = child
        self.gauge = gauge
        self.done: float = 0  # what the child has been given so far (counters)


class _Observed(_Summary):
    """A histogram in memory for ``stats()``, and in prometheus-client for its buckets."""

    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        super().__init__()
        self.child = child

    def observe(self, amount: float) -> None:
        super().observe(amount)
        self.child.observe(amount)


class _Publisher:
    """Registered with the metrics: publishes their values when a scrape collects them."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # nothing of its own to expose

    def collect(self) -> list[Any]:
        self.metrics.publish()
        return []


def default_metrics(config: GateConfig) -> Metrics:
    """:class:`PrometheusMetrics` when the ``prometheus`` extra is installed and
    ``config.metrics_path`` is set, else :class:`Metrics`."""
    if config.metrics_path is not None and importlib.util.find_spec("prometheus_client"):
        return PrometheusMetrics()
    return Metrics()


def _empty_stats() -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for family in FAMILIES:
        if family.kind == "histogram":
            stats[family.key] = {"count": 0, "sum": 0.0}
        else:
            stats[family.key] = {} if family.by_reason else 0
    return stats


def _add(stats: dict[str, Any], family: Family, reason: str, value: float) -> None:
    if family.kind == "histogram":
        stats[family.key][reason] += value if reason == "sum" else int(value)
        return
    number = int(value) if float(value).is_integer() else value
    if not family.by_reason:
        stats[family.key] += number
    elif number:
        stats[family.key][reason] = stats[family.key].get(reason, 0) + number


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
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None = None, endpoint: str = "*"
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        record = self.open(scope)

        async def receive_message() -> Message:
            message = await receive()
            record.receiving(message)
            return message

        async def send_message(message: Message) -> None:
            counted = record.sending(message)
            await send(message)
            if counted:
                record.count_sent()

        failed = False
        try:
            await self.app(scope, receive_message, send_message)
        except Exception:
            failed = True
            raise
        finally:
            self.finish(scope, record, failed)

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


def report_refusal(
    scope: Scope,
    reason: str,
    *,
    close_code: int | None,
    http_status: int | None,
    detail: str = "",
) -> None:
    """Count a refused handshake and log its one line to ``wsgate.access``.

    :func:`~wsgate.close_codes.refuse` calls it; a middleware never needs to. The line's
    ``extra=`` fields are ``event`` (``"refused"``), ``endpoint``, ``path``, ``client``,
    ``reason``, ``close_code`` (refused after accept) or ``http_status`` (before accept),
    ``detail`` (why, for the operator; never a token), ``user_agent`` and ``duration``
    (seconds). Every value the client wrote (path, detail, user agent, address) is escaped
    and cut to length with :func:`wsgate._printable.printable`.
    """
    record: ConnectionRecord | None = scope.get(METRICS_KEY)
    if record is not None:
        record.refused(reason)
    if not access_logger.isEnabledFor(logging.INFO):
        return
    answer = f"HTTP {http_status}" if http_status is not None else str(close_code)
    path, client = printable(scope.get("path", "")), _client(scope)
    detail = printable(detail, MAX_DETAIL)
    access_logger.info(
        "refused %s from %s: %s %s%s",
        path,
        client or "unknown client",
        answer,
        reason,
        f" ({detail})" if detail else "",
        extra={
            "event": "refused",
            "endpoint": record.series.endpoint if record is not None else None,
            "path": path,
            "client": client,
            "reason": reason,
            "close_code": close_code,
            "http_status": http_status,
            "detail": detail,
            "user_agent": _user_agent(scope),
            "duration": round(record.duration, 3) if record is not None else None,
        },
    )


def _user_id(user: Any) -> str | None:
    """The user's id for a log line: the token's ``sub``, which the client chose."""
    if isinstance(user, BaseUser) and user.is_authenticated:
        return printable(user.identity)
    return None


def _user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return printable(value)
    return None


def _client(scope: Scope) -> str | None:
    """The client's address for a log line; behind ``--proxy-headers`` the client wrote it."""
    client = scope.get("client")
    return printable(f"{client[0]}:{client[1]}") if client else None
