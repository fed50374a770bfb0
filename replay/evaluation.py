"""Evidence for the promotion gate: models scored on the same matured transactions.

The window ``[from_ms, to_ms)`` is assessed with the strict protocol of
:mod:`fraudstream.replay.backtest` (cards with a fraud label issued before the test day are left
out): its rows depend on the records only, never on a model, so every model is scored on exactly
the same transactions. Ground truth is the latest label issued at or before ``as_of_ms``; choose
the window so that it has matured (:func:`~fraudstream.models.lifecycle.evaluation_window`).

A batch model scores the window's rows at once. An online model is replayed prequentially
(:mod:`fraudstream.replay.prequential`) from a copy of its state: it learns the labels that fall
due after its ``learned_until_ms`` and scores each row when it happens. Each model is judged at
its own review threshold, and its scoring cost is measured on the window's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudstream.errors import ConfigError, RegistryError
from fraudstream.models.base import Model, sha256_hex
from fraudstream.models.lifecycle import (
    DAY_MS,
    GateDecision,
    GatePolicy,
    ModelEvaluation,
    check_promotion,
    evaluation_window,
    measure_scoring_cost_us,
    rows_digest,
    trained_until_ms,
)
from fraudstream.models.registry import LoadedModel, ModelRegistry
from fraudstream.models.train import auc_roc, average_precision
from fraudstream.replay.backtest import StrictProtocol, period_rows
from fraudstream.replay.features import ReplayResult, replay_features, to_label, to_transaction
from fraudstream.replay.prequential import prequential
from fraudstream.schema import Label, Transaction
from fraudstream.state.features import FeatureSet, get_feature_set
from fraudstream.timeutil import format_time_ms, format_window

__all__ = [
    "Contender",
    "copy_model",
    "end_of_input_ms",
    "evaluate_models",
    "evaluate_promotion",
    "parse_records",
]


@dataclass(frozen=True, kw_only=True)
class Contender:
    """A model to evaluate: a registered version (:meth:`from_loaded`) or a fresh candidate."""

    model: Model
    kind: str
    thresholds: Mapping[str, float]
    feature_set: FeatureSet
    version: str | None = None
    trained_until_ms: int | None = None
    learned_until_ms: int | None = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, feature_set: FeatureSet | None = None) -> Contender:
        manifest = loaded.manifest
        window = manifest.get("training_window") or {}
        return cls(
            model=loaded.model,
            kind=loaded.kind,
            thresholds=loaded.thresholds,
            feature_set=feature_set or get_feature_set(manifest["feature_set"]["name"]),
            version=loaded.version,
            trained_until_ms=trained_until_ms(manifest),
            learned_until_ms=window.get("learned_until_ms"),
        )


def copy_model(model: Model) -> Model:
    """An independent copy through the model's own persistence (no pickle)."""
    data = model.to_bytes()
    return type(model).from_bytes(data, expected_sha256=sha256_hex(data))


def _first_copies(txs: Sequence[Transaction]) -> list[Transaction]:
    seen: set[str] = set()
    out = []
    for tx in txs:
        if tx.tx_id not in seen:
            seen.add(tx.tx_id)
            out.append(tx)
    return out


def evaluate_models(
    transactions: Sequence[Transaction],
    labels: Sequence[Label],
    contenders: Sequence[Contender],
    *,
    from_ms: int,
    to_ms: int,
    as_of_ms: int,
    measure_cost: Callable[[Model, np.ndarray], float] = measure_scoring_cost_us,
    replays: dict[str, ReplayResult] | None = None,
) -> list[ModelEvaluation]:
    """One :class:`ModelEvaluation` per contender, all on the same rows (module docstring).

    ``replays`` caches feature replays by feature-set fingerprint (pass a dict to share them
    between calls on the same records).
    """
    if to_ms <= from_ms:
        raise ValueError("empty evaluation window")
    if to_ms > as_of_ms + 1:
        raise ValueError("the evaluation window must end by as-of")
    txs = _first_copies([tx for tx in transactions if tx.event_time_ms <= as_of_ms])
    labs = [lab for lab in labels if lab.label_time_ms <= as_of_ms]
    period = period_rows(txs, labs, StrictProtocol(), from_ms=from_ms, to_ms=to_ms)
    replays = {} if replays is None else replays
    out = []
    for c in contenders:
        fs = c.feature_set
        replay = replays.get(fs.fingerprint)
        if replay is None:
            replay = replays[fs.fingerprint] = replay_features(txs, labs, fs)
        position = {tx_id: i for i, tx_id in enumerate(replay.tx_ids)}
        keep = [j for j, i in enumerate(period.index.tolist()) if txs[i].tx_id in position]
        rows = np.array([position[txs[i].tx_id] for i in period.index[keep]], dtype=np.int64)
        y = period.y[keep]
        ids = [replay.tx_ids[r] for r in rows]
        out.append(_evaluate(c, replay, labs, rows, y, ids, from_ms, to_ms, measure_cost))
    return out


