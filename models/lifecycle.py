"""The promotion gate: may a registered model move to canary or production?

Everything here is a pure function of its arguments except :func:`measure_scoring_cost_us`, which
times a model (its clock is injected). The evidence comes from a backtest over matured labels in
which the candidate and the current production model score the same transactions
(:mod:`fraudstream.replay.evaluation`); each is judged at its own review threshold, since each
model's thresholds are set on its own validation scores.

A candidate passes when every check passes:

* ``frauds``: the evaluation window holds at least ``min_frauds`` matured frauds (otherwise
  recall says nothing);
* ``same_transactions``: both models were scored on the same transactions (same digest);
* ``recall``: its recall at its review threshold is not worse than production's on those
  transactions (passes when there is no production model);
* ``fpr``: its false-positive rate at its review threshold is at most ``max_fpr`` (2 %);
* ``cost``: its batch scoring cost, in µs per row at batch 256, is at most ``max_cost_us``;
* ``out_of_sample``: the window starts after the candidate's training data ends, so the
  backtest does not grade it on what it learned from.

``--force`` with a reason overrides a refusal; the override and the failed checks are written to
the stage log with the promotion.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fraudstream.models.base import Model
from fraudstream.timeutil import format_time_ms, format_window

__all__ = [
    "COST_BATCH",
    "GateCheck",
    "GateDecision",
    "GatePolicy",
    "ModelEvaluation",
    "check_promotion",
    "evaluation_window",
    "measure_scoring_cost_us",
    "rows_digest",
    "trained_until_ms",
]

DAY_MS = 86_400_000
#: The batch size at which scoring cost is measured.
COST_BATCH = 256
PROMOTION_STAGES = ("canary", "production")


@dataclass(frozen=True, kw_only=True)
class GatePolicy:
    """The gate's limits (see the module docstring)."""

    max_fpr: float = 0.02
    max_cost_us: float = 25.0
    min_frauds: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.max_fpr < 1.0:
            raise ValueError(f"max_fpr must be in (0, 1), got {self.max_fpr}")
        if not self.max_cost_us > 0:
            raise ValueError(f"max_cost_us must be > 0, got {self.max_cost_us}")
        if self.min_frauds < 1:
            raise ValueError(f"min_frauds must be >= 1, got {self.min_frauds}")


@dataclass(frozen=True, kw_only=True)
class ModelEvaluation:
    """One model's results on the evaluation window, at its own review threshold.

    ``version`` is None for a candidate not registered yet. ``trained_until_ms``: the last
    instant its training data covers (None: unknown). ``rows`` is a digest of the evaluated
    transactions' ids, in order (:func:`rows_digest`).
    """

    version: str | None
    kind: str
    review_threshold: float
    window_from_ms: int
    window_to_ms: int
    transactions: int
    frauds: int
    recall_at_review: float | None
    fpr_at_review: float | None
    alerts: int
    auc_roc: float | None
    average_precision: float | None
    cost_us_per_row: float
    rows: str
    trained_until_ms: int | None = None
    scoring: str = "batch"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateCheck:
    """One rule of the gate and its outcome, with the numbers that decided it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """All checks for promoting ``candidate`` to ``to`` (against ``production``, if any)."""

    to: str
    candidate: ModelEvaluation
    production: ModelEvaluation | None
    checks: tuple[GateCheck, ...]

    @property
    def accepted(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line: accepted with the deciding numbers, or refused with the failed checks."""
        who = self.candidate.version or "candidate"
        if not self.accepted:
            return f"gate refused {who} -> {self.to}: " + "; ".join(self.failures)
        c, p = self.candidate, self.production
        against = (
            "no production model"
            if p is None
            else (f"production {p.version} {_pct(p.recall_at_review)}")
        )
        return (
            f"gate passed for {who} -> {self.to}: recall {_pct(c.recall_at_review)} "
            f"({against}), fpr {_pct(c.fpr_at_review)}, {c.cost_us_per_row:.2f} µs/row, "
            f"{c.transactions} transactions in {format_window(c.window_from_ms, c.window_to_ms)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "accepted": self.accepted,
            "checks": [asdict(c) for c in self.checks],
            "candidate": self.candidate.to_json(),
            "production": None if self.production is None else self.production.to_json(),
        }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def check_promotion(
    candidate: ModelEvaluation,
    production: ModelEvaluation | None,
    policy: GatePolicy,
    *,
    to: str,
) -> GateDecision:
    """Apply the gate's rules (module docstring) to the evaluations; never raises on a refusal."""
    if to not in PROMOTION_STAGES:
        raise ValueError(f"the gate guards {PROMOTION_STAGES}, not {to!r}")
    checks = []
    checks.append(
        GateCheck(
            "frauds",
            candidate.frauds >= policy.min_frauds,
            f"{candidate.frauds} matured frauds among {candidate.transactions} transactions "
            f"(at least {policy.min_frauds} needed)",
        )
    )
    if production is not None:
        same = (production.rows, production.window_from_ms, production.window_to_ms) == (
            candidate.rows,
            candidate.window_from_ms,
            candidate.window_to_ms,
        )
        checks.append(
            GateCheck(
                "same_transactions",
                same,
                f"candidate {candidate.transactions} rows ({candidate.rows[:12]}), production "
                f"{production.transactions} rows ({production.rows[:12]})",
            )
        )
        ok = (
            candidate.recall_at_review is not None
            and production.recall_at_review is not None
            and candidate.recall_at_review >= production.recall_at_review
        )
        checks.append(
            GateCheck(
                "recall",
                ok,
                f"recall at review threshold {_pct(candidate.recall_at_review)} vs production "
                f"{production.version}'s {_pct(production.recall_at_review)} (not worse needed)",
            )
        )
    else:
        checks.append(GateCheck("recall", True, "no production model to compare with"))
    fpr = candidate.fpr_at_review
    checks.append(
        GateCheck(
            "fpr",
            fpr is not None and fpr <= policy.max_fpr,
            f"false-positive rate at review threshold {_pct(fpr)} (at most {_pct(policy.max_fpr)})",
        )
    )
    checks.append(
        GateCheck(
            "cost",
            candidate.cost_us_per_row <= policy.max_cost_us,
            f"{candidate.cost_us_per_row:.2f} µs/row at batch {COST_BATCH} "
            f"(budget {policy.max_cost_us:g})",
        )
    )
    until = candidate.trained_until_ms
    checks.append(
        GateCheck(
            "out_of_sample",
            until is not None and until < candidate.window_from_ms,
            "training data ends before the window"
            if until is not None and until < candidate.window_from_ms
            else (
                "the candidate records no training window"
                if until is None
                else f"training data reaches {format_time_ms(until)}, the window starts at "
                f"{format_time_ms(candidate.window_from_ms)}"
            ),
        )
    )
    return GateDecision(to=to, candidate=candidate, production=production, checks=tuple(checks))


