"""In-process latency: every decision of a run is timed once per stage, and the stages add up."""

from __future__ import annotations

import numpy as np
from prometheus_client import REGISTRY

from fraudstream.flows.run import run_flow
from fraudstream.metrics import INPROCESS, StageHistogram, quantiles_from_buckets
from tests.flows.conftest import load_history, recent_stream


def test_each_decision_is_timed_once_and_the_stages_add_up(
    kafka_settings, topics, flow_config, tmp_path
):
    t = topics(tx_partitions=2)
    sim = recent_stream(seed=31, customers=80, days=3, days_ago=20)
    load_history(kafka_settings, t, sim)
    before = INPROCESS.snapshot()
    run_flow(flow_config(t, tmp_path / "state", batch_size=150), recovery_dir=None)
    counts, sums = INPROCESS.snapshot()
    counts, sums = counts - before[0], sums - before[1]
    per_stage = dict(zip(INPROCESS.stages, counts.sum(axis=1).tolist(), strict=True))
    assert set(per_stage.values()) == {len(sim.transactions)}, per_stage
    parts = dict(zip(INPROCESS.stages, sums.tolist(), strict=True))
    stage_sum = sum(parts[s] for s in ("merge", "queue", "state", "scoring", "sink"))
    assert abs(stage_sum - parts["total"]) < 1e-3 * len(sim.transactions)
    assert parts["total"] > 0
    exported = {
        s.labels["stage"]: s.value
        for m in REGISTRY.collect()
        for s in m.samples
        if s.name == "fraudstream_inprocess_latency_seconds_count"
    }
    assert set(exported) == set(INPROCESS.stages)


def test_quantiles_interpolate_within_buckets():
    bounds = np.array([1.0, 2.0, 4.0])
    # 10 values in (0, 1], 10 in (2, 4]
    counts = np.array([10, 0, 10, 0])
    assert quantiles_from_buckets(bounds, counts, (0.25, 0.5, 0.75, 1.0)) == [0.5, 1.0, 3.0, 4.0]
    assert np.isnan(quantiles_from_buckets(bounds, np.zeros(4, dtype=int), (0.5,))[0])
    h = StageHistogram("x_seconds", "x", ("a", "b"), (1.0, 2.0, 4.0))
    h.observe_many("a", np.array([0.5, 3.0, 3.0, 9.0]))
    got = h.quantiles((0.5, 1.0))
    assert got["a"] == [3.0, 4.0]  # the top bucket reports its lower bound
    assert all(np.isnan(got["b"]))
