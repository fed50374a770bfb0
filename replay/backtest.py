"""Backtests on recorded streams: score a test period point in time, assess it under a protocol.

* Features are replayed point in time over the whole input (history before the test period feeds
  the state); only transactions in ``[from, to)`` are scored.
* Ground truth is the latest label known at the end of the input (the test period is assumed
  mature: run backtests at least one label delay after ``to``).
* Days are UTC calendar days; a card is a transaction's ``card_id`` (``account_id`` without one).
* Card precision@k of a day: the share of fraudulent cards among the ``k`` cards with the highest
  score that day, always divided by ``k``. A card's score that day is the max of its transactions'
  scores, and it is fraudulent that day if any of its transactions that day is. Ties go to the
  smaller card id. The reported figure is the mean over the test days.

A protocol says which cards a bank would already have blocked on a test day ("known
compromised"); their transactions that day leave the test set, for every metric. A card is known
compromised on day ``d`` when its ``compromised_since`` time is before ``cutoff_ms(d)``.

``handbook`` (the default) is the protocol of the public handbook *Reproducible Machine Learning for
Credit Card Fraud Detection* (Le Borgne, Siblini, Lebichot, Bontempi;
fraud-detection-handbook.github.io): section 3.4 "Baseline fraud detection system" (the split with
a feedback delay, ``get_train_test_set``) and section 4.4 "Precision top-k metrics"
(``card_precision_top_k`` with ``remove_detected_compromised_cards=True``), both in the book's
``Chapter_References/shared_functions.py``:

* known compromised on test day ``d``: cards with a fraud among the transactions of the training
  window, and cards with a fraud on the days after it up to day ``d - delay - 1``; that is, a fraud
  with event time in ``[train_from, max(train_to, start of d - delay days))``. The handbook starts
  its test period exactly ``delay`` days after the training window; another gap works the same way.
  Frauds before the training window do not count. The feedback delay assumes every fraud is known
  exactly ``delay_days`` (7 in the handbook) after it happened: ``label_time_ms`` plays no part.
* days are taken in order, and a fraudulent card in a day's top ``k`` is detected and blocked: its
  transactions leave every later day before that day's top ``k`` is taken (card precision only).

``strict`` (this module's earlier rule, kept to compare with earlier reports): a card is known
compromised on day ``d`` once a fraud label (``label_time_ms``) was issued, before the start of
``d``, for any of its transactions in the input; detected cards are not removed.

A challenger (``challenger=VERSION``) is assessed beside the model on the same transactions, at
its own review threshold. An online challenger is replayed prequentially
(:mod:`fraudstream.replay.prequential`): it scores every transaction when it happens and learns a
label only once it is due, with the transaction's decision-time features. It continues from its
registered state when that state predates the test period (it learned no label due after
``learned_until_ms``, recorded at training); otherwise it would be graded on labels it has
already learned, so a fresh model with the same hyperparameters and seed is replayed from the
start of the input instead. ``metrics["challenger"]["start"]`` says which.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fraudstream.errors import ConfigError
from fraudstream.models.base import Model, sha256_hex
from fraudstream.models.challenger import OnlineLogistic
from fraudstream.models.registry import LoadedModel, ModelRegistry
from fraudstream.models.train import auc_roc, average_precision
from fraudstream.replay.features import ReplayResult, replay_features, to_label, to_transaction
from fraudstream.replay.prequential import prequential
from fraudstream.replay.training import labels_as_of
from fraudstream.schema import Label, Transaction
from fraudstream.state.features import get_feature_set
from fraudstream.timeutil import DAY_MS, format_time_ms, format_window

__all__ = [
    "HANDBOOK_DELAY_DAYS",
    "AssessmentProtocol",
    "BacktestResult",
    "CardPrecision",
    "HandbookProtocol",
    "PeriodRows",
    "StrictProtocol",
    "backtest",
    "card_precision_at_k",
    "period_rows",
    "write_report",
]

HANDBOOK_DELAY_DAYS = 7


def _card(tx: Transaction) -> str:
    return tx.card_id or tx.account_id


@dataclass(frozen=True, kw_only=True)
class HandbookProtocol:
    """Known compromised: frauds of the training window and of the days up to ``d - delay - 1``.

    ``train_window_source`` only says, in reports, where the window came from.
    """

    train_from_ms: int
    train_to_ms: int
    delay_days: int = HANDBOOK_DELAY_DAYS
    train_window_source: str = "given"

    name: ClassVar[str] = "handbook"
    removes_detected_cards: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.train_to_ms <= self.train_from_ms:
            raise ValueError(
                f"empty training window {format_window(self.train_from_ms, self.train_to_ms)}"
            )
        if self.delay_days < 0:
            raise ValueError(f"delay_days must be >= 0, got {self.delay_days}")

    @classmethod
    def for_model(
        cls,
        manifest: Mapping[str, Any],
        *,
        train_from_ms: int | None = None,
        train_to_ms: int | None = None,
        delay_days: int = HANDBOOK_DELAY_DAYS,
    ) -> HandbookProtocol:
        """The protocol for a model: a bound not given comes from its manifest's training window.

        That is the window asked for at training (``requested_from_ms``/``requested_to_ms``), or
        else the model's first to last training row (``from_ms`` to ``to_ms``, made half-open).
        """
        given = (train_from_ms is not None) + (train_to_ms is not None)
        recorded = manifest.get("training_window") or {}
        if train_from_ms is None:
            train_from_ms = recorded.get("requested_from_ms")
            if train_from_ms is None:
                train_from_ms = recorded.get("from_ms")
        if train_to_ms is None:
            train_to_ms = recorded.get("requested_to_ms")
            if train_to_ms is None and recorded.get("to_ms") is not None:
                train_to_ms = int(recorded["to_ms"]) + 1  # the last row is inclusive
        if train_from_ms is None or train_to_ms is None:
            raise ConfigError(
                f"model {manifest.get('version')} records no training window: "
                "give the handbook protocol one (--train-from and --train-to)"
            )
        model = f"model {manifest.get('version')}"
        source = ("given", f"given and {model}", model)[2 - given]
        return cls(
            train_from_ms=int(train_from_ms),
            train_to_ms=int(train_to_ms),
            delay_days=delay_days,
            train_window_source=source,
        )

    def compromised_since(
        self, txs: Sequence[Transaction], labels: Sequence[Label], truth: Mapping[str, int]
    ) -> dict[str, int]:
        """Per card, the event time of its first fraud at or after the training window's start."""
        since: dict[str, int] = {}
        for tx in txs:
            if truth.get(tx.tx_id) == 1 and tx.event_time_ms >= self.train_from_ms:
                card = _card(tx)
                if tx.event_time_ms < since.get(card, tx.event_time_ms + 1):
                    since[card] = tx.event_time_ms
        return since

    def cutoff_ms(self, day: int) -> int:
        """Frauds before this are known on ``day`` (a UTC day number)."""
        return max(self.train_to_ms, (day - self.delay_days) * DAY_MS)

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "delay_days": self.delay_days,
            "train_from_ms": self.train_from_ms,
            "train_to_ms": self.train_to_ms,
            "train_window": format_window(self.train_from_ms, self.train_to_ms),
            "train_window_source": self.train_window_source,
            "removes_detected_cards": self.removes_detected_cards,
        }


