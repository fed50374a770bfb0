"""Before/after runs of one commit, for back-to-back comparisons of two commits.

Check out a commit, run this, check out the other, run it again, and compare the two files; run
nothing else meanwhile (the machine's speed drifts, so only back-to-back runs are comparable)::

    git checkout A && .venv/bin/python -m benchmarks.compare /tmp/A.jsonl
    git checkout B && .venv/bin/python -m benchmarks.compare /tmp/B.jsonl

Rows: ``replay_features`` (5,000 customers x 30 days, ~290k events, JSONL file -> features, per
feature set), ``e2e_throughput`` (2,000 customers x 30 days, 1 and 2 processes) and
``e2e_latency`` (tailing at 1,000 / 2,000 / 4,000 events/s, 10 s each); about 6 minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks import e2e
from fraudstream.replay.api import write_features
from fraudstream.simulate import SimConfig, generate, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON lines, one row per result")
    args = parser.parse_args()
    rows: list[dict] = []

    def emit(**row: object) -> None:
        print(orjson.dumps(row).decode(), flush=True)
        rows.append(row)

    sim = generate(SimConfig(seed=1, n_customers=5000, days=30))
    with tempfile.TemporaryDirectory() as tmp:
        tx, labels = Path(tmp) / "tx.jsonl", Path(tmp) / "labels.jsonl"
        n = write_jsonl(tx, sim.transactions)
        write_jsonl(labels, sim.labels)
        del sim
        for name in ("handbook", "default"):
            t0 = time.perf_counter()
            write_features(tx, labels, name, Path(tmp) / f"{name}.parquet")
            emit(
                benchmark="replay_features",
                feature_set=name,
                events=n,
                value=n / (time.perf_counter() - t0),
            )
    e2e.bench_throughput(
        emit, customers=2000, days=30, processes=(1, 2), run_timeout_s=420, ceiling=False
    )
    e2e.bench_latency(
        emit, customers=2000, rates=(1000, 2000, 4000), seconds=10, drain_timeout_s=200
    )
    args.out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


if __name__ == "__main__":
    main()
