"""State-layer benchmarks: the live entity state code over RocksDB, no Kafka, no Bytewax.

``EntityPartition`` (the ``default`` feature set) over ``EpochStore(RocksKV(tmpdir))`` with undo
logging, as the flow opens it, with a flow process's cache capacity (16 x 4,096 histories) and its
GC tuning; ops come from ``split_transaction`` of synthetic transactions in
batches of 500, an epoch is committed every 2 s of wall time (the sidecar's default interval) and
idle entities are swept once per day of event time, like the flow does.

* ``state_entities``: N distinct accounts (card, terminal, device and ip derived from the account,
  1 terminal per 10 accounts), random amounts, event times increasing over 30 days. Events/s, the
  process RSS (current and peak) and the bytes on disk per entity (the RocksDB directory after a
  flush, and after a full compaction).
* ``state_hot_entity``: one terminal receiving every event (accounts random among 10k) over its
  30-day window: events/s and the terminal's final record size (bounded by ``max_buckets``).
* ``state_batch_size``: the live flow's whole state stage at the batch sizes a tailing sidecar
  sees (16, 64, 512 transactions per poll): ``Ingest`` (clock, index, split) and 16 state
  partitions, writing their changed histories behind by at most 50 ms as the flow does
  (``FlowConfig.state_write_behind_ms``; ``--write-behind-ms 0``: after every batch), on
  the simulator's stream (2,000 customers, 30 days). Microseconds per event by stage, measured
  after the first third of the stream (histories warm). Light traffic means small batches, and
  small batches take the per-op path (``columnar_min_ops``): this is the cost behind the latency
  at 2,000 ev/s.

Each case runs in a fresh subprocess (``python -m benchmarks.state_bench --case ...``) so RSS is
that case's alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraudstream.runtime import tune_gc
from fraudstream.schema import Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.entities import EntityPartition
from fraudstream.state.features import FeatureSet, get_feature_set
from fraudstream.state.ops import split_transaction
from fraudstream.state.rocksdb import RocksKV

Emit = Callable[..., None]

DAY_MS = 86_400_000
SPAN_MS = 30 * DAY_MS
T0_MS = 1_767_225_600_000  # 2026-01-01 UTC
BATCH = 500
EPOCH_S = 2.0
# One partition here stands for a whole flow process: 16 partitions x 4,096 cached entities.
CACHE = 65_536
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def dir_bytes(path: Path, suffix: str = "") -> int:
    return sum(
        (Path(root) / f).stat().st_size
        for root, _, files in os.walk(path)
        for f in files
        if f.endswith(suffix)
    )


def transactions(
    n_events: int, accounts: int, seed: int, *, hot_terminal: str | None = None
) -> Iterator[list[Transaction]]:
    """Batches of synthetic transactions, event times increasing over 30 days."""
    rng = np.random.default_rng(seed)
    terminals = max(1, accounts // 10)
    step = SPAN_MS / n_events
    for start in range(0, n_events, BATCH):
        n = min(BATCH, n_events - start)
        accts = rng.integers(0, accounts, n)
        amounts = np.round(rng.lognormal(3.5, 1.0, n), 2)
        batch = []
        for j in range(n):
            i = start + j
            a = int(accts[j])
            if hot_terminal is None:
                tx = Transaction(
                    tx_id=f"tx{i}",
                    event_time_ms=T0_MS + int(i * step),
                    account_id=f"a{a}",
                    amount=float(amounts[j]),
                    card_id=f"c{a}",
                    terminal_id=f"t{a % terminals}",
                    device_id=f"d{a}",
                    ip=f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}",
                    country="FR",
                )
            else:
                tx = Transaction(
                    tx_id=f"tx{i}",
                    event_time_ms=T0_MS + int(i * step),
                    account_id=f"a{a}",
                    amount=float(amounts[j]),
                    terminal_id=hot_terminal,
                )
            batch.append(tx)
        yield batch


def _drive(
    fs: FeatureSet, part: EntityPartition, store: EpochStore, batches: Iterator[list[Transaction]]
) -> tuple[int, float]:
    """Process every batch like the flow (split, process, epoch commits); return events, s."""
    events = 0
    busy = 0.0
    last_commit = time.perf_counter()
    for txs in batches:
        t0 = time.perf_counter()
        ops: list[tuple[Any, ...]] = []
        for tx in txs:
            ops.extend(split_transaction(fs, tx, tx.event_time_ms))
        part.process(ops)
        now = time.perf_counter()
        busy += now - t0
        events += len(txs)
        if now - last_commit >= EPOCH_S:
            part.flush()
            store.commit_epoch()
            busy += time.perf_counter() - now
            last_commit = time.perf_counter()
    return events, busy


def _open(fs: FeatureSet, path: Path) -> tuple[RocksKV, EpochStore, EntityPartition]:
    """Store and partition as a flow process opens them (cache size, encoded cache)."""
    kv = RocksKV(path)
    store = EpochStore(kv, resume_epoch=None)
    part = EntityPartition(
        fs, store, sweep_every_ms=DAY_MS, cache_entries=CACHE, keep_decoded=False
    )
    return kv, store, part


def _finish(kv: RocksKV, store: EpochStore, part: EntityPartition) -> dict[str, int]:
    """Write the cache, commit, flush the memtables, measure; then compact fully and measure."""
    part.flush()
    store.commit_epoch()
    entity_keys = sum(1 for _ in store.iter_prefix(b"e\x00"))
    kv._db.flush(True)
    flushed = dir_bytes(kv.path)
    kv._db.compact_range(None, None)
    kv._db.flush(True)
    compacted = dir_bytes(kv.path)
    sst = dir_bytes(kv.path, ".sst")
    return {"entity_keys": entity_keys, "flushed": flushed, "compacted": compacted, "sst": sst}


def case_entities(accounts: int, events: int) -> dict[str, Any]:
    fs = get_feature_set("default")
    rss0 = rss_bytes()
    with tempfile.TemporaryDirectory(prefix="fraudstream-state-bench-") as tmp:
        kv, store, part = _open(fs, Path(tmp) / "db")
        t0 = time.perf_counter()
        n, busy = _drive(fs, part, store, transactions(events, accounts, seed=accounts))
        wall = time.perf_counter() - t0
        rss = rss_bytes()
        disk = _finish(kv, store, part)
        kv.close()
    return {
        "benchmark": "state_entities",
        "accounts": accounts,
        "events": n,
        "value": n / wall,
        "unit": "events/s",
        "busy_events_per_s": round(n / busy),
        "entity_keys": disk["entity_keys"],
        "rss_mib": round(rss / 2**20, 1),
        "rss_growth_mib": round((rss - rss0) / 2**20, 1),
        "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1),
        "disk_flushed_mib": round(disk["flushed"] / 2**20, 1),
        "disk_compacted_mib": round(disk["compacted"] / 2**20, 1),
        "bytes_per_account_flushed": round(disk["flushed"] / accounts),
        "bytes_per_account_compacted": round(disk["compacted"] / accounts),
        "bytes_per_entity_compacted": round(disk["compacted"] / max(1, disk["entity_keys"])),
        "note": "default feature set, RocksDB + undo log, batches of 500, epoch every 2 s; "
        "entities = account, card, device, ip (1 per account) + terminal (1 per 10 accounts)",
    }


def case_hot(events: int) -> dict[str, Any]:
    fs = get_feature_set("default")
    hot = "t-hot"
    key = b"e\x00terminal\x00" + hot.encode()
    with tempfile.TemporaryDirectory(prefix="fraudstream-state-bench-") as tmp:
        kv, store, part = _open(fs, Path(tmp) / "db")
        sizes: list[int] = []
        t0 = time.perf_counter()
        n = 0
        busy = 0.0
        # Drive in slices to sample the hot record's size along the way.
        gen = transactions(events, 10_000, seed=7, hot_terminal=hot)
        while True:
            chunk = [b for _, b in zip(range(20), gen, strict=False)]
            if not chunk:
                break
            k, b = _drive(fs, part, store, iter(chunk))
            n += k
            busy += b
            part.flush()
            raw = store.get_many([key])[0]
            sizes.append(len(raw) if raw else 0)
        wall = time.perf_counter() - t0
        disk = _finish(kv, store, part)
        kv.close()
    return {
        "benchmark": "state_hot_entity",
        "events": n,
        "value": n / wall,
        "unit": "events/s",
        "busy_events_per_s": round(n / busy),
        "record_bytes": sizes[-1],
        "max_record_bytes": max(sizes),
        "max_buckets": fs.max_buckets,
        "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1),
        "disk_compacted_mib": round(disk["compacted"] / 2**20, 1),
        "note": "one terminal gets every event over 30 days (accounts random among 10k, no other "
        "entity fields); record size sampled every 10k events",
    }


def case_batch_size(
    batch: int, events: int, partitions: int = 16, write_behind_ms: int = 50
) -> dict[str, Any]:
    from fraudstream.schema import Limits, parse_transaction
    from fraudstream.simulate import SimConfig, generate
    from fraudstream.state.ingest import Ingest
    from fraudstream.state.ops import by_partition

    fs = get_feature_set("default")
    sim = generate(SimConfig(seed=12, n_customers=2000, days=30))
    limits = Limits()
    txs = [
        parse_transaction(orjson.dumps(tx), now_ms=tx["event_time_ms"], limits=limits)
        for tx in sim.transactions[:events]
    ]
    assert all(isinstance(tx, Transaction) for tx in txs)
    warm = len(txs) // 3
    with tempfile.TemporaryDirectory(prefix="fraudstream-state-bench-") as tmp:
        ingest = Ingest(fs, EpochStore(RocksKV(Path(tmp) / "ingest"), resume_epoch=None))
        stores = [
            EpochStore(RocksKV(Path(tmp) / f"p{p:04d}"), resume_epoch=None)
            for p in range(partitions)
        ]
        parts = [
            EntityPartition(fs, store, sweep_every_ms=DAY_MS, keep_decoded=False)
            for store in stores
        ]
        t_ingest = t_state = 0.0
        measured = 0
        per_batch: list[float] = []
        last_commit = time.perf_counter()
        flush_at = 0.0
        for i in range(0, len(txs), batch):
            chunk = txs[i : i + batch]
            t0 = time.perf_counter()
            ops = ingest.process(chunk).batch  # type: ignore[arg-type]
            t1 = time.perf_counter()
            for p, part_ops in by_partition(ops, partitions):  # as the flow routes them
                parts[p].process(part_ops)
                if t1 >= flush_at:  # each partition's flush, as the flow's write-behind
                    for part in parts:
                        part.flush()
                    flush_at = t1 + write_behind_ms / 1000.0
            t2 = time.perf_counter()
            if i >= warm:
                t_ingest += t1 - t0
                t_state += t2 - t1
                measured += len(chunk)
                per_batch.append(t2 - t0)
            if t2 - last_commit >= EPOCH_S:
                ingest.store.commit_epoch()
                for part in parts:
                    part.flush()
                    part.store.commit_epoch()
                last_commit = time.perf_counter()
        for store in [ingest.store, *stores]:
            store.close()
    return {
        "benchmark": "state_batch_size",
        "batch": batch,
        "partitions": partitions,
        "write_behind_ms": write_behind_ms,
        "events": measured,
        "value": round(measured / (t_ingest + t_state)),
        "unit": "events/s",
        "ingest_us_per_event": round(1e6 * t_ingest / measured, 1),
        "entities_us_per_event": round(1e6 * t_state / measured, 1),
        "batch_ms_p50": round(1e3 * float(np.median(per_batch)), 2),
        "note": "Ingest + 16 state partitions, changes written behind by write_behind_ms (the "
        "flow's state stage), simulator stream of 2,000 customers; last two thirds of the events",
    }


def _subprocess(args: list[str], timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.state_bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"state_bench {args} failed: {proc.stderr[-2000:]}")
    row: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    return row


def events_for(accounts: int) -> int:
    """3 events per account on average, at least 50k; 1 per account past 1M accounts.

    Bounded: 3M events at 1M accounts, 10M at 10M (every account still creates its entities).
    """
    if accounts > 1_000_000:
        return accounts
    return max(50_000, 3 * accounts)


def run(emit: Emit, *, entities: tuple[int, ...], hot_events: int, quick: bool) -> None:
    if quick:
        entities, hot_events = (10_000,), 20_000
    for n in entities:
        emit(**_subprocess(["--case", "entities", "--n", str(n)], timeout_s=3600))
    emit(**_subprocess(["--case", "hot", "--n", str(hot_events)], timeout_s=3600))
    for batch in (16, 64, 512):
        events = 12_000 if quick else 60_000
        emit(**_subprocess(["--case", "batch", "--n", str(events), "--batch", str(batch)], 3600))


def main() -> None:
    tune_gc()  # this process stands for a flow process, which tunes its collector the same way
    parser = argparse.ArgumentParser(description="one state benchmark case (prints a JSON row)")
    parser.add_argument("--case", choices=("entities", "hot", "batch"), required=True)
    parser.add_argument("--n", type=int, required=True, help="accounts, or events")
    parser.add_argument("--batch", type=int, default=64, help="batch: transactions per batch")
    parser.add_argument("--write-behind-ms", type=int, default=50, help="batch: 0 = every batch")
    args = parser.parse_args()
    if args.case == "entities":
        row = case_entities(args.n, events_for(args.n))
    elif args.case == "batch":
        row = case_batch_size(args.batch, args.n, write_behind_ms=args.write_behind_ms)
    else:
        row = case_hot(args.n)
    print(orjson.dumps(row).decode(), flush=True)


if __name__ == "__main__":
    main()
