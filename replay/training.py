"""Training from raw streams by replay: the XGBoost champion and the online challenger.

Both replay features point in time over the whole input (earlier history feeds the state); only
transactions with event time in ``[train_from_ms, train_to_ms)`` (``None``: open) become rows.
Each model gets its own thresholds, at 2 % and 0.2 % false-positive rate on its own validation
scores (the last ``valid_fraction`` of its rows in time): a challenger's scores are ranks, not
probabilities, and never share the champion's thresholds.

Where a new model goes (``stage``): given, or by default ``shadow``, except that the first model
of an empty registry, when it is a champion, goes straight to ``production`` (the bootstrap: a
fresh registry must serve something, e.g. in ``fraudstream demo``). Every later promotion goes
through ``fraudstream model promote`` and its gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.models.challenger import Challenger, OnlineLogistic
from fraudstream.models.registry import ModelRegistry, default_actor
from fraudstream.models.train import (
    DECLINE_FPR,
    REVIEW_FPR,
    auc_roc,
    average_precision,
    threshold_for_fpr,
    train_champion,
)
from fraudstream.replay.features import ReplayResult, replay_features, to_label
from fraudstream.replay.prequential import prequential
from fraudstream.schema import Label
from fraudstream.state.features import FeatureSet, get_feature_set

__all__ = [
    "ChallengerFit",
    "bootstrap_stage",
    "fit_challenger_prequential",
    "labels_as_of",
    "train_challenger_from_streams",
    "train_from_files",
    "train_from_streams",
]

_OPEN_LO, _OPEN_HI = -(2**62), 2**62


def labels_as_of(labels: Iterable[Label], as_of_ms: int) -> dict[str, int]:
    """Latest label per transaction among those issued at or before ``as_of_ms``."""
    latest: dict[str, tuple[int, int]] = {}
    for lab in labels:
        if lab.label_time_ms <= as_of_ms:
            seen = latest.get(lab.tx_id)
            if seen is None or lab.label_time_ms >= seen[0]:
                latest[lab.tx_id] = (lab.label_time_ms, lab.label)
    return {tx: value for tx, (_, value) in latest.items()}


def bootstrap_stage(registry: ModelRegistry, stage: str | None) -> str:
    """``stage`` when given; else ``production`` for the first model of an empty registry,
    ``shadow`` otherwise (module docstring)."""
    if stage is not None:
        return stage
    return "shadow" if registry.versions() else "production"


def _replay(
    transactions: list[dict], labels: list[dict], fs: FeatureSet
) -> tuple[list[Label], ReplayResult]:
    parsed = [lab for lab in (to_label(r) for r in labels) if lab is not None]
    return parsed, replay_features(transactions, parsed, fs, progress=True)


def _window_rows(
    replay: ReplayResult, train_from_ms: int | None, train_to_ms: int | None
) -> np.ndarray:
    lo = _OPEN_LO if train_from_ms is None else train_from_ms
    hi = _OPEN_HI if train_to_ms is None else train_to_ms
    rows = np.flatnonzero((replay.times_ms >= lo) & (replay.times_ms < hi))
    if not rows.size:
        raise ValueError("no valid transactions in the training window")
    return rows


def _window(
    times: np.ndarray, train_from_ms: int | None, train_to_ms: int | None
) -> dict[str, Any]:
    return {
        "from_ms": int(times.min()),
        "to_ms": int(times.max()),
        "requested_from_ms": train_from_ms,
        "requested_to_ms": train_to_ms,
    }


def train_from_streams(
    transactions: list[dict],
    labels: list[dict],
    fs: FeatureSet,
    registry: Path,
    *,
    seed: int = 0,
    n_estimators: int = 200,
    train_from_ms: int | None = None,
    train_to_ms: int | None = None,
    stage: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> str:
    """Replay features, label with what is known at the end, train the champion, register it.

    The manifest's ``training_window`` records the first and last training row (``from_ms``,
    ``to_ms``, both inclusive) and the window asked for (``requested_from_ms``,
    ``requested_to_ms``, half-open, ``null`` when open); backtests take the handbook protocol's
    training window from it. ``stage``: see the module docstring.
    """
    parsed, replay = _replay(transactions, labels, fs)
    rows = _window_rows(replay, train_from_ms, train_to_ms)
    as_of = max([lab.label_time_ms for lab in parsed] + [int(replay.times_ms.max())])
    known = labels_as_of(parsed, as_of)
    y = np.array([known.get(replay.tx_ids[i], 0) for i in rows], dtype=np.int32)
    result = train_champion(
        replay.X[rows], y, fs.feature_names, seed=seed, n_estimators=n_estimators
    )
    reg = ModelRegistry(registry)
    return reg.register(
        result,
        fs,
        training_window=_window(replay.times_ms[rows], train_from_ms, train_to_ms),
        stage=bootstrap_stage(reg, stage),
        actor=actor or default_actor(),
        reason=reason or "trained (fraudstream train)",
    )


@dataclass(frozen=True)
class ChallengerFit:
    """A challenger warm-started prequentially, its thresholds and validation metrics.

    ``learned_until_ms``: every label due at or before it was learned (the instant the model's
    state stands at).
    """

    model: OnlineLogistic
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    learned_until_ms: int | None
    reference: dict[str, Any] | None = None


def fit_challenger_prequential(
    X: np.ndarray,
    times_ms: np.ndarray,
    tx_ids: Sequence[str],
    labels: Sequence[Label],
    truth: dict[str, int],
    feature_names: Sequence[str],
    *,
    label_delay_ms: int,
    until_ms: int | None,
    seed: int = 0,
    valid_fraction: float = 0.2,
    **hyperparameters: Any,
) -> ChallengerFit:
    """Warm-start a challenger on history rows in time order, as it would have run online.

    Every row is scored when it happens and every label learned once it is due
    (:func:`~fraudstream.replay.prequential.prequential`), so the model ends exactly as
    :func:`~fraudstream.models.challenger.fit_challenger` would leave it on the learned rows in
    learning order. The prequential scores of the last ``valid_fraction`` of rows, against
    ``truth`` (0 when absent), set the thresholds and the metrics.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    model = Challenger(feature_names, seed=seed, **hyperparameters)
    run = prequential(
        model, X, times_ms, tx_ids, labels, label_delay_ms=label_delay_ms, until_ms=until_ms
    )
    n_valid = math.ceil(len(tx_ids) * valid_fraction)
    valid = slice(len(tx_ids) - n_valid, len(tx_ids))
    scores = run.scores[valid]
    y = np.array([truth.get(t, 0) for t in tx_ids[valid]], dtype=np.int8)
    if y.size == 0 or y.min() == y.max():
        raise ValueError("the challenger's validation rows need both classes (time-ordered split)")
    review = threshold_for_fpr(scores, y, REVIEW_FPR)
    decline = max(threshold_for_fpr(scores, y, DECLINE_FPR), review)
    flagged = scores >= review
    positives = int(y.sum())
    metrics = {
        "auc_roc": auc_roc(scores, y),
        "average_precision": average_precision(scores, y),
        "recall_at_review": float(flagged[y == 1].sum() / positives),
        "fpr_at_review": float(flagged[y == 0].sum() / (len(y) - positives)),
        "n_rows": len(tx_ids),
        "n_valid": int(n_valid),
        "positives": positives,
        "labels_learned": len(run.learned),
        "validation": "prequential",
    }
    from fraudstream.models.drift import reference_profile

    thresholds = {"review": review, "decline": decline}
    return ChallengerFit(
        model=model,
        thresholds=thresholds,
        metrics=metrics,
        learned_until_ms=run.learned_until_ms,
        reference=reference_profile(X[valid], scores, feature_names, thresholds=thresholds),
    )


