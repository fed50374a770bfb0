"""``fraudstream retrain``: the nightly job. Replay the last days, train a candidate, backtest it
against the production model on the same matured window, register it, optionally apply the gate.

Windows, all derived from ``as_of`` (default: the end of the input)::

    |<------------------------------ days ------------------------------>|
    |<----- training rows ----->|<--- evaluation --->|<--- maturity --->|
    start                   eval_from             eval_to             as_of

* the input is the transactions with event time in ``[as_of - days, as_of]`` and the labels
  issued in that span (older history does not feed the state: the first days' features see
  less of it);
* the evaluation window ``[eval_to - eval_days, eval_to)`` with ``eval_to = as_of - maturity``:
  only transactions whose chargebacks had time to arrive; ground truth is the latest label issued
  by as-of;
* the candidate trains on the transactions before ``eval_from`` with the labels known at as-of,
  so the window is out of its sample (the production model may have seen part of it: a warning
  says so, and the comparison then favours production).

The candidate is registered in ``shadow`` whatever the outcome, its evaluation in its manifest's
``metrics["evaluation"]``. With ``promote`` (canary or production) the gate of
:mod:`fraudstream.models.lifecycle` decides, and an accepted candidate is moved there. The summary
(:attr:`RetrainResult.summary`) is JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fraudstream.errors import ConfigError
from fraudstream.models.base import Model
from fraudstream.models.champion import XGBChampion
from fraudstream.models.lifecycle import (
    DAY_MS,
    GatePolicy,
    check_promotion,
    evaluation_window,
    measure_scoring_cost_us,
)
from fraudstream.models.registry import ModelRegistry
from fraudstream.models.train import train_champion
from fraudstream.replay.evaluation import (
    Contender,
    end_of_input_ms,
    evaluate_models,
    parse_records,
)
from fraudstream.replay.features import replay_features
from fraudstream.replay.training import fit_challenger_prequential, labels_as_of
from fraudstream.state.features import FeatureSet
from fraudstream.timeutil import format_time_ms, format_window

__all__ = ["RetrainConfig", "RetrainResult", "retrain"]


@dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    """What ``retrain`` does (module docstring); ``kind`` is the candidate's model kind."""

    actor: str
    days: float = 30.0
    maturity_days: float = 8.0
    eval_days: float = 7.0
    as_of_ms: int | None = None
    kind: Literal["xgboost", "river-logistic"] = "xgboost"
    seed: int = 0
    n_estimators: int = 200
    promote: Literal["canary", "production"] | None = None
    policy: GatePolicy = field(default_factory=GatePolicy)

    def __post_init__(self) -> None:
        if self.days <= 0 or self.eval_days <= 0 or self.maturity_days < 0:
            raise ValueError("days and eval_days must be > 0, maturity_days >= 0")
        if self.days <= self.eval_days + self.maturity_days:
            raise ValueError(
                f"days ({self.days:g}) must exceed eval_days + maturity_days "
                f"({self.eval_days:g} + {self.maturity_days:g}): no room left to train"
            )
        if self.kind not in ("xgboost", "river-logistic"):
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.promote not in (None, "canary", "production"):
            raise ValueError(f"promote must be canary or production, got {self.promote!r}")


@dataclass(frozen=True)
class RetrainResult:
    """The registered version, whether the gate accepted it (None: not asked), the summary."""

    version: str
    accepted: bool | None
    summary: dict[str, Any]


