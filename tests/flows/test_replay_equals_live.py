"""Replay equals live: the replay tool reproduces the logged features and scores bit for bit.

Four input partitions and interleaved labels: the live flow orders them deterministically
(fraudstream.order) and the replay of the same topics uses the same reader and merge. A replay of
the files reproduces the same rows when the records were stamped with their own times.
"""

from __future__ import annotations

import numpy as np
import orjson

from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume
from fraudstream.models.registry import ModelRegistry
from fraudstream.replay.features import kafka_order, replay_features, replay_ordered
from tests.flows.conftest import load_history, recent_stream


def test_replayed_features_and_scores_equal_the_logged_ones(
    kafka_settings, topics, registry, flow_config, tmp_path
):
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=21, customers=150, days=10, days_ago=40)
    load_history(kafka_settings, t, sim)
    cfg = flow_config(t, tmp_path / "state", batch_size=300)
    fs = cfg.feature_set
    run_flow(cfg, recovery_dir=None, epoch_interval_s=1.0)
    logged = {
        d["tx_id"]: d for d in (orjson.loads(r.value) for r in consume(kafka_settings, t.decisions))
    }
    assert len(logged) == len(sim.transactions)

    replays = {
        "kafka": replay_ordered(kafka_order(kafka_settings, t.transactions, t.labels, fs), fs),
        "files": replay_features(sim.transactions, sim.labels, fs),
    }
    champion = ModelRegistry(registry).load(feature_set=fs).champion
    for name, replay in replays.items():
        assert sorted(replay.tx_ids) == sorted(logged), name
        live_X = np.array([logged[tx_id]["features"] for tx_id in replay.tx_ids])
        assert np.array_equal(live_X, replay.X), name  # bit for bit, not approximately
        scores = champion.score_many(replay.X).tolist()
        assert scores == [logged[tx_id]["champion"]["score"] for tx_id in replay.tx_ids], name
    # labels took effect: some delayed terminal risk is non-zero
    risk = [i for i, n in enumerate(fs.feature_names) if n.startswith("terminal_risk")]
    assert replays["kafka"].X[:, risk].max() > 0