def trained_until_ms(manifest: Mapping[str, Any]) -> int | None:
    """The last instant a model's training data covers, from its manifest's training window:
    the end of the window asked for (exclusive, so minus 1 ms), else the last training row, and
    for an online model the last label it learned from, whichever is later."""
    window = manifest.get("training_window") or {}
    ends = []
    if window.get("requested_to_ms") is not None:
        ends.append(int(window["requested_to_ms"]) - 1)
    elif window.get("to_ms") is not None:
        ends.append(int(window["to_ms"]))
    if window.get("learned_until_ms") is not None:
        ends.append(int(window["learned_until_ms"]))
    return max(ends) if ends else None


def evaluation_window(
    as_of_ms: int,
    *,
    maturity_ms: int,
    days: float,
    not_before_ms: int | None = None,
) -> tuple[int, int]:
    """``[from, to)`` of matured transactions: ``to = as_of - maturity``, ``from = to - days``
    (raised to ``not_before_ms`` when given). ValueError when the window is empty."""
    if maturity_ms < 0 or days <= 0:
        raise ValueError("maturity must be >= 0 and days > 0")
    to_ms = as_of_ms - maturity_ms
    from_ms = to_ms - int(days * DAY_MS)
    if not_before_ms is not None:
        from_ms = max(from_ms, not_before_ms)
    if from_ms >= to_ms:
        raise ValueError(
            f"no matured window: transactions mature until {format_time_ms(to_ms)} (as of "
            f"{format_time_ms(as_of_ms)} minus {maturity_ms / DAY_MS:g} days), the window would "
            f"start at {format_time_ms(from_ms)}"
        )
    return from_ms, to_ms


def rows_digest(tx_ids: Sequence[str]) -> str:
    """sha256 of the transaction ids, in order: two evaluations on the same rows share it."""
    digest = hashlib.sha256()
    for tx_id in tx_ids:
        digest.update(tx_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def measure_scoring_cost_us(
    model: Model,
    X: np.ndarray,
    *,
    batch: int = COST_BATCH,
    repeats: int = 5,
    min_rows: int = 4096,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median over ``repeats`` passes of ``score_many`` time per row, in µs, in batches of
    ``batch`` rows taken from ``X`` (repeated to at least ``min_rows`` rows)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError("need at least one row to measure scoring cost")
    reps = -(-max(min_rows, batch) // X.shape[0])
    rows = np.ascontiguousarray(np.tile(X, (reps, 1))[: max(min_rows, batch)])
    batches = [rows[i : i + batch] for i in range(0, len(rows) - batch + 1, batch)]
    model.score_many(batches[0])  # warm-up: caches, lazy state
    timings = []
    for _ in range(repeats):
        start = clock()
        for b in batches:
            model.score_many(b)
        timings.append((clock() - start) / (len(batches) * batch) * 1e6)
    return float(np.median(timings))
