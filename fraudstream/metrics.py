"""Prometheus metrics of the sidecar, and the loopback-bound endpoint that serves them."""

from __future__ import annotations

import errno
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from fraudstream.health import HEALTH

__all__ = [
    "ALERTS",
    "DECISIONS",
    "DLQ",
    "DRIFT",
    "EVENTS",
    "HEALTH_METRICS",
    "INPROCESS",
    "INPUT",
    "LABELS",
    "LAST_BATCH",
    "LATENCY",
    "MODELS",
    "SCORES",
    "SCORE_BATCH",
    "SINK",
    "STATE",
    "STEP_ERRORS",
    "BatchHistogram",
    "StageHistogram",
    "serve_metrics",
]

EVENTS = Counter("fraudstream_events_total", "Input records read", ["topic"])
DLQ = Counter("fraudstream_dlq_total", "Records sent to a dead-letter topic", ["topic", "reason"])
DECISIONS = Counter(
    "fraudstream_decisions_total",
    "Decisions emitted, by action and deciding stage",
    ["action", "stage"],
)
LABELS = Counter("fraudstream_labels_total", "Labels by outcome", ["outcome"])


class _InputMetrics:
    """The ordered input reader's view of the broker (see fraudstream.reader)."""

    def __init__(self) -> None:
        self.buffered = Gauge(
            "fraudstream_input_buffered_records", "Records read but not yet released in order"
        )
        self.late = Gauge(
            "fraudstream_input_late_records",
            "Records stamped before their partition's floor (since start): behind an earlier "
            "record of the partition (the producer wrote it out of time order) or behind an idle "
            "bound (it reached a caught-up partition after the grace period)",
        )
        self.late_idle = Gauge(
            "fraudstream_input_late_idle_records",
            "Late records behind an idle bound (since start): the only ones whose place in the "
            "order depends on timing",
        )
        self.future_capped = Counter(
            "fraudstream_input_future_timestamps_total",
            "Records stamped ahead of the wall clock by more than the grace period",
        )
        self.paused = Gauge("fraudstream_input_paused_partitions", "Partitions paused (ahead)")
        self.lag = Gauge(
            "fraudstream_consumer_lag_records",
            "High watermark of the last fetch minus the next offset to read",
            ["topic", "partition"],
        )
        self.errors = Counter(
            "fraudstream_input_errors_total", "Consumer errors reported by the client", ["error"]
        )
        self.offset_out_of_range = Gauge(
            "fraudstream_input_offset_out_of_range",
            "1 when a partition's next offset was outside the broker's log",
            ["topic", "partition"],
        )
        self.offset_resets = Counter(
            "fraudstream_input_offset_resets_total",
            "Offsets moved by the offset policy (earliest/latest)",
            ["topic", "policy"],
        )


INPUT = _InputMetrics()


class _SinkMetrics:
    def __init__(self) -> None:
        self.errors = Counter(
            "fraudstream_sink_delivery_errors_total", "Failed deliveries (then retried)", ["error"]
        )
        self.dropped = Counter(
            "fraudstream_sink_dropped_total", "Records the broker refused even after truncation"
        )
        self.flush_seconds = Histogram(
            "fraudstream_sink_flush_seconds",
            "Time the snapshot waited for every written record to be acknowledged",
            buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10, 60),
        )


SINK = _SinkMetrics()


STEP_ERRORS = Counter(
    "fraudstream_processing_errors_total",
    "Records that failed in a step and went to the dead-letter topic",
    ["step"],
)


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