@dataclass(frozen=True)
class StrictProtocol:
    """Known compromised: a fraud label issued before the test day; detected cards stay."""

    name: ClassVar[str] = "strict"
    removes_detected_cards: ClassVar[bool] = False

    def compromised_since(
        self, txs: Sequence[Transaction], labels: Sequence[Label], truth: Mapping[str, int]
    ) -> dict[str, int]:
        """Per card, the issue time of the first fraud label on any of its transactions."""
        card_of = {tx.tx_id: _card(tx) for tx in txs}
        since: dict[str, int] = {}
        for lab in labels:
            card = card_of.get(lab.tx_id)
            if lab.label == 1 and card is not None:
                if lab.label_time_ms < since.get(card, lab.label_time_ms + 1):
                    since[card] = lab.label_time_ms
        return since

    def cutoff_ms(self, day: int) -> int:
        """Labels issued before this are known on ``day``: the day's start."""
        return day * DAY_MS

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "removes_detected_cards": self.removes_detected_cards}


AssessmentProtocol = HandbookProtocol | StrictProtocol


@dataclass(frozen=True)
class PeriodRows:
    """The test period's transactions that a protocol keeps, in input order.

    ``excluded`` maps every day with transactions in the period to the cards left out that day
    as known compromised (an empty set when none were).
    """

    index: np.ndarray
    days: np.ndarray
    cards: list[str]
    y: np.ndarray
    excluded: dict[int, frozenset[str]]
    excluded_transactions: int


