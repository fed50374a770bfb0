"""``fraudstream demo``: the whole system end to end on the embedded broker.

1. start the embedded Kafka-protocol broker on a free loopback port;
2. simulate a history, replay it into point-in-time features, train and register a champion;
3. start the sidecar (``fraudstream run``, Bytewax with recovery and RocksDB state) as a process;
4. produce a fresh simulated stream at a target rate, with some malformed records mixed in and
   its late labels interleaved as they were issued;
5. read every decision and dead letter back and print a summary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from fraudstream.broker import EmbeddedBroker
from fraudstream.kafka import Record, consume, create_topics, produce, produce_streams
from fraudstream.simulate import SimConfig, generate

__all__ = ["malformed_payloads", "run_demo", "start_sidecar"]

_DAY_MS = 86_400_000


def malformed_payloads(now_ms: int) -> list[bytes]:
    """One example of each kind of bad input the DLQ must catch."""
    good = {"tx_id": "bad-0", "event_time_ms": now_ms, "account_id": "c1", "amount": 1.0}
    bad: list[Any] = [
        b"{not json",
        b"[1, 2, 3]",
        {**good, "amount": -5.0},
        {**good, "amount": "12.50"},
        {k: v for k, v in good.items() if k != "account_id"},
        {**good, "event_time_ms": 10},
        {**good, "event_time_ms": now_ms + 400 * _DAY_MS},
        {**good, "event_time_ms": "yesterday"},
        b'{"tx_id": "x", "amount": NaN}',
        {**good, "schema_version": 7},
        {**good, "card_id": 1234},
        b'{"tx_id": "' + b"x" * 70_000 + b'"}',
    ]
    out = []
    for i, item in enumerate(bad):
        if isinstance(item, dict):
            item = orjson.dumps({**item, "tx_id": f"bad-{i}"} if "tx_id" in item else item)
        out.append(item)
    return out


def start_sidecar(
    bootstrap_servers: str,
    workdir: Path,
    registry: Path,
    *,
    processes: int = 1,
    tail: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``fraudstream run`` as a child process, state and logs under ``workdir``."""
    argv = [
        sys.executable,
        "-m",
        "fraudstream",
        "run",
        "--bootstrap-servers",
        bootstrap_servers,
        "--registry",
        str(registry),
        "--state-dir",
        str(workdir / "state"),
        "--recovery-dir",
        str(workdir / "recovery"),
        "--processes",
        str(processes),
        *extra,
    ]
    if not tail:
        argv.append("--no-tail")
    with open(workdir / "sidecar.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_demo(
    *,
    workdir: Path,
    customers: int = 2000,
    history_days: int = 30,
    stream_days: int = 7,
    rate: float = 5000.0,
    seed: int = 7,
) -> int:
    from fraudstream.models.registry import ModelRegistry
    from fraudstream.replay.training import train_from_streams
    from fraudstream.state.features import default_feature_set

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    fs = default_feature_set()
    now_ms = int(time.time() * 1000)
    start_ms = (now_ms // _DAY_MS - history_days - stream_days - 10) * _DAY_MS

    print(f"[1/5] simulating {history_days} days of history for {customers} customers")
    history = generate(
        SimConfig(seed=seed, n_customers=customers, days=history_days, start_ms=start_ms)
    )
    print(f"      {len(history.transactions)} transactions, {len(history.fraud)} frauds")
    print("[2/5] replaying point-in-time features and training the XGBoost champion")
    t0 = time.perf_counter()
    registry = workdir / "registry"
    # the first model of an empty registry goes straight to production (docs/models.md)
    version = train_from_streams(
        history.transactions, history.labels, fs, registry, seed=seed, actor="demo"
    )
    manifest = ModelRegistry(registry).manifest(version)
    m = manifest["metrics"]
    print(
        f"      {version} ({ModelRegistry(registry).stage_of(version)}) in "
        f"{time.perf_counter() - t0:.1f}s: validation AUC {m['auc_roc']:.3f}, "
        f"AP {m['average_precision']:.3f}, thresholds {manifest['thresholds']}"
    )

    stream = generate(
        SimConfig(
            seed=seed + 1,
            n_customers=customers,
            days=stream_days,
            start_ms=start_ms + history_days * _DAY_MS,
        )
    )
    bad = malformed_payloads(now_ms)
    records: list[Any] = list(stream.transactions)
    step = max(1, len(records) // (len(bad) + 1))
    for i, payload in enumerate(bad):
        records.insert((i + 1) * step + i, payload)

    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        from fraudstream.kafka import KafkaSettings

        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        create_topics(
            settings,
            {
                "transactions": 4,
                "labels": 1,
                "decisions": 4,
                "transactions.dlq": 1,
                "labels.dlq": 1,
                "alerts": 1,
            },
        )
        print(f"[3/5] starting the sidecar on {broker.bootstrap_servers} (Bytewax + RocksDB)")
        sidecar = start_sidecar(
            broker.bootstrap_servers, workdir, registry, extra=("--epoch-interval", "1")
        )
        try:
            warm = {**stream.transactions[0], "tx_id": "warmup-0", "account_id": "warmup"}
            produce(settings, "transactions", [warm], key=lambda r: r["account_id"])
            consume(settings, "decisions", until=lambda r: len(r) >= 1, timeout_s=120)
            n_good = len(stream.transactions) + 1
            print(
                f"[4/5] producing {len(records)} records at {rate:.0f}/s ({len(bad)} malformed) "
                f"with their {len(stream.labels)} labels interleaved as they were issued"
            )
            with tqdm(total=len(records) + len(stream.labels), unit="ev", leave=False) as bar:
                produce_streams(
                    settings,
                    "transactions",
                    "labels",
                    records,
                    stream.labels,
                    stamp="now",
                    rate_per_s=rate,
                    progress=lambda sent: bar.update(sent - bar.n),
                )
            print("[5/5] reading decisions back")
            with tqdm(total=n_good, unit="dec", leave=False) as bar:

                def enough(recs: list[Record]) -> bool:
                    bar.update(len(recs) - bar.n)
                    if sidecar.poll() is not None:
                        raise RuntimeError(f"sidecar exited: see {workdir / 'sidecar.log'}")
                    return len(recs) >= n_good

                decisions = consume(settings, "decisions", until=enough, timeout_s=600)
            dlq = consume(settings, "transactions.dlq", until=lambda r: len(r) >= len(bad))
        finally:
            sidecar.terminate()
            try:
                sidecar.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sidecar.kill()

    decisions = [r for r in decisions if r.key != b"warmup-0"]
    _summary(decisions, dlq, stream.fraud, n_good - 1)
    return 0


def _summary(decisions: list[Record], dlq: list[Record], fraud: dict[str, str], n: int) -> None:
    by_action: dict[str, int] = {}
    caught = missed = false_alerts = 0
    latency = []
    times = []
    seen = set()
    for rec in decisions:
        d = rec.json()
        if d["tx_id"] in seen:
            continue
        seen.add(d["tx_id"])
        by_action[d["action"]] = by_action.get(d["action"], 0) + 1
        flagged = d["action"] != "approve"
        if d["tx_id"] in fraud:
            caught += flagged
            missed += not flagged
        else:
            false_alerts += flagged
        latency.append(d["decided_at_ms"] - rec.timestamp_ms if rec.timestamp_ms else 0)
        times.append(d["decided_at_ms"])
        if d.get("ingested_at_ms"):
            latency[-1] = d["decided_at_ms"] - d["ingested_at_ms"]
    span_s = max(1e-3, (max(times) - min(times)) / 1000) if times else 1.0
    reasons: dict[str, int] = {}
    for rec in dlq:
        headers = dict(rec.headers)
        reason = headers.get("dlq.reason", b"?").decode()
        reasons[reason] = reasons.get(reason, 0) + 1
    print("\n== fraudstream demo summary ==")
    print(f"events (valid)       {n}")
    print(f"decisions            {len(seen)}  {by_action}")
    print(f"dead letters         {len(dlq)}  {reasons if reasons else ''}")
    print(f"fraud caught/missed  {caught}/{missed}  (false alerts on legit: {false_alerts})")
    print(f"throughput           {len(seen) / span_s:,.0f} decisions/s over {span_s:.1f}s")
    print(
        f"event->decision      p50 {_percentile(latency, 50):.0f} ms, "
        f"p99 {_percentile(latency, 99):.0f} ms"
    )
