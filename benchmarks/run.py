"""Benchmarks (outside the tests): each prints one JSON result line; all go to results/latest.jsonl.

Seeded workloads, bounded in events and time; network-free except ``e2e`` (loopback only):

* ``scoring``: XGBoost champion (200 trees, depth 6, default feature set) per-row cost by batch.
* ``replay``: in-order feature replay (the live state code, in memory), events/s per feature set.
* ``e2e``: the sidecar on the embedded broker: throughput (1 and 2 processes), latency under a
  rate-controlled producer, the aiokafka consume ceiling and the broker path's latency ceiling
  (see ``benchmarks/e2e.py``).
* ``state``: the entity state code over RocksDB as distinct accounts grow, and a hot entity
  (``benchmarks/state_bench.py``; ``--entities 10000,100000,1000000``, ``--hot-events``).
* ``peer``: Quix Streams (own venv) vs the consume ceiling vs fraudstream's whole flow and its
  state path on one 1-hour count+sum window per account (``benchmarks/peer.py``).

``--only e2e`` (or ``scoring``, ``replay``; repeatable) runs a subset; ``--quick`` shrinks every
workload for a smoke run. A subset run writes only its own results to latest.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson

from fraudstream.models.champion import XGBChampion
from fraudstream.models.train import train_champion
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import get_feature_set

T = TypeVar("T")

RESULTS = Path(__file__).with_name("results") / "latest.jsonl"


def _emit(out: list[dict], **row: object) -> None:
    # The 1-minute load average flags results taken while something else used the cores.
    row = {
        **row,
        "machine": f"{platform.machine()} {platform.python_version()} {os.cpu_count()} cpus",
        "load1": round(os.getloadavg()[0], 2),
    }
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


def _marked(records: Iterator[T], step: int, marks: list[tuple[int, float]]) -> Iterator[T]:
    """``records`` unchanged; the time at every ``step``-th record (and at the end) in ``marks``."""
    i = -1
    for i, rec in enumerate(records):
        if i % step == 0:
            marks.append((i, time.perf_counter()))
        yield rec
    marks.append((i + 1, time.perf_counter()))


def bench_replay(out: list[dict], customers: int, days: int) -> None:
    """`replay features` from a JSONL file to Parquet, as an analyst runs it (parse included),
    with the rate of each state step (the rate must not decay as histories grow): the first and
    the last ~10% of the stream are compared in whole steps."""
    import tempfile

    import pyarrow.parquet as pq

    from fraudstream.replay.api import features_table, read_records
    from fraudstream.replay.features import REPLAY_BATCH, file_order, replay_ordered
    from fraudstream.simulate import write_jsonl

    sim = generate(SimConfig(seed=1, n_customers=customers, days=days))
    with tempfile.TemporaryDirectory() as tmp:
        tx, labels = Path(tmp) / "tx.jsonl", Path(tmp) / "labels.jsonl"
        n = write_jsonl(tx, sim.transactions)
        write_jsonl(labels, sim.labels)
        del sim
        for name in ("handbook", "default"):
            fs = get_feature_set(name)
            # one mark per state step: a replay's time is spent at its batch boundaries, so rates
            # over fixed slices of records that do not line up with them alias (one slice holds
            # one step, the next two)
            marks: list[tuple[int, float]] = []
            records = file_order(read_records(tx), read_records(labels), fs)
            t0 = time.perf_counter()
            result = replay_ordered(_marked(records, REPLAY_BATCH, marks), fs)
            marks[-1] = (marks[-1][0], time.perf_counter())  # the last step included
            pq.write_table(features_table(result, fs), str(Path(tmp) / f"{name}.parquet"))
            dt = time.perf_counter() - t0
            steps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(marks)]
            full = steps[:-1] if len(steps) > 1 else steps  # the last one is partial
            k = max(1, round(len(full) / 10))  # whole steps making up ~10% of the stream

            def rate(part: list[tuple[int, float]]) -> float:
                return sum(r for r, _ in part) / sum(t for _, t in part)

            _emit(
                out,
                benchmark="replay_features",
                feature_set=name,
                events=n,
                source="jsonl file -> parquet",
                value=n / dt,
                unit="events/s",
                batch=REPLAY_BATCH,
                records_per_s_by_batch=[round(r / t) for r, t in steps],
                last_tenth_over_first=round(rate(full[-k:]) / rate(full[:k]), 3),
            )


SUITES = ("scoring", "replay", "e2e", "state", "peer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--customers", type=int, default=None, help="replay (default 17,500: ~1M events)"
    )
    parser.add_argument("--days", type=int, default=None, help="replay (default 30)")
    parser.add_argument("--only", action="append", choices=SUITES, help="run only these")
    parser.add_argument("--quick", action="store_true", help="small workloads (smoke run)")
    parser.add_argument(
        "--entities", default="10000,100000", help="state: distinct accounts, comma-separated"
    )
    parser.add_argument("--hot-events", type=int, default=200_000, help="state: hot-entity events")
    args = parser.parse_args()
    suites = args.only or list(SUITES)
    customers = args.customers or (500 if args.quick else 17_500)
    days = args.days or (10 if args.quick else 30)
    out: list[dict] = []
    started = time.perf_counter()
    if "scoring" in suites:
        bench_scoring(out)
    if "replay" in suites:
        bench_replay(out, customers, days)
    if "e2e" in suites:
        from benchmarks.e2e import run as run_e2e

        run_e2e(lambda **row: _emit(out, **row), quick=args.quick)
    if "state" in suites:
        from benchmarks.state_bench import run as run_state

        entities = tuple(int(n) for n in args.entities.split(","))
        run_state(
            lambda **row: _emit(out, **row),
            entities=entities,
            hot_events=args.hot_events,
            quick=args.quick,
        )
    if "peer" in suites:
        from benchmarks.peer import run as run_peer

        run_peer(lambda **row: _emit(out, **row), quick=args.quick)
    print(f"# {len(out)} results in {time.perf_counter() - started:.0f}s", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in out))


if __name__ == "__main__":
    main()
