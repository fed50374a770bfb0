"""The metrics the rules read beyond the flow's own: /readyz and /healthz as gauges, and alert
counters that exist at 0 before their first increment (which rate() and increase() would miss
on a series that appears with it)."""

from __future__ import annotations

from prometheus_client import generate_latest

import fraudstream.metrics as metrics
from fraudstream.health import Health


def _samples() -> dict[str, float]:
    out = {}
    for line in generate_latest().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_readiness_and_liveness_are_gauges(monkeypatch):
    now = [1000.0]
    health = Health(clock=lambda: now[0])
    health.stall_timeout_s = 10
    monkeypatch.setattr(metrics, "HEALTH", health)
    s = _samples()
    assert s["fraudstream_ready"] == 1 and s["fraudstream_live"] == 1
    assert not [
        k for k in s if k.startswith(("fraudstream_readiness_failing", "fraudstream_stalled"))
    ]

    health.set("input:transactions", False, "topic missing")
    health.set("input:labels", True)
    health.progress("decide", pending=3, advanced=False)
    now[0] += 11
    s = _samples()
    assert s["fraudstream_ready"] == 0
    assert s['fraudstream_readiness_failing{condition="input:transactions"}'] == 1
    assert 'fraudstream_readiness_failing{condition="input:labels"}' not in s
    assert s["fraudstream_live"] == 0
    assert s['fraudstream_stalled{component="decide"}'] == 1

    health.set("input:transactions", True)
    health.progress("decide", pending=0, advanced=True)
    s = _samples()
    assert s["fraudstream_ready"] == 1 and s["fraudstream_live"] == 1


def test_alert_counters_the_rules_count_start_at_zero():
    s = _samples()
    for kind, severity, states in (
        ("performance", "critical", ("firing", "resolved")),
        ("challenger_better", "info", ("firing", "resolved")),
        ("canary_halt", "warning", ("firing",)),
        ("model_failure", "critical", ("firing",)),
        ("model_failure", "warning", ("firing",)),
    ):
        for state in states:
            key = f'fraudstream_alerts_total{{kind="{kind}",severity="{severity}",state="{state}"}}'
            assert key in s, key
