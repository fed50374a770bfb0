"""End-to-end benchmarks on the embedded broker (loopback only, bounded in events and seconds).

* ``e2e_throughput``: a pre-produced simulated stream (4 partitions) drained by
  ``fraudstream run --no-tail --processes P``; events/s between the first and the last
  ``decided_at_ms`` on ``decisions``, plus the wall time including start-up.
* ``e2e_latency``: the sidecar tailing (one process), a rate-controlled producer;
  ``decided_at_ms - ingested_at_ms`` (the record's producer timestamp) per decision, and the
  sidecar's own in-process latency (record handed to the reader -> decision handed to the
  producer, by stage: merge, queue, state, scoring, sink), read from its ``/metrics`` before and
  after each phase.
* ``e2e_challenger_cost``: the throughput drain (one process) with the champion alone and with
  the champion plus the online River challenger in shadow, runs alternated; the fraction of
  throughput the challenger costs (budget 0.15).
* ``kafka_consume_ceiling``: aiokafka consume + ``orjson.loads`` of the same topic, events/s.

Every run gets a fresh broker, so topics, state and recovery directories are always new.
The producer, the broker and the sidecar share the machine's cores: on 2 cores they compete.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from fraudstream.broker import EmbeddedBroker, free_port
from fraudstream.demo import start_sidecar
from fraudstream.kafka import KafkaSettings, Record, consume, create_topics, produce
from fraudstream.metrics import INPROCESS, quantiles_from_buckets
from fraudstream.reader import ReaderConfig
from fraudstream.simulate import SimConfig, Simulation, generate

Emit = Callable[..., None]

TOPICS = {
    "transactions": 4,
    "labels": 1,
    "decisions": 4,
    "transactions.dlq": 1,
    "labels.dlq": 1,
    "alerts": 1,
}


def _key(record: dict) -> str:
    return str(record["account_id"])


def train(sim: Simulation, registry: Path) -> str:
    from fraudstream.replay.training import train_from_streams
    from fraudstream.state.features import get_feature_set

    return train_from_streams(
        sim.transactions, sim.labels, get_feature_set("default"), registry, n_estimators=200
    )


def _sidecar(
    broker: EmbeddedBroker,
    work: Path,
    registry: Path,
    *,
    processes: int,
    tail: bool,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    return start_sidecar(
        broker.bootstrap_servers, work, registry, processes=processes, tail=tail, extra=extra
    )


def scrape_inprocess(port: int) -> dict[str, np.ndarray]:
    """Bucket counts per stage of ``fraudstream_inprocess_latency_seconds`` (cumulative counts
    made per-bucket again), from the sidecar's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    cumulative: dict[str, list[float]] = {s: [] for s in INPROCESS.stages}
    for line in text.splitlines():
        if line.startswith("fraudstream_inprocess_latency_seconds_bucket{"):
            labels, value = line.rsplit(" ", 1)
            stage = labels.split('stage="', 1)[1].split('"', 1)[0]
            cumulative[stage].append(float(value))
    return {s: np.diff(np.asarray(c), prepend=0.0) for s, c in cumulative.items()}


def inprocess_quantiles(
    before: dict[str, np.ndarray], after: dict[str, np.ndarray]
) -> dict[str, list[float]]:
    """p50/p99/p99.9 in ms per stage between two scrapes."""
    out = {}
    for stage in INPROCESS.stages:
        counts = after[stage] - before[stage]
        qs = quantiles_from_buckets(INPROCESS.bounds, counts, (0.5, 0.99, 0.999))
        out[stage] = [round(q * 1000, 1) for q in qs]
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def decisions_by_tx(records: list[Record]) -> dict[str, dict]:
    """Decision per tx_id (the first one: re-emitted decisions after a resume are duplicates)."""
    out: dict[str, dict] = {}
    for rec in records:
        d = orjson.loads(rec.value)
        out.setdefault(d["tx_id"], d)
    return out


# --- kafka_consume_ceiling ----------------------------------------------------------------


