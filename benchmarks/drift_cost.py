"""Cost of the drift monitor per event, 76 features (seeded, no network; prints one JSON line).

A :class:`~fraudstream.models.drift.DriftMonitor` over the default feature set's 76 names, with
a reference from 20,000 synthetic validation rows (normal, mostly-zero, count, heavy-tailed and
partly missing columns; champion scores ``Beta(0.5, 15)``, 1.5 % ``Beta(5, 2)``), fed
``--events`` decided events in batches of ``--batch`` (champion and challenger scores and
actions, the challenger case) and, interleaved, labels for ``--label-share`` of them (2.1 %,
the share of transactions whose label matures in the simulated stream, ``docs/models.md``).

Reported, as the median of ``--repeat`` fresh runs: ``decisions_us_per_event`` (``on_decisions``:
PSI counting, ADWIN per event, period closes), ``label_us`` (``on_label`` per label: River's
rolling AUC and log loss for both models, the error detector), ``value`` = the cost per event of
both (decisions + labels x share), ``to_bytes_ms`` and ``state_bytes`` of the final state.

Run::

    .venv/bin/python -m benchmarks.drift_cost
    .venv/bin/python -m benchmarks.drift_cost --batch 512 --events 400000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import orjson

from fraudstream.models.drift import DriftConfig, DriftMonitor, reference_profile
from fraudstream.state.features import get_feature_set

T0 = 1_700_000_000_000


def _rows(rng: np.random.Generator, n: int, n_features: int) -> np.ndarray:
    X = np.empty((n, n_features))
    for j in range(n_features):
        kind = j % 5
        if kind == 0:
            X[:, j] = rng.normal(0.0, 1.0, n)
        elif kind == 1:
            X[:, j] = np.where(rng.random(n) < 0.9, 0.0, rng.exponential(5.0, n))
        elif kind == 2:
            X[:, j] = rng.poisson(2.0, n)
        elif kind == 3:
            X[:, j] = rng.lognormal(3.0, 1.0, n)
        else:
            X[:, j] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(10.0, 2.0, n))
    return X


def _scores(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.015, rng.beta(5.0, 2.0, n), rng.beta(0.5, 15.0, n))


def run(events: int, batch: int, label_share: float, seed: int) -> dict[str, float]:
    names = get_feature_set("default").feature_names
    rng = np.random.default_rng(seed)
    reference = reference_profile(
        _rows(rng, 20_000, len(names)),
        _scores(rng, 20_000),
        names,
        thresholds={"review": 0.5, "decline": 0.9},
    )
    X = _rows(rng, events, len(names))
    s = _scores(rng, events)
    c = np.clip(s + rng.normal(0.0, 0.05, events), 0.0, 1.0)
    t = T0 + np.arange(events, dtype=np.int64) * 10
    actions = np.where(s >= 0.5, "review", "approve").tolist()
    other = np.where(c >= 0.45, "review", "approve").tolist()
    labelled = np.flatnonzero(rng.random(events) < label_share).tolist()
    ys = (rng.random(len(labelled)) < 0.5).astype(int).tolist()
    monitor = DriftMonitor(DriftConfig(), reference, champion_version="v1", challenger_version="c1")
    decide_s = label_s = 0.0
    li = 0
    for lo in range(0, events, batch):
        hi = min(lo + batch, events)
        start = time.perf_counter()
        monitor.on_decisions(t[lo:hi], s[lo:hi], c[lo:hi], X[lo:hi], actions[lo:hi], other[lo:hi])
        decide_s += time.perf_counter() - start
        start = time.perf_counter()
        while li < len(labelled) and labelled[li] < hi:
            i = labelled[li]
            monitor.on_label(int(t[i]), ys[li], float(s[i]), float(c[i]))
            li += 1
        label_s += time.perf_counter() - start
    start = time.perf_counter()
    state = monitor.to_bytes()
    to_bytes_s = time.perf_counter() - start
    return {
        "decisions_us_per_event": decide_s / events * 1e6,
        "label_us": label_s / max(1, len(labelled)) * 1e6,
        "value": (decide_s + label_s) / events * 1e6,
        "to_bytes_ms": to_bytes_s * 1e3,
        "state_bytes": float(len(state)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--label-share", type=float, default=0.021)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    runs = [run(args.events, args.batch, args.label_share, args.seed) for _ in range(args.repeat)]
    result: dict[str, object] = {
        "benchmark": "drift_cost",
        "features": len(get_feature_set("default").feature_names),
        "events": args.events,
        "batch": args.batch,
        "label_share": args.label_share,
        "unit": "us/event",
    }
    for key in runs[0]:
        result[key] = round(statistics.median(r[key] for r in runs), 3)
    result["machine"] = f"{platform.machine()} {platform.python_version()} {os.cpu_count()} cpus"
    result["load1"] = round(os.getloadavg()[0], 2)
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
