"""The decision step's logic, without a stream engine or a broker."""

from __future__ import annotations

import copy
import random

import numpy as np
import orjson
import pytest
import xgboost as xgb

from fraudstream.models.challenger import OnlineLogistic
from fraudstream.models.champion import XGBChampion
from fraudstream.models.decide import Decider, Scorer, action_policy, in_canary
from fraudstream.state.base import EpochStore
from fraudstream.state.decisions import DecisionStore
from fraudstream.state.features import handbook_feature_set
from fraudstream.state.memory import MemoryKV

FS = handbook_feature_set()
N = len(FS.feature_names)
NB = len(FS.base_names())
SLICES = FS.plan_slices
THRESHOLDS = {"review": 0.5, "decline": 0.9}


@pytest.fixture(scope="module")
def champion() -> XGBChampion:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, N))
    y = (X[:, 0] + rng.normal(size=400) > 0.5).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": 0},
        xgb.DMatrix(X, label=y, feature_names=list(FS.feature_names)),
        num_boost_round=10,
    )
    return XGBChampion(booster, FS.feature_names)


def _tx(i: int, rng: random.Random) -> tuple[tuple, list[tuple]]:
    """A "tx" item and its parts (one per plan) with random values."""
    tx_id = f"t{i:05d}"
    meta = {
        "event_time_ms": 1_000 * i,
        "source": {"topic": "tx", "partition": 0, "offset": i},
        "ingest_ms": 0,
        "key": None,
        "raw": b"{}",
    }
    base = tuple(rng.uniform(0, 100) for _ in range(NB))
    parts = [
        (tx_id, p, [rng.uniform(0, 5) for _ in range(hi - lo)]) for p, (lo, hi) in enumerate(SLICES)
    ]
    return ("tx", tx_id, meta, base, len(SLICES), 1_000 * i), parts


def _decider(champion, *, online=None, canary=None, share=0.05) -> Decider:
    shadows = []
    if online is not None:
        shadows.append(Scorer("v0002", "river-logistic", "shadow", online, THRESHOLDS, online=True))
    return Decider(
        FS,
        production=Scorer("v0001", "xgboost", "production", champion, THRESHOLDS),
        canary=canary,
        shadows=shadows,
        canary_share=share,
        decisions=DecisionStore(EpochStore(MemoryKV(), resume_epoch=None), ttl_ms=10**12),
        clock_ms=lambda: 42,
    )


def _stream(n: int, seed: int = 1, learn_every: int = 7):
    rng = random.Random(seed)
    items, parts = [], []
    for i in range(n):
        item, p = _tx(i, rng)
        items.append(item)
        parts += p
        if i % learn_every == 3:
            items.append(("learn", item[1], rng.choice([0, 1]), 1_000 * i, 1_000 * i))
    return items, parts


def _run(decider, items, parts, *, chunks: int, seed: int):
    """Push ingest items in order and parts shuffled, in ``chunks`` steps; drain after each."""
    rng = random.Random(seed)
    parts = list(parts)
    rng.shuffle(parts)
    out = []
    for k in range(chunks):
        lo, hi = k * len(items) // chunks, (k + 1) * len(items) // chunks
        decider.push(items[lo:hi])
        plo, phi = k * len(parts) // chunks, (k + 1) * len(parts) // chunks
        decider.push([("parts", parts[plo:phi], [])])
        out += decider.drain()
    return out


def test_decisions_come_out_in_input_order_whatever_the_arrival_of_parts(champion):
    items, parts = _stream(60)
    outs = {}
    for chunks, seed in ((1, 0), (7, 1), (60, 2)):
        online = OnlineLogistic(FS.feature_names, seed=3)
        decider = _decider(champion, online=online)
        out = _run(decider, items, parts, chunks=chunks, seed=seed)
        assert decider.pending() == 0
        outs[(chunks, seed)] = [(o[1], o[2]) for o in out if o[0] == "decision"]
    first = next(iter(outs.values()))
    assert [tx_id for tx_id, _ in first] == [f"t{i:05d}" for i in range(60)]
    assert all(o == first for o in outs.values())  # byte-identical records, learning included


