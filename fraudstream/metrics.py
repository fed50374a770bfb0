"""Prometheus metrics of the sidecar, and the loopback-bound endpoint that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

__all__ = [
    "DECISIONS",
    "DLQ",
    "EVENTS",
    "LABELS",
    "LATENCY",
    "SCORE_BATCH",
    "serve_metrics",
]

EVENTS = Counter("fraudstream_events_total", "Input records read", ["topic"])
DLQ = Counter("fraudstream_dlq_total", "Records sent to a dead-letter topic", ["topic", "reason"])
DECISIONS = Counter("fraudstream_decisions_total", "Decisions emitted", ["action"])
LABELS = Counter("fraudstream_labels_total", "Labels by outcome", ["outcome"])
LATENCY = Histogram(
    "fraudstream_event_to_decision_seconds",
    "From the input record's Kafka timestamp to the decision",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCORE_BATCH = Histogram(
    "fraudstream_score_batch_rows",
    "Rows per champion scoring call",
    buckets=(1, 4, 16, 64, 256, 1024, 4096),
)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve /metrics; loopback unless an address is chosen explicitly."""
    start_http_server(port, addr=addr)
