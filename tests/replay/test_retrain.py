"""``fraudstream retrain`` end to end on files: replay, train, backtest, register, gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fraudstream.cli import _retrain_source, main
from fraudstream.models import ModelRegistry, train_champion
from fraudstream.models.lifecycle import DAY_MS
from fraudstream.simulate import SimConfig, generate, write_jsonl
from fraudstream.state.features import handbook_feature_set

FS = handbook_feature_set()
CFG = SimConfig(seed=5, n_customers=200, n_terminals=400, days=36)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("streams")
    sim = generate(CFG)
    write_jsonl(out / "tx.jsonl", sim.transactions)
    write_jsonl(out / "labels.jsonl", sim.labels)
    as_of = max(lab["label_time_ms"] for lab in sim.labels)
    return out, as_of


def _registry_with_a_useless_production(tmp_path) -> ModelRegistry:
    """Production flags nothing (a model trained on noise, thresholds at 1): any real candidate
    has a better recall."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, len(FS.feature_names)))
    noise = train_champion(X, rng.random(2000) < 0.1, FS.feature_names, n_estimators=5)
    registry = ModelRegistry(tmp_path / "registry")
    window = {"from_ms": CFG.start_ms, "to_ms": CFG.start_ms + DAY_MS, "requested_to_ms": None}
    never = {"review": 1.0, "decline": 1.0}
    registry.register(
        noise,
        FS,
        thresholds=never,
        training_window=window,
        stage="production",
        actor="test",
        reason="setup",
    )
    return registry


def _retrain(files, registry, *flags: str) -> int:
    out, _ = files
    argv = ["retrain", "--transactions", str(out / "tx.jsonl"), "--labels"]
    argv += [str(out / "labels.jsonl"), "--registry", str(registry.root)]
    argv += ["--feature-set", "handbook", "--days", "30", "--n-estimators", "20"]
    return main([*argv, "--actor", "scheduler:nightly", *flags])


def test_retrain_registers_backtests_and_promotes_a_better_candidate(files, tmp_path, capsys):
    registry = _registry_with_a_useless_production(tmp_path)
    summary_path = tmp_path / "summary.json"
    flags = ["--promote", "canary", "--max-cost-us", "1e6", "--summary", str(summary_path)]
    assert _retrain(files, registry, *flags) == 0
    captured = capsys.readouterr()
    summary = json.loads(summary_path.read_text())
    assert json.loads(captured.out) == summary

    _, as_of = files
    assert summary["as_of_ms"] == as_of  # files: the end of the input
    evaluation = summary["evaluation"]
    assert evaluation["to_ms"] == as_of - 8 * DAY_MS
    assert evaluation["from_ms"] == as_of - 15 * DAY_MS and evaluation["protocol"] == "strict"
    candidate, production = summary["candidate"], summary["production"]
    assert candidate["version"] == "v0002" and production["version"] == "v0001"
    ours, theirs = candidate["evaluation"], production["evaluation"]
    assert ours["rows"] == theirs["rows"] and ours["transactions"] == theirs["transactions"] > 0
    assert ours["recall_at_review"] > theirs["recall_at_review"]
    assert summary["accepted"] is True and summary["stage"] == "canary"
    assert [c["name"] for c in summary["gate"]["checks"] if not c["passed"]] == []
    assert summary["warnings"] == []  # production's training data ends before the window

    assert registry.stages() == {"v0001": "production", "v0002": "canary"}
    history = registry.history("v0002")
    assert [(r.from_stage, r.to_stage, r.actor) for r in history] == [
        (None, "shadow", "scheduler:nightly"),
        ("shadow", "canary", "scheduler:nightly"),
    ]
    assert history[1].reason.startswith("retrain, gate passed for v0002 -> canary")
    manifest = registry.manifest("v0002")
    assert manifest["training_window"]["requested_to_ms"] == evaluation["from_ms"]
    assert manifest["training_window"]["requested_from_ms"] == as_of - 30 * DAY_MS
    assert manifest["metrics"]["evaluation"]["rows"] == ours["rows"]
    assert "registered v0002 (canary)" in captured.err


def test_a_refusal_exits_non_zero_and_leaves_the_candidate_in_shadow(files, tmp_path, capsys):
    registry = _registry_with_a_useless_production(tmp_path)
    flags = ["--promote", "production", "--max-cost-us", "1e6", "--max-fpr", "0.000001"]
    assert _retrain(files, registry, *flags) == 3
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["accepted"] is False and summary["stage"] == "shadow"
    assert "fpr: false-positive rate" in summary["reason"]
    assert "fraudstream: refused: gate refused v0002 -> production: fpr" in captured.err
    assert registry.stages() == {"v0001": "production", "v0002": "shadow"}


def test_a_kafka_source_reads_the_retraining_span():
    assert _retrain_source("kafka:transactions", 10, 20) == "kafka:transactions@10..20"
    assert _retrain_source("kafka:tx@2026-01-01..", 10, 20) == "kafka:tx@2026-01-01.."
    assert _retrain_source("data/tx.jsonl", 10, 20) == "data/tx.jsonl"


def test_impossible_windows_are_clear_errors(files, tmp_path, capsys):
    registry = ModelRegistry(tmp_path / "registry")
    assert _retrain(files, registry, "--days", "10", "--eval-days", "7") == 2
    assert "must exceed eval_days + maturity_days" in capsys.readouterr().err
    assert not registry.root.exists()