class StageHistogram:
    """Histograms of one quantity broken down by a ``stage`` label, fed a batch at a time.

    Also answers quantiles in-process (:meth:`quantiles`, interpolated within buckets) so that a
    benchmark or a log line can read them without scraping.
    """

    def __init__(
        self, name: str, documentation: str, stages: tuple[str, ...], buckets: tuple[float, ...]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.stages = stages
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros((len(stages), len(buckets) + 1), dtype=np.int64)
        self._sums = np.zeros(len(stages))
        self._index = {s: i for i, s in enumerate(stages)}
        self._lock = threading.Lock()

    def observe_many(self, stage: str, values: np.ndarray) -> None:
        if not len(values):
            return
        idx = np.searchsorted(self.bounds, values, side="left")  # "le" buckets, as Prometheus
        counts = np.bincount(idx, minlength=self._counts.shape[1])
        total = float(values.sum())
        row = self._index[stage]
        with self._lock:
            self._counts[row] += counts
            self._sums[row] += total

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts per stage and bucket, sums per stage)``: diff two to get an interval."""
        with self._lock:
            return self._counts.copy(), self._sums.copy()

    def quantiles(
        self, qs: tuple[float, ...], since: tuple[np.ndarray, np.ndarray] | None = None
    ) -> dict[str, list[float]]:
        """Per stage, the quantiles ``qs`` (0-1) of the values observed (since ``since``),
        linear within a bucket; NaN without observations."""
        counts, _ = self.snapshot()
        if since is not None:
            counts = counts - since[0]
        return {
            s: quantiles_from_buckets(self.bounds, counts[i], qs) for s, i in self._index.items()
        }

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts, axis=1).tolist()
            sums = self._sums.tolist()
        bounds = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation, labels=["stage"])
        for stage, row in self._index.items():
            family.add_metric([stage], list(zip(bounds, cumulative[row], strict=True)), sums[row])
        return [family]


def quantiles_from_buckets(
    bounds: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]
) -> list[float]:
    """Quantiles of a histogram (``counts[i]`` values in ``(bounds[i-1], bounds[i]]``, the last
    above every bound), linear within the bucket; the top bucket reports its lower bound."""
    total = int(counts.sum())
    if not total:
        return [float("nan")] * len(qs)
    cum = np.cumsum(counts)
    lows = np.concatenate([[0.0], bounds])
    highs = np.concatenate([bounds, [bounds[-1]]])
    out = []
    for q in qs:
        rank = q * total
        i = int(np.searchsorted(cum, rank, side="left"))
        i = min(i, len(counts) - 1)
        before = cum[i] - counts[i]
        frac = (rank - before) / counts[i] if counts[i] else 0.0
        out.append(float(lows[i] + (highs[i] - lows[i]) * min(max(frac, 0.0), 1.0)))
    return out


# From the Kafka client handing a record to the reader to the moment its decision is handed to
# the producer, in this process, split into where the time went: ``merge`` (the order merge holds
# it until every partition has passed its timestamp: the price of a deterministic order),
# ``queue`` (released by the poll -> the ingest step starts on it), ``state`` (ingest, entity
# partitions, waiting for every part), ``scoring`` (the decision step's batch: models, records,
# decision store), ``sink`` (-> handed to the Kafka producer); ``total`` is their sum. Broker and
# network time, and time in the client's own queue, are outside: see LATENCY.
_LATENCY_BUCKETS = tuple(float(f"{b:.3g}") for b in np.geomspace(0.0005, 30.0, 49))
INPROCESS = StageHistogram(
    "fraudstream_inprocess_latency_seconds",
    "From the client handing a transaction to the reader to its decision handed to the "
    "producer, by stage",
    ("merge", "queue", "state", "scoring", "sink", "total"),
    _LATENCY_BUCKETS,
)
REGISTRY.register(INPROCESS)

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


class _ModelMetrics:
    """What the decision step's models do (see fraudstream.models.decide)."""

    def __init__(self) -> None:
        self.info = Gauge(
            "fraudstream_model_info",
            "1 for every model in use: its registry version, kind and stage",
            ["version", "kind", "stage"],
        )
        self.score_seconds = Histogram(
            "fraudstream_model_score_seconds",
            "Time to score one batch, per model",
            ["version", "stage"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5),
        )
        self.failures = Counter(
            "fraudstream_model_failures_total",
            "Models that failed to load or to score and left the decision step",
            ["version", "stage"],
        )
        self.learned = Counter(
            "fraudstream_challenger_learned_total", "Label changes the online challenger learned"
        )
        self.learn_missing = Counter(
            "fraudstream_challenger_learn_missing_total",
            "Label changes with no decision-time features left to learn from",
        )


MODELS = _ModelMetrics()
SCORES = {
    role: BatchHistogram(
        f"fraudstream_{role}_score",
        f"Scores of the {role} model",
        buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
    )
    for role in ("champion", "challenger")
}
for _hist in SCORES.values():
    REGISTRY.register(_hist)


