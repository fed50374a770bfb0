"""Peer comparison: one 1-hour sliding count + sum of amount per account.

Same simulated stream (``transactions``, 4 partitions, keyed by account) on a fresh embedded broker:

* ``kafka_consume_ceiling``: aiokafka consume + ``orjson.loads`` (from ``benchmarks/e2e.py``).
* ``peer_quix``: Quix Streams (PyPI ``quixstreams``, in its own venv, default
  ``/tmp/fraudstream-quix-venv``, created with ``pip install quixstreams`` when missing; override
  with ``QUIX_VENV``) running ``benchmarks/quix_job.py``: consumer group, RocksDB state and
  changelog topics (its defaults). Events/s from the first to the last processed message.
* ``peer_fraudstream_flow``: the whole fraudstream flow (``benchmarks/flow_job.py``: Kafka source,
  parse and validate, the same single window as a one-plan feature set in RocksDB, a champion
  trained on it, decisions written to Kafka with ``acks=all``), in its own process, on the same
  topic; events/s over the middle 80% of decisions (``decided_at_ms``) and first to last.
* ``peer_fraudstream_state``: fraudstream's entity state code (``EntityPartition`` over
  ``EpochStore(RocksKV)``) for a feature set with that single window: **state path, no Kafka**
  (no consume, no parse, no Bytewax), batches of 500 like the flow.

Each row carries ``ratio_to_ceiling``. If Quix cannot be installed or fails, a ``peer_quix`` row
with ``skipped`` says why and the others still run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.e2e import bench_consume_ceiling, decision_rates, decisions_by_tx
from benchmarks.state_bench import Emit
from fraudstream.broker import EmbeddedBroker
from fraudstream.kafka import KafkaSettings, consume, create_topics, produce
from fraudstream.schema import Transaction
from fraudstream.simulate import SimConfig, Simulation, generate
from fraudstream.state.base import EpochStore
from fraudstream.state.entities import EntityPartition
from fraudstream.state.features import EntityPlan, FeatureSet, Window
from fraudstream.state.ops import split_transaction
from fraudstream.state.rocksdb import RocksKV

HOUR_MS = 3_600_000
QUIX_VENV = Path(os.environ.get("QUIX_VENV", "/tmp/fraudstream-quix-venv"))
QUIX_JOB = Path(__file__).with_name("quix_job.py")


def one_window_feature_set() -> FeatureSet:
    return FeatureSet(
        name="peer-1h",
        version=1,
        plans=(
            EntityPlan(
                entity="account",
                field="account_id",
                prefix="account",
                windows=(Window(length_ms=HOUR_MS, name="1h"),),
                aggs=("count", "sum"),
            ),
        ),
        amount_feature=None,
        weekend_feature=None,
        night_feature=None,
    )


def quix_python() -> tuple[Path | None, str]:
    """The Quix venv's interpreter, installing it if missing; ``(None, why)`` when impossible."""
    py = QUIX_VENV / "bin" / "python"
    check = [str(py), "-c", "import quixstreams; print(quixstreams.__version__)"]
    if py.exists():
        done = subprocess.run(check, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return py, done.stdout.strip()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True, timeout=120)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "quixstreams"],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"cannot install quixstreams into {QUIX_VENV}: {exc}"
    done = subprocess.run(check, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"quixstreams not importable: {done.stderr[-500:]}"
    return py, done.stdout.strip()


def bench_quix(
    emit: Emit, bootstrap: str, n: int, ceiling: float, work: Path, timeout_s: float
) -> None:
    py, version = quix_python()
    if py is None:
        emit(benchmark="peer_quix", skipped=True, reason=version, value=None, unit="events/s")
        return
    cmd = [str(py), str(QUIX_JOB), bootstrap, "transactions", str(n), str(timeout_s), str(work)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s + 60, check=False
        )
        result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, orjson.JSONDecodeError) as exc:
        reason = f"quix job failed: {exc!r}"
        if isinstance(exc, IndexError | orjson.JSONDecodeError):
            reason += f" stderr: {done.stderr[-800:]}"
        emit(benchmark="peer_quix", skipped=True, reason=reason, value=None, unit="events/s")
        return
    rate = result["events"] / result["span_s"] if result["span_s"] > 0 else 0.0
    emit(
        benchmark="peer_quix",
        quixstreams=version,
        events=n,
        processed=result["events"],
        value=rate,
        unit="events/s",
        ratio_to_ceiling=round(rate / ceiling, 4),
        span_s=round(result["span_s"], 3),
        wall_s=round(result["wall_s"], 3),
        wall_events_per_s=round(result["events"] / result["wall_s"]),
        note="1h sliding count+sum per account, first->last processed message; wall incl. start",
    )


