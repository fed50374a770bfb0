"""The metrics endpoint: loopback by default, /metrics and /healthz."""

from __future__ import annotations

import urllib.request

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
    finally:
        server.shutdown()
        server.server_close()
