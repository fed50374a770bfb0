"""Offline training of the champion, decision thresholds and validation metrics (numpy only).

The split is by time: rows must be in event-time order and the last ``valid_fraction`` of them
validate. A score ``s`` is flagged at threshold ``t`` when ``s >= t``; thresholds are chosen on
validation so that the false-positive rate is at most 2 % (``review``) and 0.2 % (``decline``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb

__all__ = [
    "DECLINE_FPR",
    "REVIEW_FPR",
    "TrainResult",
    "action_for",
    "actions",
    "auc_roc",
    "average_precision",
    "threshold_for_fpr",
    "train_champion",
]

REVIEW_FPR = 0.02
DECLINE_FPR = 0.002


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """A trained booster, its decision thresholds and its validation metrics."""

    booster: xgb.Booster = field(repr=False)
    thresholds: dict[str, float]
    metrics: dict[str, float]
    feature_names: tuple[str, ...] = ()
    # what drift detection compares live traffic with (validation rows and their scores)
    reference: dict[str, Any] | None = field(default=None, repr=False)


def train_champion(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    *,
    seed: int = 0,
    n_estimators: int = 200,
    max_depth: int = 6,
    learning_rate: float = 0.1,
    valid_fraction: float = 0.2,
) -> TrainResult:
    """Train on the first rows, pick thresholds and measure on the last ``valid_fraction``."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    names = tuple(feature_names)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must be 2-D with {len(names)} columns, got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must contain only 0 and 1")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    y = y.astype(np.int8)
    n_valid = math.ceil(len(y) * valid_fraction)
    n_train = len(y) - n_valid
    for part, labels in (("train", y[:n_train]), ("validation", y[n_train:])):
        if labels.size == 0 or labels.min() == labels.max():
            raise ValueError(f"the {part} split needs both classes (time-ordered split)")

    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "tree_method": "hist",
        "max_depth": max_depth,
        "eta": learning_rate,
        "seed": seed,
    }
    dtrain = xgb.DMatrix(X[:n_train], label=y[:n_train], feature_names=list(names))
    booster = xgb.train(params, dtrain, num_boost_round=n_estimators)

    y_valid = y[n_train:]
    scores = np.asarray(booster.inplace_predict(X[n_train:], validate_features=False))
    review = threshold_for_fpr(scores, y_valid, REVIEW_FPR)
    decline = max(threshold_for_fpr(scores, y_valid, DECLINE_FPR), review)
    flagged = scores >= review
    positives = int(y_valid.sum())
    negatives = len(y_valid) - positives
    metrics = {
        "auc_roc": auc_roc(scores, y_valid),
        "average_precision": average_precision(scores, y_valid),
        "recall_at_review": float(flagged[y_valid == 1].sum() / positives),
        "fpr_at_review": float(flagged[y_valid == 0].sum() / negatives),
        "n_train": n_train,
        "n_valid": int(n_valid),
        "positives": positives,
    }
    from fraudstream.models.drift import reference_profile

    reference = reference_profile(
        X[n_train:], scores, names, thresholds={"review": review, "decline": decline}
    )
    return TrainResult(
        reference=reference,
        booster=booster,
        feature_names=names,
        thresholds={"review": review, "decline": decline},
        metrics=metrics,
    )


def threshold_for_fpr(scores: np.ndarray, y: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose false-positive rate (``score >= t``) is at most ``max_fpr``.

    Thresholds are taken from the observed scores; when every score above the cut-off belongs to
    a negative, the next float above the highest allowed negative is used.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    neg = np.sort(scores[y == 0])[::-1]
    if neg.size == 0:
        raise ValueError("no negatives: the false-positive rate is undefined")
    allowed = math.floor(max_fpr * neg.size + 1e-9)
    if allowed >= neg.size:
        return float(scores.min())
    cutoff = neg[allowed]  # must not be flagged, or the FPR exceeds max_fpr
    above = scores[scores > cutoff]
    if above.size:
        return float(above.min())
    return _next_float32_above(cutoff)


def _next_float32_above(value: float) -> float:
    """The smallest float32 above ``value``: XGBoost scores are float32, and comparing them
    with a float64 threshold may round the threshold to float32 (NumPy 2 scalar promotion)."""
    t = np.float32(value)
    while float(t) <= value:
        t = np.nextafter(t, np.float32(np.inf))
    return float(t)


def auc_roc(scores: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U); tied scores share their mean rank."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    ranks = mean_rank[inverse]
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """Sum over distinct thresholds of precision times the recall gained (no interpolation)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    n_pos = int((y == 1).sum())
    if n_pos == 0:
        raise ValueError("average precision needs positives")
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    tp = np.cumsum(y[order] == 1)
    # last index of each run of tied scores: the threshold includes the whole tie
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp_at = tp[last]
    precision = tp_at / (last + 1)
    recall_gain = np.diff(np.r_[0, tp_at]) / n_pos
    return float((precision * recall_gain).sum())


def action_for(score: float, thresholds: Mapping[str, float]) -> str:
    """``"decline"``, ``"review"`` or ``"approve"`` for one score (``score >= threshold``)."""
    if math.isnan(score):
        raise ValueError("score is NaN")
    if score >= thresholds["decline"]:
        return "decline"
    if score >= thresholds["review"]:
        return "review"
    return "approve"


def actions(scores: np.ndarray, thresholds: Mapping[str, float]) -> list[str]:
    """:func:`action_for` over an array of scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    out = np.where(
        scores >= thresholds["decline"],
        "decline",
        np.where(scores >= thresholds["review"], "review", "approve"),
    )
    return out.tolist()