def _evaluate(
    c: Contender,
    replay: ReplayResult,
    labs: Sequence[Label],
    rows: np.ndarray,
    y: np.ndarray,
    ids: list[str],
    from_ms: int,
    to_ms: int,
    measure_cost: Callable[[Model, np.ndarray], float],
) -> ModelEvaluation:
    X = replay.X[rows]
    cost = measure_cost(c.model, X) if len(rows) else float("nan")
    scoring: str
    if c.model.learns_online:
        model = copy_model(c.model)
        mask = np.zeros(len(replay.tx_ids), dtype=bool)
        mask[rows] = True
        run = prequential(
            model,
            replay.X,
            replay.times_ms,
            replay.tx_ids,
            labs,
            label_delay_ms=c.feature_set.label_delay_ms,
            score=mask,
            known_until_ms=c.learned_until_ms,
        )
        scores = run.scores[rows]
        scoring = f"prequential ({len(run.learned)} labels learned)"
    else:
        scores = np.asarray(c.model.score_many(X), dtype=np.float64)
        scoring = "batch"
    review = float(c.thresholds["review"])
    stats = _at_threshold(scores, y, review)
    return ModelEvaluation(
        version=c.version,
        kind=c.kind,
        review_threshold=review,
        window_from_ms=from_ms,
        window_to_ms=to_ms,
        cost_us_per_row=cost,
        rows=rows_digest(ids),
        trained_until_ms=c.trained_until_ms,
        scoring=scoring,
        **stats,
    )


def _at_threshold(scores: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    flagged = scores >= threshold
    positives = int(y.sum())
    negatives = len(y) - positives
    return {
        "transactions": len(y),
        "frauds": positives,
        "recall_at_review": float(flagged[y == 1].sum() / positives) if positives else None,
        "fpr_at_review": float(flagged[y == 0].sum() / negatives) if negatives else None,
        "alerts": int(flagged.sum()),
        "auc_roc": auc_roc(scores, y) if 0 < positives < len(y) else None,
        "average_precision": average_precision(scores, y) if positives else None,
    }


def parse_records(
    transactions: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]]
) -> tuple[list[Transaction], list[Label]]:
    """Valid transactions and labels of raw records (invalid ones are left out)."""
    txs = [tx for tx in map(to_transaction, transactions) if tx is not None]
    labs = [lab for lab in map(to_label, labels) if lab is not None]
    return txs, labs


def end_of_input_ms(txs: Sequence[Transaction], labs: Sequence[Label]) -> int:
    """The latest event or label time of the input: the default as-of."""
    times = [tx.event_time_ms for tx in txs] + [lab.label_time_ms for lab in labs]
    if not times:
        raise ConfigError("no valid transactions or labels in the input")
    return max(times)


def evaluate_promotion(
    registry: ModelRegistry,
    version: str,
    to: str,
    txs: Sequence[Transaction],
    labs: Sequence[Label],
    *,
    policy: GatePolicy,
    maturity_ms: int,
    eval_days: float,
    as_of_ms: int | None = None,
    window: tuple[int, int] | None = None,
    measure_cost: Callable[[Model, np.ndarray], float] = measure_scoring_cost_us,
) -> GateDecision:
    """The gate's decision on promoting ``version`` to ``to`` (canary or production).

    The window is ``window``, or the matured days after the candidate's training data:
    :func:`~fraudstream.models.lifecycle.evaluation_window` with the candidate's
    ``trained_until_ms`` as its earliest start. As-of defaults to the end of the input.
    """
    candidate = Contender.from_loaded(registry.load(version))
    current = registry.stage_of(version)
    if current in (to, "production"):
        raise RegistryError(f"{version} is already in {current}")
    as_of = end_of_input_ms(txs, labs) if as_of_ms is None else as_of_ms
    if window is not None and window[1] > as_of + 1:
        raise ConfigError(
            f"evaluation window {format_window(*window)} ends after as-of {_when(as_of)}: "
            "its labels are not known yet"
        )
    if window is None:
        until = candidate.trained_until_ms
        try:
            window = evaluation_window(
                as_of,
                maturity_ms=maturity_ms,
                days=eval_days,
                not_before_ms=None if until is None else until + 1,
            )
        except ValueError as exc:
            raise ConfigError(
                f"{version}: no matured transactions after its training data "
                f"(it ends {_when(until)}; as of {_when(as_of)} minus the maturity of "
                f"{maturity_ms / DAY_MS:g} days): wait for newer data, give --eval-from/--eval-to, "
                "or --force with a reason"
            ) from exc
    contenders = [candidate]
    production = registry.newest(stage="production")
    if production is not None:
        contenders.append(Contender.from_loaded(registry.load(production)))
    evaluations = evaluate_models(
        txs,
        labs,
        contenders,
        from_ms=window[0],
        to_ms=window[1],
        as_of_ms=as_of,
        measure_cost=measure_cost,
    )
    prod = evaluations[1] if production is not None else None
    return check_promotion(evaluations[0], prod, policy, to=to)


def _when(ms: int | None) -> str:
    return "unknown" if ms is None else format_time_ms(ms)