def retrain(
    transactions: Iterable[dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    fs: FeatureSet,
    registry: Path,
    cfg: RetrainConfig,
    *,
    measure_cost: Callable[[Model, np.ndarray], float] = measure_scoring_cost_us,
) -> RetrainResult:
    """Run the job (module docstring) on raw records; returns what happened."""
    txs, labs = parse_records(transactions, labels)
    as_of = end_of_input_ms(txs, labs) if cfg.as_of_ms is None else cfg.as_of_ms
    start = as_of - int(cfg.days * DAY_MS)
    eval_from, eval_to = evaluation_window(
        as_of, maturity_ms=int(cfg.maturity_days * DAY_MS), days=cfg.eval_days
    )
    txs = [tx for tx in txs if start <= tx.event_time_ms <= as_of]
    labs = [lab for lab in labs if start <= lab.label_time_ms <= as_of]
    replay = replay_features(txs, labs, fs, progress=True)
    rows = np.flatnonzero(replay.times_ms < eval_from)
    if not rows.size:
        raise ConfigError(
            f"no transactions to train on before {format_time_ms(eval_from)} "
            f"(input {format_window(start, as_of + 1)})"
        )
    truth = labels_as_of(labs, as_of)
    ids = [replay.tx_ids[i] for i in rows]
    window: dict[str, Any] = {
        "from_ms": int(replay.times_ms[rows].min()),
        "to_ms": int(replay.times_ms[rows].max()),
        "requested_from_ms": start,
        "requested_to_ms": eval_from,
    }
    model: Model
    if cfg.kind == "xgboost":
        y = np.array([truth.get(t, 0) for t in ids], dtype=np.int32)
        result = train_champion(
            replay.X[rows], y, fs.feature_names, seed=cfg.seed, n_estimators=cfg.n_estimators
        )
        model = XGBChampion(result.booster, fs.feature_names)
        thresholds, metrics = result.thresholds, dict(result.metrics)
    else:
        fit = fit_challenger_prequential(
            replay.X[rows],
            replay.times_ms[rows],
            ids,
            labs,
            truth,
            fs.feature_names,
            label_delay_ms=fs.label_delay_ms,
            until_ms=eval_from - 1,
            seed=cfg.seed,
        )
        model, thresholds, metrics = fit.model, fit.thresholds, dict(fit.metrics)
        window["learned_until_ms"] = fit.learned_until_ms

    reg = ModelRegistry(registry)
    candidate = Contender(
        model=model,
        kind=cfg.kind,
        thresholds=thresholds,
        feature_set=fs,
        trained_until_ms=eval_from - 1,
        learned_until_ms=window.get("learned_until_ms"),
    )
    contenders = [candidate]
    production = reg.newest(stage="production")
    if production is not None:
        contenders.append(Contender.from_loaded(reg.load(production)))
    evaluations = evaluate_models(
        txs,
        labs,
        contenders,
        from_ms=eval_from,
        to_ms=eval_to,
        as_of_ms=as_of,
        measure_cost=measure_cost,
        replays={fs.fingerprint: replay},
    )
    cand_eval = evaluations[0]
    prod_eval = evaluations[1] if production is not None else None
    metrics["evaluation"] = cand_eval.to_json()
    version = reg.register(
        model,
        fs,
        thresholds=thresholds,
        metrics=metrics,
        training_window=window,
        stage="shadow",
        actor=cfg.actor,
        reason=f"retrain: last {cfg.days:g} days as of {format_time_ms(as_of)}",
    )
    cand_eval = dataclasses.replace(cand_eval, version=version)

    warnings = []
    if prod_eval is not None and (
        prod_eval.trained_until_ms is None or prod_eval.trained_until_ms >= eval_from
    ):
        warnings.append(
            f"production {production}'s training data may reach into the evaluation window: "
            "the comparison favours it"
        )
    decision = None
    if cfg.promote is not None:
        decision = check_promotion(cand_eval, prod_eval, cfg.policy, to=cfg.promote)
        if decision.accepted:
            reason = f"retrain, {decision.summary()}"
            reg.set_stage(version, cfg.promote, reason=reason, actor=cfg.actor)
    summary: dict[str, Any] = {
        "as_of_ms": as_of,
        "as_of": format_time_ms(as_of),
        "input": {
            "window": format_window(start, as_of + 1),
            "transactions": len(txs),
            "labels": len(labs),
        },
        "training": {
            "window": format_window(start, eval_from),
            "rows": int(rows.size),
            "kind": cfg.kind,
        },
        "evaluation": {
            "window": format_window(eval_from, eval_to),
            "from_ms": eval_from,
            "to_ms": eval_to,
            "maturity_days": cfg.maturity_days,
            "protocol": "strict",
        },
        "candidate": {
            "version": version,
            "kind": cfg.kind,
            "thresholds": thresholds,
            "validation": {k: v for k, v in metrics.items() if k != "evaluation"},
            "evaluation": cand_eval.to_json(),
        },
        "production": None
        if prod_eval is None
        else {"version": production, "kind": prod_eval.kind, "evaluation": prod_eval.to_json()},
        "gate": None
        if decision is None
        else {k: v for k, v in decision.to_json().items() if k not in ("candidate", "production")},
        "accepted": None if decision is None else decision.accepted,
        "reason": None if decision is None else decision.summary(),
        "stage": reg.stage_of(version),
        "warnings": warnings,
    }
    return RetrainResult(
        version=version, accepted=None if decision is None else decision.accepted, summary=summary
    )
