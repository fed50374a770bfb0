"""Prequential replay: a model learns only the labels known at each point in time."""

from __future__ import annotations

import json
from typing import Any, Self

import numpy as np
import pytest

from fraudstream.models import Model, OnlineLogistic, fit_challenger
from fraudstream.replay.prequential import prequential
from fraudstream.schema import Label

H = 3_600_000


class Recorder(Model):
    """Scores how many labels it has learned (/100), so a score shows what was known."""

    learns_online = True

    def __init__(self) -> None:
        self.feature_names = ("x",)
        self.learned: list[tuple[float, int]] = []

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), len(self.learned) / 100)

    def learn_one(self, x: dict[str, float], y: int) -> None:
        self.learned.append((x["x"], y))

    @property
    def manifest(self) -> dict[str, Any]:
        return {"kind": "recorder", "feature_names": list(self.feature_names)}

    def to_bytes(self) -> bytes:
        return json.dumps(self.learned).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_sha256: str) -> Self:
        raise NotImplementedError


# Transactions t1..t5 (feature x = 1..5) at hours 0, 1, 2, 3, 5.
TX_IDS = ["t1", "t2", "t3", "t4", "t5"]
TIMES = np.array([0, 1, 2, 3, 5]) * H
X = np.arange(1.0, 6.0).reshape(-1, 1)
LABELS = [
    Label("t1", 1, 1 * H),  # due when t2 happens (at or after): learned before t2 is scored
    Label("t2", 0, int(2.5 * H)),  # learned before t4
    Label("t1", 1, int(2.6 * H)),  # the same label again: not learned twice
    Label("t2", 1, 4 * H),  # a reversal: learned again, before t5
    Label("t9", 1, 1 * H),  # a transaction the input does not hold: ignored
    Label("t5", 0, int(4.5 * H)),  # due before t5 happens (skew): learned right after it
    Label("t3", 1, 6 * H),  # due after the last transaction: only with until_ms
]


def test_labels_are_learned_only_once_due_and_once_per_change():
    model = Recorder()
    run = prequential(model, X, TIMES, TX_IDS, LABELS, until_ms=6 * H)
    # scores = labels learned before each transaction was scored
    assert run.scores.tolist() == [0.0, 0.01, 0.01, 0.02, 0.03]
    assert run.learned == [
        ("t1", 1, 1 * H, 1),
        ("t2", 0, int(2.5 * H), 3),
        ("t2", 1, 4 * H, 4),
        ("t5", 0, int(4.5 * H), 5),
        ("t3", 1, 6 * H, 5),
    ]
    # each with its transaction's features at decision time
    assert model.learned == [(1.0, 1), (2.0, 0), (2.0, 1), (5.0, 0), (3.0, 1)]
    assert run.learned_until_ms == 6 * H


def test_without_until_pending_labels_stay_unlearned():
    model = Recorder()
    run = prequential(model, X, TIMES, TX_IDS, LABELS)
    assert [tx for tx, *_ in run.learned] == ["t1", "t2", "t2", "t5"]
    assert run.learned_until_ms == 5 * H  # the clock at the last transaction


def test_the_label_delay_postpones_learning():
    model = Recorder()
    run = prequential(model, X, TIMES, TX_IDS, LABELS, label_delay_ms=H // 2)
    # t1's label is due at 1.5 h: after t2 (1 h), before t3 (2 h)
    assert run.scores.tolist()[:3] == [0.0, 0.0, 0.01]


def test_a_continued_model_skips_what_it_already_knows():
    model = Recorder()
    run = prequential(model, X, TIMES, TX_IDS, LABELS, known_until_ms=int(2.5 * H))
    # t1's and t2's first labels were learned before: not again; t2's reversal still counts
    assert [(tx, y) for tx, y, *_ in run.learned] == [("t2", 1), ("t5", 0)]


def test_masked_rows_are_not_scored_and_change_nothing():
    full = prequential(Recorder(), X, TIMES, TX_IDS, LABELS)
    mask = np.array([False, True, False, True, False])
    part = prequential(Recorder(), X, TIMES, TX_IDS, LABELS, score=mask, batch_size=1)
    assert np.isnan(part.scores[~mask]).all()
    assert part.scores[mask].tolist() == full.scores[mask].tolist()
    assert part.learned == full.learned


def test_a_batch_model_is_refused():
    class Batch(Recorder):
        learns_online = False

    with pytest.raises(ValueError, match="does not learn online"):
        prequential(Batch(), X, TIMES, TX_IDS, LABELS)


def test_the_challenger_ends_as_fit_challenger_on_the_learned_rows():
    rng = np.random.default_rng(5)
    n = 600
    Xs = rng.normal(size=(n, 4))
    times = np.sort(rng.integers(0, 100 * H, size=n))
    ids = [f"tx{i}" for i in range(n)]
    fraud = Xs[:, 0] + 0.3 * rng.normal(size=n) > 1.0
    labels = [
        Label(ids[i], int(fraud[i]), int(times[i] + rng.integers(1, 30 * H)))
        for i in range(n)
        if fraud[i] or rng.random() < 0.2
    ]
    names = ("a", "b", "c", "d")
    model = OnlineLogistic(names, seed=3)
    run = prequential(model, Xs, times, ids, labels, until_ms=200 * H, batch_size=64)
    assert len(run.learned) == len(labels)
    rows = [ids.index(tx) for tx, *_ in run.learned]
    expected = fit_challenger(Xs[rows], np.array([y for _, y, *_ in run.learned]), names, seed=3)
    assert model.to_bytes() == expected.to_bytes()