def period_rows(
    txs: Sequence[Transaction],
    labels: Sequence[Label],
    protocol: AssessmentProtocol,
    *,
    from_ms: int,
    to_ms: int,
) -> PeriodRows:
    """Select ``[from_ms, to_ms)``, leaving out known-compromised cards day by day."""
    truth = labels_as_of(labels, max([lab.label_time_ms for lab in labels], default=0))
    since = protocol.compromised_since(txs, labels, truth)
    keep: list[int] = []
    cards: list[str] = []
    excluded: dict[int, set[str]] = {}
    dropped = 0
    for i, tx in enumerate(txs):
        if not from_ms <= tx.event_time_ms < to_ms:
            continue
        card, day = _card(tx), tx.event_time_ms // DAY_MS
        left_out = excluded.setdefault(day, set())
        known = since.get(card)
        if known is not None and known < protocol.cutoff_ms(day):
            left_out.add(card)
            dropped += 1
            continue
        keep.append(i)
        cards.append(card)
    index = np.array(keep, dtype=np.int64)
    return PeriodRows(
        index=index,
        days=np.array([txs[i].event_time_ms // DAY_MS for i in keep], dtype=np.int64),
        cards=cards,
        y=np.array([truth.get(txs[i].tx_id, 0) for i in keep], dtype=np.int8),
        excluded={day: frozenset(c) for day, c in sorted(excluded.items())},
        excluded_transactions=dropped,
    )


@dataclass(frozen=True)
class CardPrecision:
    """Card precision@k per day (UTC day numbers) and what each day's ranking saw.

    ``detected``: the fraudulent cards in the day's top k. ``removed``: cards with transactions
    that day, left out as detected on an earlier day. ``compromised``: the fraudulent cards ranked
    that day (the handbook's ``nb_compromised_cards_per_day``).
    """

    k: int
    daily: dict[int, float]
    detected: dict[int, frozenset[str]]
    removed: dict[int, frozenset[str]]
    compromised: dict[int, int]

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.daily.values())))


def card_precision_at_k(
    days: np.ndarray,
    cards: Sequence[str],
    scores: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    remove_detected: bool = False,
) -> CardPrecision:
    """Card precision@k of every day; ``remove_detected`` blocks detected cards for later days."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    per_day: dict[int, dict[str, tuple[float, int]]] = defaultdict(dict)
    for day, card, score, label in zip(
        days.tolist(), cards, scores.tolist(), y.tolist(), strict=True
    ):
        best, fraud = per_day[day].get(card, (score, 0))
        per_day[day][card] = (max(best, score), max(fraud, int(label)))
    blocked: set[str] = set()
    daily, detected, removed, compromised = {}, {}, {}, {}
    for day, by_card in sorted(per_day.items()):
        removed[day] = frozenset(by_card.keys() & blocked)
        ranked = sorted(
            ((card, fraud) for card, (_, fraud) in by_card.items() if card not in blocked),
            key=lambda item: (-by_card[item[0]][0], item[0]),
        )
        detected[day] = frozenset(card for card, fraud in ranked[:k] if fraud)
        daily[day] = len(detected[day]) / k
        compromised[day] = sum(fraud for _, fraud in ranked)
        if remove_detected:
            blocked |= detected[day]
    return CardPrecision(
        k=k, daily=daily, detected=detected, removed=removed, compromised=compromised
    )


@dataclass(frozen=True)
class BacktestResult:
    """The model's scores and metrics on the kept rows; ``challenger_*`` when one was given."""

    metrics: dict[str, Any]
    scores: np.ndarray
    y: np.ndarray
    daily_cp: dict[str, float]
    card_precision: CardPrecision
    rows: PeriodRows
    challenger_scores: np.ndarray | None = None
    challenger_daily_cp: dict[str, float] | None = None


