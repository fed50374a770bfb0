"""Backtests on recorded streams, following the fraud-detection handbook's protocol.

* Features are replayed point in time over the whole input (history before the test period feeds
  the state); only transactions in ``[from, to)`` are scored.
* Ground truth is the latest label known at the end of the input (the test period is assumed
  mature: run backtests at least one label delay after ``to``).
* Transactions of cards whose fraud was already known before the test day (a fraud label with
  ``label_time_ms`` before that day's start) are excluded: a bank would have blocked the card.
* Card Precision@k: per day, the share of frauds among the k cards with the highest max score that
  day (a card is fraudulent that day if any of its transactions is), averaged over days.
"""

from __future__ import annotations

import base64
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.models.registry import ModelRegistry
from fraudstream.models.train import auc_roc, average_precision
from fraudstream.replay.features import replay_features, to_label, to_transaction
from fraudstream.replay.training import labels_as_of
from fraudstream.state.features import get_feature_set

__all__ = ["BacktestResult", "backtest", "card_precision_at_k", "write_report"]

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class BacktestResult:
    metrics: dict[str, Any]
    scores: np.ndarray
    y: np.ndarray
    daily_cp: dict[str, float]


def card_precision_at_k(
    days: np.ndarray, cards: list[str], scores: np.ndarray, y: np.ndarray, k: int
) -> dict[int, float]:
    """Per day: share of fraudulent cards among the ``k`` cards with the highest max score."""
    per_day: dict[int, dict[str, list[float]]] = defaultdict(dict)
    for day, card, score, label in zip(
        days.tolist(), cards, scores.tolist(), y.tolist(), strict=True
    ):
        entry = per_day[day].setdefault(card, [score, 0.0])
        entry[0] = max(entry[0], score)
        entry[1] = max(entry[1], float(label))
    out = {}
    for day, by_card in sorted(per_day.items()):
        top = sorted(by_card.values(), key=lambda e: -e[0])[:k]
        out[day] = sum(e[1] for e in top) / k
    return out