def bench_state_path(emit: Emit, txs: list[Transaction], ceiling: float) -> None:
    fs = one_window_feature_set()
    with tempfile.TemporaryDirectory(prefix="fraudstream-peer-") as tmp:
        kv = RocksKV(Path(tmp) / "db")
        store = EpochStore(kv, resume_epoch=None)
        part = EntityPartition(fs, store, sweep_every_ms=86_400_000)
        t0 = time.perf_counter()
        last_commit = t0
        for start in range(0, len(txs), 500):
            ops: list[tuple[Any, ...]] = []
            for tx in txs[start : start + 500]:
                ops.extend(split_transaction(fs, tx, tx.event_time_ms))
            part.process(ops)
            if time.perf_counter() - last_commit >= 2.0:
                part.flush()
                store.commit_epoch()
                last_commit = time.perf_counter()
        dt = time.perf_counter() - t0
        kv.close()
    rate = len(txs) / dt
    emit(
        benchmark="peer_fraudstream_state",
        events=len(txs),
        value=rate,
        unit="events/s",
        ratio_to_ceiling=round(rate / ceiling, 4),
        note="state path, no Kafka: EntityPartition + EpochStore(RocksKV), one 1h count+sum "
        "window per account, batches of 500, epoch every 2 s",
    )


def bench_flow(
    emit: Emit,
    settings: KafkaSettings,
    sim: Simulation,
    ceiling: float,
    work: Path,
    timeout_s: float,
) -> None:
    from fraudstream.replay.training import train_from_streams

    work.mkdir(parents=True)
    registry = work / "registry"
    train_from_streams(sim.transactions, sim.labels, one_window_feature_set(), registry)
    topics = {"labels": 1, "decisions": 4, "transactions.dlq": 1, "labels.dlq": 1, "alerts": 1}
    create_topics(settings, topics)
    spec = {
        "bootstrap": settings.bootstrap_servers,
        "registry": str(registry),
        "work": str(work),
        "feature_set": "peer-1h",
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.flow_job", orjson.dumps(spec).decode()],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        emit(
            benchmark="peer_fraudstream_flow",
            skipped=True,
            reason=f"flow exited {done.returncode}: {done.stderr[-800:]}",
            value=None,
            unit="events/s",
        )
        return
    records = consume(settings, "decisions", timeout_s=60)
    decided = decisions_by_tx(records)
    sustained, first_last, _ = decision_rates(decided)
    emit(
        benchmark="peer_fraudstream_flow",
        events=len(sim.transactions),
        decided=len(decided),
        value=round(sustained),
        unit="events/s",
        ratio_to_ceiling=round(sustained / ceiling, 4),
        first_to_last_events_per_s=round(first_last),
        wall_s=round(wall_s, 3),
        wall_events_per_s=round(len(decided) / wall_s),
        note="whole flow, one 1h count+sum window per account, champion scoring, decisions to "
        "Kafka; value over the middle 80% of decisions; wall incl. start-up",
    )


def run(emit: Emit, *, quick: bool) -> None:
    customers, days = (500, 5) if quick else (2000, 30)
    sim = generate(SimConfig(seed=21, n_customers=customers, days=days))
    n = len(sim.transactions)
    fields = Transaction.__slots__
    txs = [Transaction(**{k: d.get(k) for k in fields}) for d in sim.transactions]
    rows: dict[str, dict[str, Any]] = {}

    def capture(**row: Any) -> None:
        rows[row["benchmark"]] = row
        emit(**row)

    with tempfile.TemporaryDirectory(prefix="fraudstream-peer-") as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            create_topics(settings, {"transactions": 4})
            produce(settings, "transactions", sim.transactions, key=lambda r: r["account_id"])
            bench_consume_ceiling(capture, settings, n)
            ceiling = float(rows["kafka_consume_ceiling"]["value"])
            bench_quix(emit, broker.bootstrap_servers, n, ceiling, work / "quix", 300)
            bench_flow(emit, settings, sim, ceiling, work / "flow", 300)
    bench_state_path(emit, txs, ceiling)
