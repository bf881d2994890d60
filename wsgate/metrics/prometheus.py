"""The gate's metrics published through prometheus-client, and the choice of the default.

prometheus-client is the ``prometheus`` extra: it is imported when a :class:`PrometheusMetrics`
is created, never when wsgate is.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from typing import TYPE_CHECKING, Any, Final, cast

from wsgate.exceptions import ConfigurationError
from wsgate.metrics._families import FAMILIES, Family
from wsgate.metrics._series import _Summary, _Value
from wsgate.metrics.memory import Metrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    from wsgate.config import GateConfig

_AUTH_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Bounds of the auth latency histogram, in seconds; RemoteVerifier times out at 5 s."""


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
