"""Backtest: handbook protocol metrics, report files, CLI."""

from __future__ import annotations

import json

import numpy as np

from fraudstream.cli import main
from fraudstream.replay.backtest import card_precision_at_k
from fraudstream.replay.training import train_from_streams
from fraudstream.simulate import SimConfig, generate, write_jsonl
from fraudstream.state.features import handbook_feature_set

DAY = 86_400_000


def test_card_precision_at_k_by_hand():
    days = np.array([0, 0, 0, 1, 1])
    cards = ["a", "a", "b", "a", "c"]
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8])
    y = np.array([0, 1, 0, 0, 1])
    # day 0: top-1 card is "a" (max 0.9), fraudulent that day; day 1: top-1 is "c", fraud
    assert card_precision_at_k(days, cards, scores, y, 1) == {0: 1.0, 1: 1.0}
    # day 0 top-2: a (fraud), b (legit) -> 0.5; day 1: c, a -> 0.5
    assert card_precision_at_k(days, cards, scores, y, 2) == {0: 0.5, 1: 0.5}


def test_backtest_cli_writes_metrics_and_report(tmp_path, capsys):
    cfg = SimConfig(seed=13, n_customers=300, n_terminals=600, days=40)
    sim = generate(cfg)
    train_end = cfg.start_ms + 20 * DAY
    registry = tmp_path / "registry"
    train_from_streams(
        [t for t in sim.transactions if t["event_time_ms"] < train_end],
        [lab for lab in sim.labels if lab["label_time_ms"] < train_end + 7 * DAY],
        handbook_feature_set(),
        registry,
        n_estimators=30,
    )
    write_jsonl(tmp_path / "tx.jsonl", sim.transactions)
    write_jsonl(tmp_path / "labels.jsonl", sim.labels)
    start, end = str(train_end + 7 * DAY), str(train_end + 14 * DAY)
    argv = ["backtest", "--transactions", str(tmp_path / "tx.jsonl")]
    argv += ["--labels", str(tmp_path / "labels.jsonl"), "--model", f"{registry}:v0001"]
    argv += ["--from", start, "--to", end, "--k", "20", "--report", str(tmp_path / "report")]
    # a "logged champion" that scored everything 0.5: the comparison must show it as useless
    logged = [
        {
            "tx_id": t["tx_id"],
            "champion": {"score": 0.5, "version": "v-old"},
            "thresholds": {"review": 0.9},
        }
        for t in sim.transactions
    ]
    write_jsonl(tmp_path / "decisions.jsonl", logged)
    argv += ["--compare-decisions", str(tmp_path / "decisions.jsonl")]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for key in (
        "auc_roc",
        "average_precision",
        "card_precision_at_20",
        "recall_at_threshold",
        "fpr_at_threshold",
        "alert_volume",
    ):
        assert key in metrics
    assert 0.5 < metrics["auc_roc"] <= 1.0
    assert 0.0 <= metrics["card_precision_at_20"] <= 1.0
    in_period = [t for t in sim.transactions if int(start) <= t["event_time_ms"] < int(end)]
    assert 0 < metrics["transactions"] < len(in_period)  # known-compromised cards excluded
    comparison = metrics["comparison"]
    assert comparison["transactions_with_logged_decision"] == metrics["transactions"]
    assert comparison["champion_logged"]["auc_roc"] == 0.5
    assert comparison["champion_logged"]["alert_volume"] == 0
    assert comparison["candidate_same_transactions"]["auc_roc"] == metrics["auc_roc"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "v0001" in capsys.readouterr().out