def test_the_online_challenger_scores_as_it_stood_after_each_earlier_label(champion):
    items, parts = _stream(30, learn_every=5)
    online = OnlineLogistic(FS.feature_names, seed=3)
    reference = copy.deepcopy(online)
    decider = _decider(champion, online=online)
    out = _run(decider, items, parts, chunks=3, seed=4)
    got = {
        d["tx_id"]: next(m["score"] for m in d["models"] if m["version"] == "v0002")
        for d in (orjson.loads(o[2]) for o in out if o[0] == "decision")
    }
    rows = {d["tx_id"]: d["features"] for d in (orjson.loads(o[2]) for o in out)}
    for item in items:  # the same sequence, one event at a time
        if item[0] == "tx":
            want = reference.score_many(np.asarray([rows[item[1]]]))[0]
            assert got[item[1]] == want, item[1]
        else:
            reference.learn_many(np.asarray([rows[item[1]]]), np.asarray([item[2]]))
    assert online.to_bytes() == reference.to_bytes()


def test_labels_a_registered_challenger_learned_already_are_not_learned_twice(champion):
    # the sidecar replaying the history a challenger was warm-started on must not learn it again
    items, parts = _stream(40, learn_every=4)
    known = 20_000 - FS.label_delay_ms  # labels due at or before 20 s are in the model
    online = OnlineLogistic(FS.feature_names, seed=3)
    reference = copy.deepcopy(online)
    decider = _decider(champion)
    decider.set_models(
        decider.production,
        None,
        [Scorer("v0002", "river-logistic", "shadow", online, THRESHOLDS, True, known)],
    )
    out = _run(decider, items, parts, chunks=4, seed=5)
    rows = {d["tx_id"]: d["features"] for d in (orjson.loads(o[2]) for o in out)}
    learned = [item for item in items if item[0] == "learn" and item[3] + FS.label_delay_ms > known]
    assert 0 < len(learned) < sum(item[0] == "learn" for item in items)
    for item in learned:
        reference.learn_many(np.asarray([rows[item[1]]]), np.asarray([item[2]]))
    assert online.to_bytes() == reference.to_bytes()


def test_a_redelivery_reemits_the_original_record_and_a_label_without_features_is_counted(
    champion,
):
    items, parts = _stream(5, learn_every=100)
    online = OnlineLogistic(FS.feature_names, seed=3)
    decider = _decider(champion, online=online)
    first = _run(decider, items, parts, chunks=1, seed=0)
    decider.push([("dup", "t00002", items[2][2], 0), ("learn", "unknown", 1, 5, 5)])
    again = decider.drain()
    original = next(o[2] for o in first if o[1] == "t00002")
    assert again == [("decision", "t00002", original, None, 0, None)]
    assert decider.stats.learn_missing == 1


def test_canary_decides_a_stable_share_of_traffic(champion):
    share = 0.2
    ids = [f"tx{i:07d}" for i in range(20_000)]
    hits = sum(in_canary(t, share) for t in ids)
    sd = (len(ids) * share * (1 - share)) ** 0.5
    assert abs(hits - len(ids) * share) < 5 * sd
    assert [in_canary(t, share) for t in ids[:50]] == [in_canary(t, share) for t in ids[:50]]
    canary = Scorer("v0003", "xgboost", "canary", champion, {"review": 0.0, "decline": 0.0})
    decider = _decider(champion, canary=canary, share=share)
    items, parts = _stream(200, learn_every=10**9)
    out = _run(decider, items, parts, chunks=2, seed=0)
    records = [orjson.loads(o[2]) for o in out if o[0] == "decision"]
    by_canary = [r for r in records if r["decided_by"]["stage"] == "canary"]
    assert {r["tx_id"] for r in by_canary} == {
        r["tx_id"] for r in records if in_canary(r["tx_id"], share)
    }
    assert all(r["action"] == "decline" for r in by_canary)  # the canary's own thresholds


