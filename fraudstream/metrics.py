"""Prometheus metrics of the sidecar, and the loopback-bound endpoint that serves them."""

from __future__ import annotations

import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import HistogramMetricFamily

__all__ = [
    "DECISIONS",
    "DLQ",
    "EVENTS",
    "LABELS",
    "LAST_BATCH",
    "LATENCY",
    "SCORE_BATCH",
    "BatchHistogram",
    "serve_metrics",
]

EVENTS = Counter("fraudstream_events_total", "Input records read", ["topic"])
DLQ = Counter("fraudstream_dlq_total", "Records sent to a dead-letter topic", ["topic", "reason"])
DECISIONS = Counter("fraudstream_decisions_total", "Decisions emitted", ["action"])
LABELS = Counter("fraudstream_labels_total", "Labels by outcome", ["outcome"])


class BatchHistogram:
    """A Prometheus histogram fed a whole batch at a time (one numpy call, not one per value).

    ``prometheus_client.Histogram.observe`` costs a few microseconds per value; per decision
    that is a visible share of the per-event budget.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if not len(values):
            return
        # Prometheus buckets are "less than or equal": a value on a bound counts in that bucket.
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        bounds = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(bounds, cumulative, strict=True)), total)
        return [family]


LATENCY = BatchHistogram(
    "fraudstream_event_to_decision_seconds",
    "From the input record's Kafka timestamp to the decision",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REGISTRY.register(LATENCY)
SCORE_BATCH = Histogram(
    "fraudstream_score_batch_rows",
    "Rows per champion scoring call",
    buckets=(1, 4, 16, 64, 256, 1024, 4096),
)


LAST_BATCH = Gauge("fraudstream_last_batch_unixtime", "When the flow last handled an input batch")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(metrics_app: Any) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return metrics_app(environ, start_response)

    return app


def serve_metrics(port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` in a daemon thread; loopback unless told otherwise.

    ``port=0`` picks a free port (``server.server_port``).
    """
    server = make_server(addr, port, _app(make_wsgi_app()), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    LAST_BATCH.set(time.time())
    return server
