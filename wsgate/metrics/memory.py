"""The gate's metrics in this process's memory, and ``gate.stats()``, which reads them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from wsgate.metrics._families import _FAMILY, FAMILIES, Family
from wsgate.metrics._series import _Summary, _Value
from wsgate.metrics.record import EndpointMetrics

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
