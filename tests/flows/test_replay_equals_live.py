"""Replay equals live: the replay tool reproduces the logged features and scores bit for bit.

One input partition fixes the live order. Labels are all issued after the stream (the live flow
cannot order two topics against each other, see docs/design.md), so both paths also carry them.
"""

from __future__ import annotations

import numpy as np
import orjson

from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume, produce
from fraudstream.models.registry import ModelRegistry
from fraudstream.replay.features import replay_features
from tests.flows.conftest import labels_after_stream, recent_stream

DAY_MS = 86_400_000


def test_replayed_features_and_scores_equal_the_logged_ones(
    kafka_settings, topics, registry, flow_config, tmp_path
):
    t = topics(tx_partitions=1)
    sim = recent_stream(seed=21, customers=150, days=10, days_ago=40)
    labels = labels_after_stream(sim)
    produce(kafka_settings, t.transactions, sim.transactions, key=lambda r: r["account_id"])
    produce(kafka_settings, t.labels, labels, key=lambda r: r["tx_id"])
    cfg = flow_config(t, tmp_path / "state", batch_size=300)
    fs = cfg.feature_set
    run_flow(cfg, recovery_dir=None, epoch_interval_s=1.0)
    logged = {
        d["tx_id"]: d for d in (orjson.loads(r.value) for r in consume(kafka_settings, t.decisions))
    }

    replay = replay_features(sim.transactions, labels, fs)
    assert replay.tx_ids == [tx["tx_id"] for tx in sim.transactions]
    live_X = np.array([logged[tx_id]["features"] for tx_id in replay.tx_ids])
    assert np.array_equal(live_X, replay.X)  # bit for bit, not approximately

    champion = ModelRegistry(registry).load(feature_set=fs).champion
    scores = champion.score_many(replay.X).tolist()
    assert scores == [logged[tx_id]["champion"]["score"] for tx_id in replay.tx_ids]
