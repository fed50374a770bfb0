"""Replay equals live: the replay tool reproduces the logged features and scores bit for bit.

One input partition fixes the live order. Labels are all issued after the stream (the live flow
cannot order two topics against each other, see docs/design.md), so both paths also carry them.
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from fraudstream.flows.run import run_flow
from fraudstream.flows.scoring import FlowConfig
from fraudstream.kafka import consume, produce
from fraudstream.models.registry import ModelRegistry
from fraudstream.replay.features import replay_features
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import default_feature_set

DAY_MS = 86_400_000


def test_replayed_features_and_scores_equal_the_logged_ones(
    kafka_settings, topics, registry, tmp_path
):
    t = topics(tx_partitions=1)
    now = int(time.time() * 1000)
    sim = generate(
        SimConfig(seed=21, n_customers=150, n_terminals=300, days=10, start_ms=now - 40 * DAY_MS)
    )
    end = max(tx["event_time_ms"] for tx in sim.transactions)
    labels = [{**lab, "label_time_ms": max(lab["label_time_ms"], end + 1)} for lab in sim.labels]
    produce(kafka_settings, t.transactions, sim.transactions, key=lambda r: r["account_id"])
    produce(kafka_settings, t.labels, labels, key=lambda r: r["tx_id"])
    fs = default_feature_set()
    cfg = FlowConfig(
        kafka=kafka_settings,
        feature_set=fs,
        model_registry=registry,
        state_dir=tmp_path / "state",
        topics=t,
        partitions=4,
        tail=False,
        batch_size=300,
    )
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