class _StateMetrics:
    def __init__(self) -> None:
        self.cache = Counter(
            "fraudstream_state_cache_lookups_total",
            "Entity histories looked up in the write-back cache",
            ["result"],
        )
        self.keys = Gauge(
            "fraudstream_state_keys",
            "Estimated keys in the state stores (RocksDB estimate), by family",
            ["family"],
        )
        self.disk_bytes = Gauge(
            "fraudstream_state_disk_bytes",
            "Bytes of the state stores on disk, by family",
            ["family"],
        )
        self.snapshot_seconds = Histogram(
            "fraudstream_snapshot_seconds",
            "Time a step's epoch snapshot took (flush, commit of the undo log)",
            ["step"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )


STATE = _StateMetrics()
ALERTS = Counter(
    "fraudstream_alerts_total",
    "Alert records published (topic alerts), by kind, severity and state",
    ["kind", "severity", "state"],
)
DRIFT = Gauge(
    "fraudstream_drift_statistic",
    "The drift monitor's current statistics (PSI, rolling recall/FPR/AUC, ...), by name",
    ["name"],
)
# Every (kind, severity, state) the decision step can publish starts at 0. A counter series that
# appears at its first increment hides that increment from rate() and increase(), and the alert
# rules (deploy/prometheus/alerts.yml) count exactly these first increments.
for _kind, _severity, _states in (
    ("score_drift", "warning", ("firing", "resolved")),  # score_psi
    ("score_drift", "info", ("firing", "resolved")),  # score_adwin
    ("feature_drift", "warning", ("firing", "resolved")),
    ("performance", "critical", ("firing", "resolved")),
    ("challenger_better", "info", ("firing", "resolved")),
    ("canary_halt", "warning", ("firing",)),
    ("model_failure", "critical", ("firing",)),  # the production model
    ("model_failure", "warning", ("firing",)),  # a canary or shadow model
):
    for _state in _states:
        ALERTS.labels(_kind, _severity, _state)


class _HealthCollector:
    """``/readyz`` and ``/healthz`` as gauges, read from :data:`~fraudstream.health.HEALTH` at
    scrape time: Prometheus does not probe those paths, and the alert rules need both."""

    def collect(self) -> list[GaugeMetricFamily]:
        failing = HEALTH.failing()
        stalled = HEALTH.stalled()
        ready = GaugeMetricFamily(
            "fraudstream_ready", "1 when /readyz answers 200 (every readiness condition holds)"
        )
        ready.add_metric([], 0.0 if failing else 1.0)
        conditions = GaugeMetricFamily(
            "fraudstream_readiness_failing",
            "1 for each readiness condition that fails (the lines /readyz lists)",
            labels=["condition"],
        )
        for name in sorted(failing):
            conditions.add_metric([name], 1.0)
        live = GaugeMetricFamily(
            "fraudstream_live",
            "1 when /healthz answers 200; 0 when a component has had work pending and made no "
            "progress for longer than the stall timeout",
        )
        live.add_metric([], 0.0 if stalled else 1.0)
        components = GaugeMetricFamily(
            "fraudstream_stalled",
            "1 for each component that /healthz reports stalled",
            labels=["component"],
        )
        for name in sorted(stalled):
            components.add_metric([name], 1.0)
        return [ready, conditions, live, components]


HEALTH_METRICS = _HealthCollector()
REGISTRY.register(HEALTH_METRICS)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(metrics_app: Any) -> Any:
    def text(start_response: Any, status: str, body: str) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode()]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO")
        if path == "/healthz":
            stalled = HEALTH.stalled()
            if not stalled:
                return text(start_response, "200 OK", "ok\n")
            body = "".join(f"{name}: {detail}\n" for name, detail in sorted(stalled.items()))
            return text(start_response, "503 Service Unavailable", "stalled\n" + body)
        if path == "/readyz":
            failing = HEALTH.failing()
            if not failing:
                return text(start_response, "200 OK", "ready\n")
            body = "".join(f"{name}: {detail}\n" for name, detail in sorted(failing.items()))
            return text(start_response, "503 Service Unavailable", "not ready\n" + body)
        if path == "/metrics":
            return metrics_app(environ, start_response)
        return text(start_response, "404 Not Found", "not found\n")

    return app


def serve_metrics(port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` (503 with the failing conditions of
    :data:`fraudstream.health.HEALTH`) in a daemon thread; loopback unless told otherwise.

    ``port=0`` picks a free port (``server.server_port``).
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            server = make_server(addr, port, _app(make_wsgi_app()), handler_class=_Quiet)
            break
        except OSError as exc:
            # a previous instance that was just killed may hold the port for a moment
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # retrying the bind within a deadline
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    LAST_BATCH.set(time.time())
    return server