class _Broken:
    learns_online = False

    def score_many(self, X):
        raise RuntimeError("model failure")


def test_a_failing_shadow_leaves_the_step_and_a_failing_champion_row_is_dead_lettered(champion):
    shadow = Scorer("v0009", "xgboost", "shadow", _Broken(), THRESHOLDS)  # type: ignore[arg-type]
    decider = _decider(champion)
    decider.set_models(decider.production, None, [shadow])
    items, parts = _stream(10, learn_every=10**9)
    out = _run(decider, items, parts, chunks=1, seed=0)
    assert sum(o[0] == "decision" for o in out) == 10
    assert [f.version for f in decider.failures] == ["v0009"] and decider.shadows == []

    class _Picky(XGBChampion):
        def score_many(self, X):
            if (np.asarray(X)[:, 0] > 50).any():
                raise ValueError("row the model cannot score")
            return super().score_many(X)

    picky = _Picky(champion.booster, FS.feature_names)
    decider = _decider(champion)
    decider.set_models(Scorer("v0001", "xgboost", "production", picky, THRESHOLDS), None, [])
    out = _run(decider, items, parts, chunks=1, seed=0)
    dead = [o for o in out if o[0] == "dead"]
    assert dead and all(o[2] == "processing_error:decide" for o in dead)
    assert len(dead) + sum(o[0] == "decision" for o in out) == 10


def test_action_policy():
    assert action_policy(np.array([0.1, 0.5, 0.95]), THRESHOLDS) == ["approve", "review", "decline"]
    with pytest.raises(ValueError):
        action_policy(np.array([np.nan]), THRESHOLDS)


def test_labelled_rows_are_scored_for_monitoring_as_each_row_alone(champion):
    """Static models score a drain's labelled rows in one call, online ones one label at a time
    before learning it; either way each row's score is the one it gets scored alone."""
    items, parts = _stream(40, learn_every=4)
    online = OnlineLogistic(FS.feature_names, seed=3)
    reference = copy.deepcopy(online)
    decider = _decider(champion, online=online)
    rng = random.Random(5)
    shuffled = list(parts)
    rng.shuffle(shuffled)
    decider.push(items)
    decider.push([("parts", shuffled, [])])
    out = decider.drain()
    seen = decider.stats.labels
    rows = {d["tx_id"]: d["features"] for d in (orjson.loads(o[2]) for o in out)}
    learns = [item for item in items if item[0] == "learn"]
    assert len(seen) == len(learns) > 5
    for (_, label_ms, label, scores), item in zip(seen, learns, strict=True):
        row = np.asarray([rows[item[1]]])
        assert (label_ms, label) == (item[3], item[2])
        assert scores["v0001"] == float(champion.score_many(row)[0])
        assert scores["v0002"] == float(reference.score_many(row)[0])
        reference.learn_many(row, np.asarray([label]))


class _FailsOnBatches:
    """A champion that refuses batches of more than one row (a model's own limit)."""

    learns_online = False

    def __init__(self, inner: XGBChampion) -> None:
        self.inner = inner
        self.feature_names = inner.feature_names

    def score_many(self, X):
        if len(X) > 1:
            raise ValueError("one row at a time")
        return self.inner.score_many(X)


def test_a_static_model_failing_on_the_labels_batch_is_scored_row_by_row(champion):
    items, parts = _stream(12, learn_every=4)
    decider = _decider(_FailsOnBatches(champion))
    decider.push(items)
    decider.push([("parts", parts, [])])
    out = decider.drain()
    rows = {d["tx_id"]: d["features"] for d in (orjson.loads(o[2]) for o in out)}
    learns = [item for item in items if item[0] == "learn"]
    assert len(decider.stats.labels) == len(learns) > 1
    for (_, _, _, scores), item in zip(decider.stats.labels, learns, strict=True):
        assert scores["v0001"] == float(champion.score_many(np.asarray([rows[item[1]]]))[0])
