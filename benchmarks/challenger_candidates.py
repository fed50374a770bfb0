"""Online challenger candidates, compared prequentially with delayed labels (seeded, no network).

For each simulation seed: simulate (``SimConfig(seed, n_customers, days)``), replay the stream
through ``replay_features`` (decision-time features, the live state code), then run every
candidate over the transactions in event order:

* every transaction is scored when it happens, in micro-batches of at most ``--batch`` rows, as
  the flow scores them;
* a label is learned once its ``label_time_ms`` has passed: before the first transaction whose
  event time is at or after it (the rule ``replay_features`` applies to label-based features),
  with the features its transaction had at decision time. Only the first label of a transaction
  is learned (a second chargeback for the same transaction is a duplicate).

Quality is measured against the simulator's ground truth on the transactions of days
``[--eval-from-day, days)``: ROC AUC, average precision, log loss and recall at 2 % FPR (the
review threshold's false-positive rate; the threshold is the one that gives 2 % FPR on that
window). ``auc_all`` covers every transaction from day 0 (cold start included).

Cost (first seed, one process): scoring per row at batch 64 and 512 with the final model
(median of 3 passes over ``--cost-rows`` rows), learning per labelled event (mean over the
run), and ``cost_us_per_event`` = score at batch 64 + learn time x labelled share, plus, for the
vectorised models, the refresh of the scoring arrays after learning (measured inside the run:
``run_us_per_event`` is the whole prequential loop's time per transaction).

Reference row ``champion``: the XGBoost champion (``train_champion`` defaults) trained on days
``[0, eval_from_day - 8)`` with the labels known at ``eval_from_day`` (chargebacks take 7-8 days),
scored on the same window. It is batch-trained, not prequential.

Run (one JSON line per candidate, then one for the champion and one for River's own batch
scoring)::

    .venv/bin/python -m benchmarks.challenger_candidates            # 3 seeds, ~10 min
    .venv/bin/python -m benchmarks.challenger_candidates --seeds 7 --only lr_sgd --only hat
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from fraudstream.models.challenger import OnlineLogistic
from fraudstream.models.champion import XGBChampion
from fraudstream.models.train import (
    REVIEW_FPR,
    auc_roc,
    average_precision,
    threshold_for_fpr,
    train_champion,
)
from fraudstream.replay.features import replay_features
from fraudstream.simulate import DAY_MS, SimConfig, generate
from fraudstream.state.features import default_feature_set


class Candidate(Protocol):
    def score_many(self, X: np.ndarray) -> np.ndarray: ...
    def learn_one(self, x: Mapping[str, float], y: int) -> None: ...


class RiverPerRow:
    """A River classifier scored row by row (``predict_proba_one``): what a model that cannot be
    vectorised costs."""

    def __init__(self, model: Any, names: Sequence[str]) -> None:
        self.model = model
        self.names = tuple(names)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        names, predict = self.names, self.model.predict_proba_one
        out = np.empty(len(X))
        for i, values in enumerate(X.tolist()):
            proba = predict(dict(zip(names, values, strict=True)))
            out[i] = proba.get(1, 0.0)
        return out

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        self.model.learn_one(dict(x), y)


def _river(factory: Callable[[int], Any]) -> Callable[[Sequence[str], int], Candidate]:
    return lambda names, seed: RiverPerRow(factory(seed), names)


def _logistic(**params: Any) -> Callable[[Sequence[str], int], Candidate]:
    params.setdefault("undersample", None)
    return lambda names, seed: OnlineLogistic(names, seed=seed, **params)


def _rus(model: Any, seed: int) -> Any:
    from river import imblearn

    return imblearn.RandomUnderSampler(model, desired_dist={0: 0.5, 1: 0.5}, seed=seed)


def _hat(seed: int) -> Any:
    from river import tree

    return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def _arf(n_models: int) -> Callable[[int], Any]:
    def make(seed: int) -> Any:
        from river import forest

        return forest.ARFClassifier(n_models=n_models, seed=seed)

    return make


def _gnb(seed: int) -> Any:
    from river import naive_bayes

    return naive_bayes.GaussianNB()


def _amf(seed: int) -> Any:
    from river import forest

    return forest.AMFClassifier(n_estimators=5, seed=seed)


# name -> (pipeline as the docs show it, factory(feature_names, seed))
CANDIDATES: dict[str, tuple[str, Callable[[Sequence[str], int], Candidate]]] = {
    "lr_sgd": ("StandardScaler | LR(SGD 0.01)", _logistic(transform="none", optimizer="sgd")),
    "lr_sgd_rus": (
        "StandardScaler | RUS(0.5) | LR(SGD 0.01)",
        _logistic(transform="none", optimizer="sgd", undersample=0.5),
    ),
    "lr_sgd_0.005": (
        "StandardScaler | LR(SGD 0.005)",
        _logistic(transform="none", optimizer="sgd", lr=0.005),
    ),
    "lr_sgd_wneg2": (
        "StandardScaler | LR(SGD 0.01, weight_neg=2)",
        _logistic(transform="none", optimizer="sgd", weight_neg=2.0),
    ),
    "lr_adam": ("StandardScaler | LR(Adam 0.01)", _logistic(transform="none", optimizer="adam")),
    "lr_adagrad": (
        "StandardScaler | LR(AdaGrad 0.1)",
        _logistic(transform="none", optimizer="adagrad"),
    ),
    "lr_ftrl": (
        "StandardScaler | LR(FTRL-Proximal alpha 0.05)",
        _logistic(transform="none", optimizer="ftrl"),
    ),
    "log_lr_sgd": (
        "log1p | StandardScaler | LR(SGD 0.01)",
        _logistic(transform="log", optimizer="sgd"),
    ),
    "log_lr_sgd_rus": (
        "log1p | StandardScaler | RUS(0.5) | LR(SGD 0.01)",
        _logistic(transform="log", optimizer="sgd", undersample=0.5),
    ),
    "both_lr_sgd_0.005": (
        "raw+log1p | StandardScaler | LR(SGD 0.005)",
        _logistic(transform="both", optimizer="sgd", lr=0.005),
    ),
    "both_lr_sgd_rus": (
        "raw+log1p | StandardScaler | RUS(0.5) | LR(SGD 0.01)",
        _logistic(transform="both", optimizer="sgd", undersample=0.5),
    ),
    "both_lr_ftrl": (
        "raw+log1p | StandardScaler | LR(FTRL-Proximal alpha 0.05)",
        _logistic(transform="both", optimizer="ftrl"),
    ),
    "both_lr_ftrl_rus": (
        "raw+log1p | StandardScaler | RUS(0.5) | LR(FTRL-Proximal alpha 0.05)",
        _logistic(transform="both", optimizer="ftrl", undersample=0.5),
    ),
    "hat": ("HoeffdingAdaptiveTreeClassifier", _river(_hat)),
    "hat_rus": ("RUS(0.5) | HoeffdingAdaptiveTreeClassifier", _river(lambda s: _rus(_hat(s), s))),
    "arf3": ("ARFClassifier(3 trees)", _river(_arf(3))),
    "arf3_rus": ("RUS(0.5) | ARFClassifier(3 trees)", _river(lambda s: _rus(_arf(3)(s), s))),
    "arf5": ("ARFClassifier(5 trees)", _river(_arf(5))),
    "amf5": ("AMFClassifier(5 trees)", _river(_amf)),
    "gnb": ("GaussianNB", _river(_gnb)),
}


@dataclass(frozen=True)
class Stream:
    """One simulated stream, replayed: rows in event order and the labels to learn."""

    seed: int
    X: np.ndarray
    times_ms: np.ndarray
    y_true: np.ndarray
    label_rows: np.ndarray  # row of the labelled transaction, in label-time order
    label_values: np.ndarray
    label_due: np.ndarray  # index of the first transaction the label is learned before
    label_time_ms: np.ndarray


def make_stream(seed: int, customers: int, days: int) -> Stream:
    sim = generate(SimConfig(seed=seed, n_customers=customers, days=days))
    replay = replay_features(sim.transactions, sim.labels, default_feature_set())
    row_of = {tx_id: i for i, tx_id in enumerate(replay.tx_ids)}
    y_true = np.array([tx_id in sim.fraud for tx_id in replay.tx_ids], dtype=np.int8)
    seen: set[str] = set()
    rows, values, when = [], [], []
    for label in sorted(sim.labels, key=lambda lab: lab["label_time_ms"]):
        if label["tx_id"] in seen or label["tx_id"] not in row_of:
            continue
        seen.add(label["tx_id"])
        rows.append(row_of[label["tx_id"]])
        values.append(int(label["label"]))
        when.append(label["label_time_ms"])
    when_ms = np.array(when, dtype=np.int64)
    due = np.searchsorted(replay.times_ms, when_ms, side="left")
    return Stream(
        seed=seed,
        X=replay.X,
        times_ms=replay.times_ms,
        y_true=y_true,
        label_rows=np.array(rows, dtype=np.int64),
        label_values=np.array(values, dtype=np.int8),
        label_due=due,
        label_time_ms=when_ms,
    )


@dataclass
class RunResult:
    scores: np.ndarray
    learned: int
    learn_s: float
    run_s: float


def prequential(model: Candidate, stream: Stream, names: Sequence[str], batch: int) -> RunResult:
    """Score every transaction in time order; learn each label once it is due (see module)."""
    X, n = stream.X, len(stream.X)
    scores = np.empty(n, dtype=np.float64)
    due, rows, values = stream.label_due, stream.label_rows, stream.label_values
    bounds = np.unique(np.r_[0, due[due < n], n])
    li, learned, learn_s = 0, 0, 0.0
    started = time.perf_counter()
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        while li < len(due) and due[li] <= start:
            x = dict(zip(names, X[rows[li]].tolist(), strict=True))
            t0 = time.perf_counter()
            model.learn_one(x, int(values[li]))
            learn_s += time.perf_counter() - t0
            learned += 1
            li += 1
        for lo in range(start, end, batch):
            hi = min(lo + batch, end)
            scores[lo:hi] = model.score_many(X[lo:hi])
    return RunResult(scores, learned, learn_s, time.perf_counter() - started)


def quality(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = np.clip(scores, 1e-15, 1 - 1e-15)
    log_loss = -float(np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    threshold = threshold_for_fpr(scores, y, REVIEW_FPR)
    return {
        "auc": auc_roc(scores, y),
        "ap": average_precision(scores, y),
        "log_loss": log_loss,
        "recall_at_2pct_fpr": float((scores[y == 1] >= threshold).mean()),
    }


def score_cost(model: Candidate, X: np.ndarray, batch: int) -> float:
    """Median over 3 passes of the scoring time per row, in µs."""
    passes = []
    for _ in range(3):
        t0 = time.perf_counter()
        for lo in range(0, len(X), batch):
            model.score_many(X[lo : lo + batch])
        passes.append((time.perf_counter() - t0) / len(X) * 1e6)
    return statistics.median(passes)


def _eval_mask(stream: Stream, from_day: int) -> np.ndarray:
    return stream.times_ms >= stream.times_ms[0] // DAY_MS * DAY_MS + from_day * DAY_MS


def champion_reference(stream: Stream, from_day: int, cost_rows: int) -> dict[str, Any]:
    names = default_feature_set().feature_names
    day0 = stream.times_ms[0] // DAY_MS * DAY_MS
    as_of = day0 + from_day * DAY_MS
    train = stream.times_ms < as_of - 8 * DAY_MS
    known = np.zeros(len(stream.X), dtype=np.int8)
    fraud_known = stream.label_rows[(stream.label_values == 1) & (stream.label_time_ms <= as_of)]
    known[fraud_known] = 1
    result = train_champion(stream.X[train], known[train], names, seed=stream.seed)
    champion = XGBChampion(result.booster, names)
    mask = _eval_mask(stream, from_day)
    scores = champion.score_many(stream.X[mask])
    out: dict[str, Any] = quality(scores, stream.y_true[mask].astype(np.int64))
    rows = stream.X[mask][:cost_rows]
    out["score_us_b64"] = score_cost(champion, rows, 64)
    out["score_us_b512"] = score_cost(champion, rows, 512)
    return out


def river_batch_invariance(stream: Stream, names: Sequence[str]) -> dict[str, Any]:
    """How many of 512 rows River's own ``predict_proba_many`` (a BLAS product) scores
    differently alone than in their batch, against this module's challenger."""
    import pandas as pd
    from river import linear_model, preprocessing

    river_model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    ours = OnlineLogistic(names, transform="none", optimizer="sgd", undersample=None)
    for row, label in zip(stream.label_rows[:2000], stream.label_values[:2000], strict=True):
        x = dict(zip(names, stream.X[row].tolist(), strict=True))
        river_model.learn_one(x, int(label))
        ours.learn_one(x, int(label))
    X = stream.X[-512:]
    frame = pd.DataFrame(X, columns=list(names))
    batch = river_model.predict_proba_many(frame)[True].to_numpy()
    predict = river_model.predict_proba_many
    alone = np.array([predict(frame.iloc[[i]])[True].iloc[0] for i in range(512)])
    ours_batch = ours.score_many(X)
    ours_alone = np.array([ours.score_many(X[i : i + 1])[0] for i in range(512)])
    return {
        "river_predict_proba_many_rows_differing": int((batch != alone).sum()),
        "challenger_rows_differing": int((ours_batch != ours_alone).sum()),
        "max_abs_difference_river": float(np.abs(batch - alone).max()),
        "rows": 512,
    }


