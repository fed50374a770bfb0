"""Prequential replay of an online model: score each transaction when it happens, learn each
label only once it is known.

Order (the live flow's, as :func:`~fraudstream.replay.features.replay_features` applies it):

* transactions are taken in input order; the clock is the running maximum of their event times;
* a label is *due* at ``label_time_ms + label_delay_ms`` (the feature set's delay) and is learned
  just before the first transaction whose clock is at or after that time; labels due at the same
  point are learned in due-time order, ties in input order; labels still pending after the last
  transaction are learned only up to ``until_ms``;
* a label is learned with the features its transaction had at decision time (its replayed row),
  once per change: a transaction's first label is learned, a repeat of the same value is not, a
  reversal (0 -> 1 or 1 -> 0) is learned again;
* a label due before its transaction (clock skew) waits and is learned right after that
  transaction is scored; a label for a transaction the input does not hold is ignored.

Scoring a transaction never changes a model, and scores are batch-invariant (``models/base.py``),
so scores are computed in batches between two learning points and equal one-by-one scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fraudstream.models.base import Model
from fraudstream.schema import Label

__all__ = ["PrequentialResult", "prequential"]


@dataclass
class PrequentialResult:
    """``scores[i]``: row ``i``'s score when it happened (nan where not asked for).

    ``learned``: ``(tx_id, label, label_time_ms, before_row)`` in learning order, where
    ``before_row`` is the row the label was learned before (the number of rows: after the last).
    ``learned_until_ms``: labels due at or before it were learned, later ones were not.
    """

    scores: np.ndarray
    learned: list[tuple[str, int, int, int]] = field(default_factory=list)
    learned_until_ms: int | None = None


def prequential(
    model: Model,
    X: np.ndarray,
    times_ms: np.ndarray,
    tx_ids: Sequence[str],
    labels: Sequence[Label],
    *,
    label_delay_ms: int = 0,
    score: np.ndarray | None = None,
    known_until_ms: int | None = None,
    until_ms: int | None = None,
    batch_size: int = 256,
) -> PrequentialResult:
    """Run ``model`` over the rows of ``X`` (input order), learning ``labels`` as they fall due.

    ``score``: a boolean mask of the rows to score (default: all); the others are only used to
    learn from. ``known_until_ms``: the model has already learned every label due at or before
    it (a registered model's ``learned_until_ms``): such labels only set the value a later change
    is compared with. ``until_ms``: after the last row, learn labels due at or before it (default:
    none). ``model`` is updated in place.
    """
    n = X.shape[0]
    if times_ms.shape != (n,) or len(tx_ids) != n:
        raise ValueError("X, times_ms and tx_ids must have one entry per row")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not model.learns_online:
        raise ValueError(f"{type(model).__name__} does not learn online")
    mask = np.ones(n, dtype=bool) if score is None else np.asarray(score, dtype=bool)
    if mask.shape != (n,):
        raise ValueError("score must be a boolean mask with one entry per row")
    known = -(2**63) if known_until_ms is None else known_until_ms

    row_of: dict[str, int] = {}
    for i, tx_id in enumerate(tx_ids):
        row_of.setdefault(tx_id, i)
    due = [lab.label_time_ms + label_delay_ms for lab in labels]
    order = sorted(range(len(labels)), key=lambda j: (due[j], j))

    scores = np.full(n, np.nan)
    result = PrequentialResult(scores=scores)
    last: dict[str, int] = {}
    waiting: dict[int, list[int]] = {}
    to_score: list[int] = []
    to_learn: list[int] = []
    to_learn_y: list[int] = []

    def flush_scores() -> None:
        if to_score:
            scores[to_score] = model.score_many(X[to_score])
            to_score.clear()

    def flush_learning() -> None:
        if to_learn:
            model.learn_many(X[to_learn], np.asarray(to_learn_y, dtype=np.int64))
            to_learn.clear()
            to_learn_y.clear()

    def consider(j: int, row: int, before_row: int) -> None:
        lab = labels[j]
        if last.get(lab.tx_id) == lab.label:
            return
        last[lab.tx_id] = lab.label
        if due[j] <= known:
            return
        flush_scores()
        to_learn.append(row)
        to_learn_y.append(lab.label)
        result.learned.append((lab.tx_id, lab.label, lab.label_time_ms, before_row))

    clock = -(2**63)
    p = 0
    for i in range(n):
        clock = max(clock, int(times_ms[i]))
        while p < len(order) and due[order[p]] <= clock:
            j = order[p]
            p += 1
            row = row_of.get(labels[j].tx_id)
            if row is None:
                continue
            if row >= i:
                waiting.setdefault(row, []).append(j)
            else:
                consider(j, row, i)
        if mask[i]:
            flush_learning()
            to_score.append(i)
            if len(to_score) >= batch_size:
                flush_scores()
        for j in waiting.pop(i, ()):
            consider(j, i, i + 1)
    flush_scores()
    learned_until = clock if n else known
    if until_ms is not None:
        while p < len(order) and due[order[p]] <= until_ms:
            j = order[p]
            p += 1
            row = row_of.get(labels[j].tx_id)
            if row is not None:
                consider(j, row, n)
        learned_until = max(learned_until, until_ms)
    flush_learning()
    result.learned_until_ms = None if learned_until == -(2**63) else learned_until
    return result
