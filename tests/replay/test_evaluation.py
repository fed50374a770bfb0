"""The gate on simulated streams: models scored on the same matured transactions."""

from __future__ import annotations

import numpy as np
import pytest

from fraudstream.errors import ConfigError, RegistryError
from fraudstream.models import GatePolicy, ModelRegistry, XGBChampion, train_champion
from fraudstream.models.lifecycle import DAY_MS
from fraudstream.replay.evaluation import (
    Contender,
    evaluate_models,
    evaluate_promotion,
    parse_records,
)
from fraudstream.replay.features import replay_features
from fraudstream.replay.training import fit_challenger_prequential, labels_as_of
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import handbook_feature_set

FS = handbook_feature_set()
CFG = SimConfig(seed=21, n_customers=200, n_terminals=400, days=36)
TRAIN_TO = CFG.start_ms + 18 * DAY_MS
GENEROUS = GatePolicy(max_cost_us=1e6)


@pytest.fixture(scope="module")
def world():
    sim = generate(CFG)
    txs, labs = parse_records(sim.transactions, sim.labels)
    replay = replay_features(txs, labs, FS)
    truth = labels_as_of(labs, max(lab.label_time_ms for lab in labs))
    rows = np.flatnonzero(replay.times_ms < TRAIN_TO)
    y = np.array([truth.get(replay.tx_ids[i], 0) for i in rows])
    good = train_champion(replay.X[rows], y, FS.feature_names, seed=1, n_estimators=20)
    noise = np.random.default_rng(0).permutation(y)  # the same classes, no signal
    bad = train_champion(replay.X[rows], noise, FS.feature_names, seed=1, n_estimators=20)
    return txs, labs, replay, rows, truth, good, bad


def _registry(tmp_path, production, candidate) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    window = {"from_ms": CFG.start_ms, "to_ms": TRAIN_TO - 1, "requested_to_ms": TRAIN_TO}
    registry.register(
        production, FS, training_window=window, stage="production", actor="test", reason="setup"
    )
    registry.register(candidate, FS, training_window=window, actor="test", reason="setup")
    return registry


def _decide(registry, world, to="canary", policy=GENEROUS):
    txs, labs, *_ = world
    return evaluate_promotion(
        registry, "v0002", to, txs, labs, policy=policy, maturity_ms=8 * DAY_MS, eval_days=7
    )


def test_the_gate_accepts_a_better_model(tmp_path, world):
    *_, good, bad = world
    decision = _decide(_registry(tmp_path, bad, good), world)
    assert decision.accepted, decision.summary()
    c, p = decision.candidate, decision.production
    assert p is not None and (c.version, p.version) == ("v0002", "v0001")
    assert c.rows == p.rows and c.transactions == p.transactions > 500 and c.frauds > 10
    assert c.recall_at_review > p.recall_at_review
    # the window: the 7 days before as-of minus maturity, after the training data
    assert c.window_from_ms > TRAIN_TO and c.window_to_ms - c.window_from_ms == 7 * DAY_MS
    assert c.cost_us_per_row > 0


def test_the_gate_refuses_a_worse_model(tmp_path, world):
    *_, good, bad = world
    registry = _registry(tmp_path, good, bad)
    decision = _decide(registry, world, to="production")
    assert not decision.accepted
    assert [name.split(":")[0] for name in decision.failures] == ["recall"]
    assert registry.stage_of("v0002") == "shadow"  # deciding changes nothing


def test_the_cost_budget_and_fpr_limit_apply(tmp_path, world):
    *_, good, bad = world
    registry = _registry(tmp_path, bad, good)
    decision = _decide(registry, world, policy=GatePolicy(max_cost_us=1e-6, max_fpr=1e-6))
    assert {f.split(":")[0] for f in decision.failures} == {"cost", "fpr"}


def test_no_matured_data_after_training_is_a_clear_error(tmp_path, world):
    txs, labs, *_, good, bad = world
    registry = _registry(tmp_path, bad, good)
    late = [lab for lab in labs if lab.label_time_ms < TRAIN_TO + 5 * DAY_MS]
    early = [tx for tx in txs if tx.event_time_ms < TRAIN_TO + 5 * DAY_MS]
    with pytest.raises(ConfigError, match="no matured transactions after its training data"):
        evaluate_promotion(
            registry,
            "v0002",
            "canary",
            early,
            late,
            policy=GENEROUS,
            maturity_ms=8 * DAY_MS,
            eval_days=7,
        )
    with pytest.raises(ConfigError, match="ends after as-of"):
        evaluate_promotion(
            registry,
            "v0002",
            "canary",
            early,
            late,
            policy=GENEROUS,
            maturity_ms=8 * DAY_MS,
            eval_days=7,
            window=(TRAIN_TO, TRAIN_TO + 30 * DAY_MS),
        )
    with pytest.raises(RegistryError, match="already in production"):
        evaluate_promotion(
            registry,
            "v0001",
            "canary",
            txs,
            labs,
            policy=GENEROUS,
            maturity_ms=8 * DAY_MS,
            eval_days=7,
        )


def test_an_online_model_is_scored_prequentially_on_the_same_rows(world):
    txs, labs, replay, rows, truth, good, _ = world
    fit = fit_challenger_prequential(
        replay.X[rows],
        replay.times_ms[rows],
        [replay.tx_ids[i] for i in rows],
        labs,
        truth,
        FS.feature_names,
        label_delay_ms=FS.label_delay_ms,
        until_ms=TRAIN_TO - 1,
    )
    assert fit.learned_until_ms == TRAIN_TO - 1 and fit.metrics["labels_learned"] > 100
    contenders = [
        Contender(
            model=XGBChampion(good.booster, FS.feature_names),
            kind="xgboost",
            thresholds=good.thresholds,
            feature_set=FS,
        ),
        Contender(
            model=fit.model,
            kind="river-logistic",
            thresholds=fit.thresholds,
            feature_set=FS,
            learned_until_ms=fit.learned_until_ms,
        ),
    ]
    before = fit.model.to_bytes()
    as_of = max(lab.label_time_ms for lab in labs)
    champion, challenger = evaluate_models(
        txs,
        labs,
        contenders,
        from_ms=TRAIN_TO + DAY_MS,
        to_ms=TRAIN_TO + 8 * DAY_MS,
        as_of_ms=as_of,
        measure_cost=lambda model, X: 1.0,
        replays={FS.fingerprint: replay},
    )
    assert champion.rows == challenger.rows and champion.frauds == challenger.frauds > 0
    assert champion.scoring == "batch" and challenger.scoring.startswith("prequential (")
    assert int(challenger.scoring.split("(")[1].split()[0]) > 0  # labels learned in the window
    assert fit.model.to_bytes() == before  # evaluated on a copy
    assert challenger.auc_roc is not None and challenger.auc_roc > 0.5