def train_challenger_from_streams(
    transactions: list[dict],
    labels: list[dict],
    fs: FeatureSet,
    registry: Path,
    *,
    seed: int = 0,
    train_from_ms: int | None = None,
    train_to_ms: int | None = None,
    stage: str = "shadow",
    actor: str | None = None,
    reason: str | None = None,
    **hyperparameters: Any,
) -> str:
    """Replay features, warm-start the challenger on the window's rows in time order
    (:func:`fit_challenger_prequential`), register it (shadow by default).

    It learns the labels due before the window's end (``train_to_ms``; open: every label of the
    input), as it would have live. ``training_window`` also records ``learned_until_ms``; a
    backtest continues the model from there.
    """
    parsed, replay = _replay(transactions, labels, fs)
    rows = _window_rows(replay, train_from_ms, train_to_ms)
    as_of = max([lab.label_time_ms for lab in parsed] + [int(replay.times_ms.max())])
    until = as_of if train_to_ms is None else train_to_ms - 1
    fit = fit_challenger_prequential(
        replay.X[rows],
        replay.times_ms[rows],
        [replay.tx_ids[i] for i in rows],
        parsed,
        labels_as_of(parsed, as_of),
        fs.feature_names,
        label_delay_ms=fs.label_delay_ms,
        until_ms=until,
        seed=seed,
        **hyperparameters,
    )
    window = _window(replay.times_ms[rows], train_from_ms, train_to_ms)
    window["learned_until_ms"] = fit.learned_until_ms
    return ModelRegistry(registry).register(
        fit.model,
        fs,
        thresholds=fit.thresholds,
        metrics=fit.metrics,
        training_window=window,
        reference=fit.reference,
        stage=stage,
        actor=actor or default_actor(),
        reason=reason or "trained (fraudstream train --challenger)",
    )


def train_from_files(
    *,
    transactions: str | Path,
    labels: str | Path,
    feature_set: str,
    registry: Path,
    seed: int = 0,
    n_estimators: int = 200,
    train_from_ms: int | None = None,
    train_to_ms: int | None = None,
    kafka: Any = None,
    challenger: bool = False,
    stage: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> str:
    """:func:`train_from_streams` (or, with ``challenger``,
    :func:`train_challenger_from_streams`) on files or ``kafka:TOPIC[@FROM..TO]`` sources."""
    from fraudstream.replay.api import read_records

    txs = list(read_records(transactions, kafka))
    labs = list(read_records(labels, kafka))
    fs = get_feature_set(feature_set)
    window: dict[str, Any] = {"train_from_ms": train_from_ms, "train_to_ms": train_to_ms}
    if challenger:
        return train_challenger_from_streams(
            txs,
            labs,
            fs,
            registry,
            seed=seed,
            stage=stage or "shadow",
            actor=actor,
            reason=reason,
            **window,
        )
    return train_from_streams(
        txs,
        labs,
        fs,
        registry,
        seed=seed,
        n_estimators=n_estimators,
        stage=stage,
        actor=actor,
        reason=reason,
        **window,
    )