async def _aconsume_parse(settings: KafkaSettings, topic: str, n: int, timeout_s: float) -> float:
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(TOPICS[topic])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        while seen < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"read {seen} of {n} records from {topic!r}")
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for msgs in batches.values():
                for msg in msgs:
                    orjson.loads(msg.value)
                seen += len(msgs)
        return seen / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def decision_rates(decided: dict[str, dict]) -> tuple[float, float, float]:
    """(sustained events/s, first-to-last events/s, span s) from decisions' ``decided_at_ms``.

    Sustained: the middle 80% of decisions, so neither the first input batch (decided all at once
    after it is processed) nor the tail biases it.
    """
    times = np.sort(np.array([d["decided_at_ms"] for d in decided.values()], np.float64))
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0, 0.0, 0.0
    span_s = float(times[-1] - times[0]) / 1000
    lo, hi = np.percentile(times, [10, 90])
    mid = int(((times >= lo) & (times <= hi)).sum())
    sustained = mid / (float(hi - lo) / 1000) if hi > lo else 0.0
    return sustained, len(times) / span_s, span_s


def bench_consume_ceiling(emit: Emit, settings: KafkaSettings, n: int) -> None:
    rates = [asyncio.run(_aconsume_parse(settings, "transactions", n, 120)) for _ in range(3)]
    emit(
        benchmark="kafka_consume_ceiling",
        events=n,
        partitions=TOPICS["transactions"],
        value=max(rates),
        runs=[round(r) for r in rates],
        unit="events/s",
        note="aiokafka manual assign + orjson.loads, best of 3",
    )


@dataclass
class _Drain:
    records: list[Record]
    rc: int | None
    wall_s: float
    cpu_s: float
    load_before: float


def _drain(
    sim: Simulation,
    registry: Path,
    work: Path,
    processes: int,
    run_timeout_s: float,
    before_run: Callable[[KafkaSettings], None] | None = None,
) -> _Drain:
    """A fresh broker with ``sim`` produced, ``fraudstream run --no-tail`` over it until it
    exits (killed at the timeout: ``rc`` None), then every decision record."""
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        create_topics(settings, TOPICS)
        produce(settings, "transactions", sim.transactions, key=_key)
        produce(settings, "labels", sim.labels, key=lambda r: r["tx_id"])
        if before_run is not None:
            before_run(settings)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = _sidecar(broker, work, registry, processes=processes, tail=False)
        try:
            rc: int | None = proc.wait(timeout=run_timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc = None
        wall_s = time.perf_counter() - started
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        records = consume(settings, "decisions", timeout_s=60)
    return _Drain(records, rc, wall_s, cpu_s, load_before)


# --- e2e_throughput -----------------------------------------------------------------------


def bench_throughput(
    emit: Emit,
    *,
    customers: int,
    days: int,
    processes: tuple[int, ...],
    run_timeout_s: float,
    ceiling: bool = True,
) -> None:
    sim = generate(SimConfig(seed=11, n_customers=customers, days=days))
    n = len(sim.transactions)
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        registry = Path(tmp) / "registry"
        t0 = time.perf_counter()
        version = train(sim, registry)
        print(f"# trained champion {version} in {time.perf_counter() - t0:.1f}s", flush=True)
        for p in processes:
            work = Path(tmp) / f"p{p}"
            work.mkdir()

            def first_ceiling(settings: KafkaSettings) -> None:
                nonlocal ceiling
                if ceiling:
                    bench_consume_ceiling(emit, settings, n)
                    ceiling = False

            run = _drain(sim, registry, work, p, run_timeout_s, first_ceiling)
            records, rc, wall_s, cpu_s = run.records, run.rc, run.wall_s, run.cpu_s
            load_before = run.load_before
            decided = decisions_by_tx(records)
            sustained, first_to_last, span_s = decision_rates(decided)
            emit(
                benchmark="e2e_throughput",
                processes=p,
                events=n,
                decided=len(decided),
                duplicates=len(records) - len(decided),
                exit_code=rc,
                value=round(sustained),
                unit="events/s",
                first_to_last_events_per_s=round(first_to_last),
                span_s=round(span_s, 3),
                wall_s=round(wall_s, 3),
                wall_events_per_s=round(len(decided) / wall_s),
                cpu_s=round(cpu_s, 2),
                events_per_cpu_s=round(len(decided) / cpu_s) if cpu_s else None,
                load1_before=round(load_before, 2),
                note="value: middle 80% of decisions by decided_at_ms; wall and cpu (user+sys "
                "of the sidecar processes) include start-up",
            )


# --- kafka_latency_ceiling ----------------------------------------------------------------


def _ceiling_consumer(bootstrap: str, n: int, conn: Any, fetch_wait_ms: int) -> None:
    """Child process: consume ``n`` records as the flow's source does; send back latencies."""
    from confluent_kafka import Consumer, TopicPartition

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    consumer = Consumer(
        {
            **settings.confluent_config(),
            "group.id": "ceiling",
            "fetch.wait.max.ms": str(fetch_wait_ms),
        }
    )
    consumer.assign([TopicPartition("transactions", p, 0) for p in range(4)])
    lat = np.empty(n, dtype=np.float64)
    got = 0
    conn.send("ready")
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.001):
            if msg.error() is None and got < n:
                lat[got] = time.time() * 1000 - msg.timestamp()[1]
                got += 1
    consumer.close()
    conn.send(lat[:got])