def _emit(**row: Any) -> None:
    row = {
        **row,
        "machine": f"{platform.machine()} {platform.python_version()} {os.cpu_count()} cpus",
        "load1": round(os.getloadavg()[0], 2),
    }
    print(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--eval-from-day", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="scoring micro-batch in the run")
    parser.add_argument("--cost-rows", type=int, default=16_384)
    parser.add_argument("--only", action="append", choices=sorted(CANDIDATES))
    parser.add_argument("--no-reference", action="store_true", help="skip champion and River rows")
    args = parser.parse_args()
    names = default_feature_set().feature_names
    chosen = args.only or list(CANDIDATES)

    started = time.perf_counter()
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    reference: list[dict[str, Any]] = []
    first: Stream | None = None
    for seed in args.seeds:
        stream = make_stream(seed, args.customers, args.days)
        first = first or stream
        mask = _eval_mask(stream, args.eval_from_day)
        y_eval = stream.y_true[mask].astype(np.int64)
        for name in chosen:
            model = CANDIDATES[name][1](names, seed)
            run = prequential(model, stream, names, args.batch)
            row: dict[str, Any] = quality(run.scores[mask], y_eval)
            row["auc_all"] = auc_roc(run.scores, stream.y_true.astype(np.int64))
            row["learned"] = run.learned
            if seed == args.seeds[0]:
                rows = stream.X[mask][: args.cost_rows]
                row["score_us_b64"] = score_cost(model, rows, 64)
                row["score_us_b512"] = score_cost(model, rows, 512)
                row["learn_us"] = run.learn_s / max(run.learned, 1) * 1e6
                row["labelled_share"] = run.learned / len(stream.X)
                row["run_us_per_event"] = run.run_s / len(stream.X) * 1e6
            per_seed[name].append(row)
        if not args.no_reference:
            reference.append(champion_reference(stream, args.eval_from_day, args.cost_rows))

    metrics = ("auc", "ap", "log_loss", "recall_at_2pct_fpr", "auc_all")
    for name in chosen:
        rows = per_seed[name]
        cost = rows[0]
        cost_per_event = cost["score_us_b64"] + cost["learn_us"] * cost["labelled_share"]
        _emit(
            benchmark="challenger_candidate",
            candidate=name,
            pipeline=CANDIDATES[name][0],
            seeds=args.seeds,
            eval_days=[args.eval_from_day, args.days],
            **{m: _mean([r[m] for r in rows]) for m in metrics},
            per_seed={m: [round(r[m], 4) for r in rows] for m in metrics},
            score_us_per_row_b64=round(cost["score_us_b64"], 2),
            score_us_per_row_b512=round(cost["score_us_b512"], 2),
            learn_us=round(cost["learn_us"], 1),
            labelled_share=round(cost["labelled_share"], 4),
            cost_us_per_event=round(cost_per_event, 2),
            run_us_per_event=round(cost["run_us_per_event"], 2),
        )
    if reference:
        _emit(
            benchmark="challenger_reference",
            candidate="champion",
            pipeline="XGBoost (train_champion defaults), trained on days [0, eval-8), batch",
            seeds=args.seeds,
            eval_days=[args.eval_from_day, args.days],
            **{m: _mean([r[m] for r in reference]) for m in metrics if m != "auc_all"},
            score_us_per_row_b64=round(reference[0]["score_us_b64"], 2),
            score_us_per_row_b512=round(reference[0]["score_us_b512"], 2),
        )
        assert first is not None
        _emit(benchmark="challenger_batch_invariance", **river_batch_invariance(first, names))
    print(f"# {len(chosen)} candidates in {time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
