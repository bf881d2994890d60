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

One module per piece: ``middleware`` (:class:`MetricsMiddleware`), ``record``
(:class:`ConnectionRecord`, :class:`EndpointMetrics`), ``memory`` (:class:`Metrics`),
``prometheus`` (:class:`PrometheusMetrics`, :func:`default_metrics`), ``access``
(:func:`report_refusal` and the access log), and the private ``_families`` (the table of
families) and ``_series`` (one series in memory). Import every name from here.
"""

from __future__ import annotations

from wsgate.metrics._families import APP as APP
from wsgate.metrics._families import CLIENT as CLIENT
from wsgate.metrics._families import FAMILIES, Family
from wsgate.metrics._families import SERVER as SERVER
from wsgate.metrics._series import Counter as Counter
from wsgate.metrics._series import Gauge as Gauge
from wsgate.metrics._series import Histogram as Histogram
from wsgate.metrics.access import MAX_DETAIL, report_refusal
from wsgate.metrics.access import access_logger as access_logger
from wsgate.metrics.memory import Metrics
from wsgate.metrics.memory import Sample as Sample
from wsgate.metrics.middleware import MetricsMiddleware
from wsgate.metrics.prometheus import PrometheusMetrics, default_metrics
from wsgate.metrics.record import METRICS_KEY, ConnectionRecord, EndpointMetrics

__all__ = [
    "FAMILIES",
    "MAX_DETAIL",
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