def bench_latency_ceiling(
    emit: Emit,
    *,
    rates: tuple[float, ...],
    seconds: float,
    fetch_wait_ms: int = ReaderConfig.fetch_wait_ms,
) -> None:
    """The broker path alone: produce at a rate, consume as the flow does, no processing.

    Same producer as ``e2e_latency`` (aiokafka, ``linger_ms=0``, in this process) and, in a
    separate process like the sidecar, the flow source's client and settings (confluent-kafka,
    ``fetch.wait.max.ms`` as the reader sets it, manual assign, ``consume(1000, 0.001)``);
    latency = receive time - the record's producer timestamp.
    """
    import multiprocessing

    total = int(sum(r * seconds for r in rates))
    sim = generate(SimConfig(seed=13, n_customers=2000, days=max(1, total // 3000 + 1)))
    ctx = multiprocessing.get_context("spawn")
    for rate in rates:
        n = int(rate * seconds)
        phase = sim.transactions[:n]
        with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
            with EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
                settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
                create_topics(settings, TOPICS)
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_ceiling_consumer,
                    args=(broker.bootstrap_servers, n, child, fetch_wait_ms),
                )
                proc.start()
                try:
                    if not parent.poll(120):
                        raise RuntimeError("ceiling consumer did not start")
                    parent.recv()
                    produce(settings, "transactions", phase, key=_key, rate_per_s=rate, linger_ms=0)
                    if not parent.poll(330):
                        raise RuntimeError("ceiling consumer did not finish")
                    lat = parent.recv()
                finally:
                    proc.join(timeout=30)
                    if proc.is_alive():
                        proc.kill()
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
        emit(
            benchmark="kafka_latency_ceiling",
            rate=rate,
            events=n,
            received=len(lat),
            value=round(float(p99), 1),
            p50_ms=round(float(p50), 1),
            p99_ms=round(float(p99), 1),
            p999_ms=round(float(p999), 1),
            fetch_wait_ms=fetch_wait_ms,
            unit="ms",
            note="broker path only: producer timestamp -> receive in a separate consumer process",
        )


# --- e2e_latency --------------------------------------------------------------------------


def bench_latency(
    emit: Emit,
    *,
    customers: int,
    rates: tuple[float, ...],
    seconds: float,
    drain_timeout_s: float,
) -> None:
    total = int(sum(r * seconds for r in rates))
    days = 1
    sim = generate(SimConfig(seed=12, n_customers=customers, days=days))
    while len(sim.transactions) < total:
        days = int(days * total / max(1, len(sim.transactions))) + 1
        sim = generate(SimConfig(seed=12, n_customers=customers, days=days))
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        work = Path(tmp)
        registry = work / "registry"
        train(sim, registry)
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            create_topics(settings, TOPICS)
            port = free_port("127.0.0.1")
            proc = _sidecar(
                broker, work, registry, processes=1, tail=True, extra=("--metrics-port", str(port))
            )
            try:
                warm = {**sim.transactions[0], "tx_id": "warmup-0"}
                produce(settings, "transactions", [warm], key=_key)
                consume(settings, "decisions", until=lambda r: len(r) >= 1, timeout_s=180)
                expected = 1
                offset = 0
                for rate in rates:
                    n = int(rate * seconds)
                    phase = sim.transactions[offset : offset + n]
                    offset += n
                    expected += n
                    scraped = scrape_inprocess(port)
                    t0 = time.perf_counter()
                    # linger_ms=0: the record timestamp is taken at send(); linger would only
                    # add producer-side delay to the measured latency.
                    produce(settings, "transactions", phase, key=_key, rate_per_s=rate, linger_ms=0)
                    offered_s = time.perf_counter() - t0

                    def drained(recs: list[Record], want: int = expected) -> bool:
                        if proc.poll() is not None:
                            raise RuntimeError(f"sidecar exited, see {work / 'sidecar.log'}")
                        return len(recs) >= want

                    records = consume(
                        settings, "decisions", until=drained, timeout_s=drain_timeout_s
                    )
                    ids = {tx["tx_id"] for tx in phase}
                    decided = {k: d for k, d in decisions_by_tx(records).items() if k in ids}
                    lat = np.array(
                        [d["decided_at_ms"] - d["ingested_at_ms"] for d in decided.values()],
                        dtype=np.float64,
                    )
                    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
                    stages = inprocess_quantiles(scraped, scrape_inprocess(port))
                    emit(
                        benchmark="e2e_latency",
                        rate=rate,
                        achieved_rate=round(n / offered_s),
                        events=n,
                        decided=len(decided),
                        value=float(p99),
                        p50_ms=float(p50),
                        p99_ms=float(p99),
                        p999_ms=float(p999),
                        max_ms=float(lat.max()),
                        inprocess_ms={k: v for k, v in stages.items()},
                        unit="ms",
                        note="p99 of decided_at_ms - ingested_at_ms (producer timestamp); "
                        "inprocess_ms: p50/p99/p99.9 per stage, reader -> handed to the producer",
                    )
            finally:
                _stop(proc)


# --- e2e_challenger_cost ------------------------------------------------------------------


def bench_challenger_cost(
    emit: Emit, *, customers: int, days: int, train_days: int, repeats: int, run_timeout_s: float
) -> None:
    """The same drain (P = 1) with the champion alone and with the champion plus the online
    River challenger in shadow (scoring every event, learning every matured label), runs
    alternated so that machine drift cancels; both models trained on the first ``train_days``
    days, so that drift monitoring and label learning run on the rest as they would live."""
    from fraudstream.replay.training import train_challenger_from_streams, train_from_streams
    from fraudstream.state.features import get_feature_set

    sim = generate(SimConfig(seed=13, n_customers=customers, days=days))
    n = len(sim.transactions)
    fs = get_feature_set("default")
    start_ms = min(t["event_time_ms"] for t in sim.transactions)
    window = {"train_to_ms": start_ms + train_days * 86_400_000}
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        alone, both = Path(tmp) / "champion", Path(tmp) / "with-challenger"
        train_from_streams(sim.transactions, sim.labels, fs, alone, n_estimators=200, **window)
        shutil.copytree(alone, both)
        train_challenger_from_streams(sim.transactions, sim.labels, fs, both, **window)
        rates: dict[str, list[float]] = {"champion": [], "champion+challenger": []}
        for i in range(repeats):
            for case, registry in (("champion", alone), ("champion+challenger", both)):
                work = Path(tmp) / f"{case}-{i}"
                work.mkdir()
                run = _drain(sim, registry, work, 1, run_timeout_s)
                rc = run.rc
                decided = decisions_by_tx(run.records)
                scored = sum(1 for d in decided.values() if len(d.get("models") or ()) > 1)
                sustained, _, _ = decision_rates(decided)
                rates[case].append(sustained)
                emit(
                    benchmark="e2e_challenger_run",
                    case=case,
                    repeat=i,
                    events=n,
                    decided=len(decided),
                    decisions_with_two_scores=scored,
                    exit_code=rc,
                    value=round(sustained),
                    unit="events/s",
                )
        best = {case: max(r) for case, r in rates.items()}
        emit(
            benchmark="e2e_challenger_cost",
            events=n,
            champion_events_per_s=round(best["champion"]),
            with_challenger_events_per_s=round(best["champion+challenger"]),
            # None: too few events for a sustained rate (every decision in one batch)
            value=round(1 - best["champion+challenger"] / best["champion"], 3)
            if best["champion"]
            else None,
            unit="throughput lost (fraction)",
            note=f"best of {repeats} alternated runs each, P = 1, sustained middle 80%; "
            "budget 0.15",
        )


def run(emit: Emit, *, quick: bool) -> None:
    if quick:
        bench_throughput(emit, customers=500, days=10, processes=(1, 2), run_timeout_s=240)
        bench_latency_ceiling(emit, rates=(1000,), seconds=3)
        bench_latency(emit, customers=500, rates=(1000,), seconds=5, drain_timeout_s=120)
        bench_challenger_cost(
            emit, customers=500, days=10, train_days=4, repeats=1, run_timeout_s=240
        )
    else:
        bench_throughput(emit, customers=2000, days=30, processes=(1, 2), run_timeout_s=420)
        bench_latency_ceiling(emit, rates=(1000, 2000, 5000), seconds=8)
        bench_latency(
            emit, customers=2000, rates=(1000, 2000, 5000, 10000), seconds=12, drain_timeout_s=300
        )
        bench_challenger_cost(
            emit, customers=2000, days=30, train_days=10, repeats=2, run_timeout_s=420
        )
