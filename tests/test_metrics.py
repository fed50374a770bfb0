"""The metrics endpoint: loopback by default, /metrics, /healthz, /readyz, 404 elsewhere."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from fraudstream.health import HEALTH
from fraudstream.metrics import DLQ, serve_metrics


def test_metrics_and_health_on_loopback():
    server = serve_metrics(0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        base = f"http://127.0.0.1:{server.server_port}"
        DLQ.labels("t.dlq", "invalid_json").inc()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert resp.read() == b"ok\n"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'fraudstream_dlq_total{reason="invalid_json",topic="t.dlq"}' in body
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nonexistent", timeout=5)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_readiness_reports_every_failing_condition():
    server = serve_metrics(0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        HEALTH.set("test:input", True)
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
            assert resp.status == 200
        HEALTH.set("test:input", False, "topic missing")
        with pytest.raises(urllib.error.HTTPError) as unready:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert unready.value.code == 503
        assert "test:input: topic missing" in unready.value.read().decode()
    finally:
        HEALTH.clear("test:input")
        server.shutdown()
        server.server_close()


def test_batch_histogram_buckets_are_cumulative_and_inclusive():
    import numpy as np
    from prometheus_client import CollectorRegistry, generate_latest

    from fraudstream.metrics import BatchHistogram

    hist = BatchHistogram("t_seconds", "test", buckets=(0.01, 0.1, 1.0))
    registry = CollectorRegistry()
    registry.register(hist)  # type: ignore[arg-type]
    hist.observe_many(np.array([0.005, 0.01, 0.05, 0.5, 2.0]))
    hist.observe_many(np.array([]))
    text = generate_latest(registry).decode()
    assert 't_seconds_bucket{le="0.01"} 2.0' in text  # a value on a bound counts in it
    assert 't_seconds_bucket{le="0.1"} 3.0' in text
    assert 't_seconds_bucket{le="1.0"} 4.0' in text
    assert 't_seconds_bucket{le="+Inf"} 5.0' in text
    assert "t_seconds_count 5.0" in text
    assert "t_seconds_sum 2.565" in text


def test_liveness_fails_only_when_work_waits_without_progress():
    from fraudstream.health import Health

    now = [0.0]
    health = Health(clock=lambda: now[0])
    health.stall_timeout_s = 10
    health.progress("input", pending=0, advanced=False)
    now[0] = 100
    assert health.stalled() == {}  # idle is not stuck
    health.progress("input", pending=5, advanced=False)
    now[0] = 105
    assert health.stalled() == {}
    now[0] = 111
    assert list(health.stalled()) == ["input"]  # waiting for 11 s with nothing done
    health.progress("input", pending=5, advanced=True)
    assert health.stalled() == {}
