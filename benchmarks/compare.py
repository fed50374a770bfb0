"""Before/after runs of one commit, for back-to-back comparisons of two commits.

Check out a commit, run this, check out the other, run it again, and compare the two files; run
nothing else meanwhile (the machine's speed drifts, so only back-to-back runs are comparable)::

    git checkout A && .venv/bin/python -m benchmarks.compare /tmp/A.jsonl
    git checkout B && .venv/bin/python -m benchmarks.compare /tmp/B.jsonl

Rows: ``replay_features`` (5,000 customers x 30 days, ~290k events, JSONL file -> Parquet, per
feature set, as ``make bench`` measures it), ``e2e_throughput`` (2,000 customers x 30 days, 1 and
2 processes) and ``e2e_latency`` (tailing at 1,000 / 2,000 / 4,000 events/s, 10 s each); about
6 minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from benchmarks import e2e
from benchmarks.run import bench_replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON lines, one row per result")
    args = parser.parse_args()
    rows: list[dict] = []

    def emit(**row: object) -> None:
        print(orjson.dumps(row).decode(), flush=True)
        rows.append(row)

    bench_replay(rows, customers=5000, days=30)  # prints and appends its rows
    e2e.bench_throughput(
        emit, customers=2000, days=30, processes=(1, 2), run_timeout_s=420, ceiling=False
    )
    e2e.bench_latency(
        emit, customers=2000, rates=(1000, 2000, 4000), seconds=10, drain_timeout_s=200
    )
    args.out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


if __name__ == "__main__":
    main()