def backtest(
    transactions: Iterable[dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    *,
    registry: Path,
    version: str | None,
    from_ms: int,
    to_ms: int,
    k: int = 100,
    logged_decisions: Iterable[dict[str, Any]] | None = None,
) -> BacktestResult:
    """Score ``[from_ms, to_ms)`` with the model; optionally compare with logged decisions."""
    loaded = ModelRegistry(registry).load(version)
    fs = get_feature_set(loaded.manifest["feature_set"]["name"])
    loaded = ModelRegistry(registry).load(version, feature_set=fs)
    txs = [tx for tx in map(to_transaction, transactions) if tx is not None]
    labs = [lab for lab in map(to_label, labels) if lab is not None]
    replay = replay_features(txs, labs, fs, progress=True)
    truth = labels_as_of(labs, max([lab.label_time_ms for lab in labs], default=0))
    first_fraud_known: dict[str, int] = {}
    by_id = {tx.tx_id: tx for tx in txs}
    for lab in sorted(labs, key=lambda lab: lab.label_time_ms):
        if lab.label == 1 and lab.tx_id in by_id:
            card = by_id[lab.tx_id].card_id or by_id[lab.tx_id].account_id
            first_fraud_known.setdefault(card, lab.label_time_ms)
    keep, cards = [], []
    for i, tx in enumerate(txs):
        if not from_ms <= tx.event_time_ms < to_ms:
            continue
        card = tx.card_id or tx.account_id
        day_start = tx.event_time_ms // _DAY_MS * _DAY_MS
        known = first_fraud_known.get(card)
        if known is not None and known < day_start:
            continue
        keep.append(i)
        cards.append(card)
    if not keep:
        raise ValueError("no transactions in the test period")
    idx = np.array(keep)
    scores = np.asarray(loaded.champion.score_many(replay.X[idx]), dtype=np.float64)
    y = np.array([truth.get(replay.tx_ids[i], 0) for i in keep], dtype=np.int8)
    days = replay.times_ms[idx] // _DAY_MS
    review = loaded.manifest["thresholds"]["review"]
    metrics, cp = _metrics(scores, y, days, cards, review, k)
    metrics = {
        "model_version": loaded.version,
        "feature_set": fs.name,
        "from_ms": from_ms,
        "to_ms": to_ms,
        **metrics,
    }
    if logged_decisions is not None:
        logged: dict[str, dict[str, Any]] = {}
        for d in logged_decisions:
            logged.setdefault(d["tx_id"], d)
        have = [j for j, i in enumerate(keep) if replay.tx_ids[i] in logged]
        rows = [logged[replay.tx_ids[keep[j]]] for j in have]
        if rows:
            sel = np.array(have)
            logged_scores = np.array([r["champion"]["score"] for r in rows], dtype=np.float64)
            sub = sel.tolist()
            champion_metrics, _ = _metrics(
                logged_scores,
                y[sel],
                days[sel],
                [cards[j] for j in sub],
                rows[0]["thresholds"]["review"],
                k,
            )
            candidate_same, _ = _metrics(
                scores[sel], y[sel], days[sel], [cards[j] for j in sub], review, k
            )
            metrics["comparison"] = {
                "transactions_with_logged_decision": len(rows),
                "champion_version": rows[0]["champion"]["version"],
                "champion_logged": champion_metrics,
                "candidate_same_transactions": candidate_same,
            }
    daily = {
        str(np.datetime64(int(d) * _DAY_MS, "ms").astype("datetime64[D]")): v for d, v in cp.items()
    }
    return BacktestResult(metrics=metrics, scores=scores, y=y, daily_cp=daily)


def _metrics(
    scores: np.ndarray, y: np.ndarray, days: np.ndarray, cards: list[str], threshold: float, k: int
) -> tuple[dict[str, Any], dict[int, float]]:
    cp = card_precision_at_k(days, cards, scores, y, k)
    flagged = scores >= threshold
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    metrics = {
        "transactions": len(y),
        "frauds": positives,
        "auc_roc": auc_roc(scores, y) if 0 < positives < len(y) else None,
        "average_precision": average_precision(scores, y) if positives else None,
        f"card_precision_at_{k}": float(np.mean(list(cp.values()))),
        "review_threshold": threshold,
        "recall_at_threshold": float(flagged[y == 1].sum() / positives) if positives else None,
        "fpr_at_threshold": float(flagged[y == 0].sum() / negatives) if negatives else None,
        "alert_volume": int(flagged.sum()),
    }
    return metrics, cp


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(result: BacktestResult, out_dir: Path) -> None:
    """``metrics.json`` and a self-contained ``report.html`` (PNG charts embedded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    order = np.argsort(-result.scores, kind="stable")
    y = result.y[order].astype(np.float64)
    tp, fp = np.cumsum(y), np.cumsum(1 - y)
    pos, neg = max(tp[-1], 1.0), max(fp[-1], 1.0)
    charts = []
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(np.r_[0, fp / neg], np.r_[0, tp / pos])
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(title="ROC", xlabel="false-positive rate", ylabel="recall")
    charts.append(_png(fig))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(tp / pos, tp / np.maximum(tp + fp, 1))
    ax.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    charts.append(_png(fig))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(result.daily_cp), list(result.daily_cp.values()), marker="o")
    ax.set(title="Daily card precision@k", ylabel="CP@k")
    ax.tick_params(axis="x", rotation=60)
    charts.append(_png(fig))
    plt.close("all")
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in sorted(result.metrics.items()))
    images = "".join(f'<img alt="chart" src="data:image/png;base64,{c}">' for c in charts)
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>fraudstream backtest</title>"
        "</head><body><h1>fraudstream backtest</h1>"
        f"<table border='1' cellpadding='4'>{rows}</table>{images}</body></html>"
    )
    (out_dir / "report.html").write_text(html)