def _iso_day(day: int) -> str:
    return format_time_ms(day * DAY_MS)[:10]


def backtest(
    transactions: Iterable[dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    *,
    registry: Path,
    version: str | None,
    from_ms: int,
    to_ms: int,
    k: int = 100,
    protocol: AssessmentProtocol | None = None,
    logged_decisions: Iterable[dict[str, Any]] | None = None,
    challenger: str | None = None,
) -> BacktestResult:
    """Score ``[from_ms, to_ms)`` with the model (``version``; None: the production version);
    optionally compare with logged decisions and with a ``challenger`` version of the same
    registry (module docstring).

    ``protocol`` defaults to the handbook's, with the model's recorded training window.
    """
    if to_ms <= from_ms:
        raise ValueError(f"empty test period {format_window(from_ms, to_ms)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    loaded = ModelRegistry(registry).load(version)
    fs = get_feature_set(loaded.manifest["feature_set"]["name"])
    loaded = ModelRegistry(registry).load(version, feature_set=fs)
    if protocol is None:
        protocol = HandbookProtocol.for_model(loaded.manifest)
    if isinstance(protocol, HandbookProtocol) and protocol.train_to_ms > from_ms:
        raise ConfigError(
            f"training window {format_window(protocol.train_from_ms, protocol.train_to_ms)} "
            f"({protocol.train_window_source}) overlaps the test period "
            f"{format_window(from_ms, to_ms)}: the handbook protocol needs the training window "
            "to end by the start of the test period"
        )
    txs = [tx for tx in map(to_transaction, transactions) if tx is not None]
    labs = [lab for lab in map(to_label, labels) if lab is not None]
    replay = replay_features(txs, labs, fs, progress=True)
    rows = period_rows(txs, labs, protocol, from_ms=from_ms, to_ms=to_ms)
    if not rows.index.size:
        raise ValueError("no transactions in the test period")
    scores = np.asarray(loaded.model.score_many(replay.X[rows.index]), dtype=np.float64)
    y, days, cards = rows.y, rows.days, rows.cards
    review = loaded.manifest["thresholds"]["review"]
    remove = protocol.removes_detected_cards
    metrics, cp = _metrics(scores, y, days, cards, review, k, remove)
    metrics = {
        "model_version": loaded.version,
        "model_kind": loaded.kind,
        "feature_set": fs.name,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "test_window": format_window(from_ms, to_ms),
        "protocol": {**protocol.params(), "k": k},
        "excluded_known_compromised": {
            "transactions": rows.excluded_transactions,
            "cards": len(frozenset().union(*rows.excluded.values())),
        },
        **metrics,
        "daily": {
            _iso_day(day): {
                "card_precision": cp.daily[day],
                "transactions": int((days == day).sum()),
                "fraud_transactions": int(y[days == day].sum()),
                "compromised_cards": cp.compromised[day],
                "known_compromised_cards_excluded": len(rows.excluded.get(day, ())),
                "detected_cards_removed": len(cp.removed[day]),
            }
            for day in cp.daily
        },
    }
    if logged_decisions is not None:
        logged: dict[str, dict[str, Any]] = {}
        for d in logged_decisions:
            logged.setdefault(d["tx_id"], d)
        tx_ids = [txs[i].tx_id for i in rows.index.tolist()]
        have = [j for j, tx_id in enumerate(tx_ids) if tx_id in logged]
        if have:
            found = [logged[tx_ids[j]] for j in have]
            sel = np.array(have)
            sub_cards = [cards[j] for j in have]
            logged_scores = np.array([r["champion"]["score"] for r in found], dtype=np.float64)
            champion_metrics, _ = _metrics(
                logged_scores,
                y[sel],
                days[sel],
                sub_cards,
                found[0]["thresholds"]["review"],
                k,
                remove,
            )
            candidate_same, _ = _metrics(
                scores[sel], y[sel], days[sel], sub_cards, review, k, remove
            )
            metrics["comparison"] = {
                "transactions_with_logged_decision": len(found),
                "champion_version": found[0]["champion"]["version"],
                "champion_logged": champion_metrics,
                "candidate_same_transactions": candidate_same,
            }
    challenger_scores = challenger_daily = None
    if challenger is not None:
        ch = ModelRegistry(registry).load(challenger)
        ch_fs = get_feature_set(ch.manifest["feature_set"]["name"])
        ch = ModelRegistry(registry).load(challenger, feature_set=ch_fs)
        ch_replay = (
            replay if ch_fs.fingerprint == fs.fingerprint else replay_features(txs, labs, ch_fs)
        )
        challenger_scores, start, learned = _challenger_scores(
            ch, ch_fs, ch_replay, labs, rows.index, from_ms
        )
        ch_review = float(ch.manifest["thresholds"]["review"])
        ch_metrics, ch_cp = _metrics(challenger_scores, y, days, cards, ch_review, k, remove)
        challenger_daily = {_iso_day(day): v for day, v in ch_cp.daily.items()}
        metrics["challenger"] = {
            "version": ch.version,
            "kind": ch.kind,
            "feature_set": ch_fs.name,
            "scoring": "prequential" if ch.model.learns_online else "batch",
            "start": start,
            "labels_learned": learned,
            **ch_metrics,
            "daily_card_precision": challenger_daily,
        }
    daily = {_iso_day(day): v for day, v in cp.daily.items()}
    return BacktestResult(
        metrics=metrics,
        scores=scores,
        y=y,
        daily_cp=daily,
        card_precision=cp,
        rows=rows,
        challenger_scores=challenger_scores,
        challenger_daily_cp=challenger_daily,
    )


def _fresh(model: Model) -> Model:
    """An untrained model with ``model``'s hyperparameters and seed."""
    if isinstance(model, OnlineLogistic):
        return OnlineLogistic(model.feature_names, seed=model.seed, **model.hyperparameters)
    raise ConfigError(f"cannot restart a {type(model).__name__} from scratch for a backtest")


def _challenger_scores(
    loaded: LoadedModel,
    fs: Any,
    replay: ReplayResult,
    labels: Sequence[Label],
    index: np.ndarray,
    from_ms: int,
) -> tuple[np.ndarray, str, int | None]:
    """Scores of the challenger on ``replay`` rows ``index``, how it started, labels learned."""
    model = loaded.model
    if not model.learns_online:
        return np.asarray(model.score_many(replay.X[index]), dtype=np.float64), "batch", None
    window = loaded.manifest.get("training_window") or {}
    learned_until = window.get("learned_until_ms")
    if learned_until is not None and learned_until < from_ms:
        data = model.to_bytes()  # a copy: the loaded model stays as registered
        model = type(model).from_bytes(data, expected_sha256=sha256_hex(data))
        start = f"registered state (labels learned up to {format_time_ms(learned_until)})"
    else:
        model, learned_until = _fresh(model), None
        start = "fresh (same hyperparameters and seed, from the start of the input)"
    mask = np.zeros(len(replay.tx_ids), dtype=bool)
    mask[index] = True
    run = prequential(
        model,
        replay.X,
        replay.times_ms,
        replay.tx_ids,
        labels,
        label_delay_ms=fs.label_delay_ms,
        score=mask,
        known_until_ms=learned_until,
    )
    return run.scores[index], start, len(run.learned)


def _metrics(
    scores: np.ndarray,
    y: np.ndarray,
    days: np.ndarray,
    cards: Sequence[str],
    threshold: float,
    k: int,
    remove_detected: bool,
) -> tuple[dict[str, Any], CardPrecision]:
    cp = card_precision_at_k(days, cards, scores, y, k, remove_detected=remove_detected)
    flagged = scores >= threshold
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    metrics = {
        "transactions": len(y),
        "frauds": positives,
        "auc_roc": auc_roc(scores, y) if 0 < positives < len(y) else None,
        "average_precision": average_precision(scores, y) if positives else None,
        f"card_precision_at_{k}": cp.mean,
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


def _roc_pr(scores: np.ndarray, y_all: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(-scores, kind="stable")
    y = y_all[order].astype(np.float64)
    tp, fp = np.cumsum(y), np.cumsum(1 - y)
    pos, neg = max(tp[-1], 1.0), max(fp[-1], 1.0)
    return np.r_[0, fp / neg], np.r_[0, tp / pos], tp / pos, tp / np.maximum(tp + fp, 1)


def _comparison_table(metrics: dict[str, Any]) -> str:
    ch = metrics["challenger"]
    keys = [
        "transactions",
        "frauds",
        "auc_roc",
        "average_precision",
        f"card_precision_at_{metrics['protocol']['k']}",
        "review_threshold",
        "recall_at_threshold",
        "fpr_at_threshold",
        "alert_volume",
    ]
    head = (
        f"<tr><th></th><th>model {html.escape(str(metrics['model_version']))}</th>"
        f"<th>challenger {html.escape(str(ch['version']))} ({html.escape(ch['scoring'])})</th></tr>"
    )
    body = "".join(
        f"<tr><td>{key}</td><td>{metrics.get(key)}</td><td>{ch.get(key)}</td></tr>" for key in keys
    )
    return (
        "<h2>Model and challenger on the same transactions</h2>"
        f"<p>challenger start: {html.escape(str(ch['start']))}</p>"
        f"<table border='1' cellpadding='4'>{head}{body}</table>"
    )


def write_report(result: BacktestResult, out_dir: Path) -> None:
    """``metrics.json`` and a self-contained ``report.html`` (PNG charts embedded); with a
    challenger, its curves are drawn beside the model's and a comparison table leads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    curves = [(f"model {result.metrics['model_version']}", result.scores, result.daily_cp)]
    if result.challenger_scores is not None and result.challenger_daily_cp is not None:
        name = f"challenger {result.metrics['challenger']['version']}"
        curves.append((name, result.challenger_scores, result.challenger_daily_cp))
    fig_roc, ax_roc = plt.subplots(figsize=(4.5, 4))
    fig_pr, ax_pr = plt.subplots(figsize=(4.5, 4))
    fig_cp, ax_cp = plt.subplots(figsize=(6, 4))
    for label, scores, daily_cp in curves:
        fpr, tpr, recall, precision = _roc_pr(scores, result.y)
        ax_roc.plot(fpr, tpr, label=label)
        ax_pr.plot(recall, precision, label=label)
        ax_cp.plot(range(len(daily_cp)), list(daily_cp.values()), marker="o", label=label)
    ax_roc.plot([0, 1], [0, 1], "--", color="grey")
    ax_roc.set(title="ROC", xlabel="false-positive rate", ylabel="recall")
    ax_pr.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    ax_cp.set(title="Daily card precision@k", ylabel="CP@k")
    ax_cp.set_xticks(range(len(result.daily_cp)), list(result.daily_cp), rotation=60)
    if len(curves) > 1:
        for ax in (ax_roc, ax_pr, ax_cp):
            ax.legend()
    charts = [_png(fig) for fig in (fig_roc, fig_pr, fig_cp)]
    plt.close("all")
    rows = "".join(
        f"<tr><td>{k}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in sorted(result.metrics.items())
        if k != "challenger"
    )
    comparison = _comparison_table(result.metrics) if "challenger" in result.metrics else ""
    images = "".join(f'<img alt="chart" src="data:image/png;base64,{c}">' for c in charts)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>fraudstream backtest</title>"
        f"</head><body><h1>fraudstream backtest</h1>{comparison}"
        f"<h2>Model</h2><table border='1' cellpadding='4'>{rows}</table>{images}</body></html>"
    )
    (out_dir / "report.html").write_text(page)
