"""Benchmarks (outside the tests): each prints one JSON result line; all go to results/latest.jsonl.

Seeded, network-free workloads, bounded in events and time:

* ``scoring``: XGBoost champion (200 trees, depth 6, default feature set) per-row cost by batch.
* ``replay``: in-order feature replay (the live state code, in memory), events/s per feature set.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import orjson

from fraudstream.models.champion import XGBChampion
from fraudstream.models.train import train_champion
from fraudstream.replay.features import replay_features
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import get_feature_set

RESULTS = Path(__file__).with_name("results") / "latest.jsonl"


def _emit(out: list[dict], **row: object) -> None:
    row = {**row, "machine": f"{platform.machine()} {platform.python_version()}"}
    print(orjson.dumps(row).decode(), flush=True)
    out.append(row)


def bench_scoring(out: list[dict]) -> None:
    rng = np.random.default_rng(0)
    fs = get_feature_set("default")
    X = rng.random((20_000, len(fs.feature_names)))
    y = (rng.random(20_000) < 0.05).astype(np.int32)
    champion = XGBChampion(
        train_champion(X, y, fs.feature_names, n_estimators=200).booster, fs.feature_names
    )
    for batch in (1, 16, 64, 256, 1024):
        rows = X[:batch]
        reps = max(20, 20_000 // batch)
        champion.score_many(rows)
        t0 = time.perf_counter()
        for _ in range(reps):
            champion.score_many(rows)
        per_row = (time.perf_counter() - t0) / (reps * batch)
        _emit(out, benchmark="xgboost_score_per_row", batch=batch, value=per_row * 1e6, unit="us")


def bench_replay(out: list[dict], customers: int, days: int) -> None:
    sim = generate(SimConfig(seed=1, n_customers=customers, days=days))
    for name in ("handbook", "default"):
        fs = get_feature_set(name)
        t0 = time.perf_counter()
        replay_features(sim.transactions, sim.labels, fs)
        dt = time.perf_counter() - t0
        _emit(
            out,
            benchmark="replay_features",
            feature_set=name,
            events=len(sim.transactions),
            value=len(sim.transactions) / dt,
            unit="events/s",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    out: list[dict] = []
    bench_scoring(out)
    bench_replay(out, args.customers, args.days)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in out))


if __name__ == "__main__":
    main()
