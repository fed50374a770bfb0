"""The decision step around the decider: registry stages in, alerts out (no engine, no broker)."""

from __future__ import annotations

import numpy as np
import pytest

from fraudstream.models.champion import XGBChampion
from fraudstream.models.registry import ModelRegistry
from fraudstream.models.step import DecisionStep, StepConfig
from fraudstream.state.base import EpochStore
from fraudstream.state.memory import MemoryKV
from tests.models.test_decide import FS, SLICES, THRESHOLDS, _stream
from tests.models.test_decide import champion as champion  # the fixture

K = len(SLICES)  # parts per transaction


@pytest.fixture
def step(champion: XGBChampion, tmp_path) -> DecisionStep:
    reg = ModelRegistry(tmp_path / "registry")
    reg.register(
        champion,
        FS,
        thresholds=THRESHOLDS,
        metrics={"auc_roc": 0.5},
        stage="production",
        actor="test",
        reason="step test",
    )
    cfg = StepConfig(registry=reg.root, decisions_ttl_ms=10**12, drift=None)
    return DecisionStep(FS, EpochStore(MemoryKV(), resume_epoch=None), cfg, clock_ms=lambda: 42)


def test_rows_the_champion_cannot_score_are_dead_lettered_with_one_alert(
    step: DecisionStep, champion: XGBChampion
) -> None:
    class Picky(XGBChampion):
        def score_many(self, X):
            if (np.asarray(X)[:, 0] > 50).any():
                raise ValueError("row the model cannot score")
            return super().score_many(X)

    step.decider.production.model = Picky(champion.booster, FS.feature_names)
    items, parts = _stream(40, learn_every=10**9)
    cut = [i for i, item in enumerate(items) if item[0] == "tx"][20]  # 20 transactions each
    outs = [
        step.on_items([("items", items[:cut]), ("parts", parts[: 20 * K], [])]),
        step.on_items([("items", items[cut:]), ("parts", parts[20 * K :], [])]),
    ]
    assert step.decider.pending() == 0
    dead = [o for out in outs for o in out.dead]
    assert dead and all(o[2] == "processing_error:decide" for o in dead)
    assert sum(len(out.decisions) for out in outs) + len(dead) == 40
    failures = [a for out in outs for a in out.alerts if a["kind"] == "model_failure"]
    assert len(failures) == 1  # once per version, not once per batch
    (alert,) = failures
    assert alert["severity"] == "critical" and "could not be scored" in alert["detail"]
    assert alert["runbook"] == "docs/runbook.md#model-failure"
