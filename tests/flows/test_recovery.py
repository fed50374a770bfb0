"""Abort the flow mid-stream, resume it, and compare with an uninterrupted run.

Four input partitions, labels interleaved: the merge order makes every run apply the same
records in the same order, so decisions (re-emitted ones included) and the stored entity state
must equal the uninterrupted run's exactly.
"""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys
from pathlib import Path

import orjson

from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume, create_topics
from fraudstream.models.registry import ModelRegistry
from fraudstream.state.history import decode
from fraudstream.state.rocksdb import RocksKV
from tests.flows.conftest import SMALL_FETCHES, load_history, recent_stream

CRASH_SCRIPT = Path(__file__).with_name("crash_run.py")


def entity_state(state_dir: Path) -> dict:
    out = {}
    for part in sorted((state_dir / "entities").iterdir()):
        kv = RocksKV(part)
        try:
            for key, raw in kv.iter_prefix(b"e\x00"):
                h = decode(raw)
                frauds = sorted(zip(h.f_time, h.f_label_ms, h.f_delta, strict=True))
                out[key] = (list(h.times), list(h.cc), list(h.cs), h.seen, frauds)
        finally:
            kv.close()
    return out


def decisions(settings, topic: str) -> dict[str, tuple]:
    """Decisions by tx_id; every copy of a re-emitted decision must equal the first."""
    out: dict[str, tuple] = {}
    for rec in consume(settings, topic):
        d = orjson.loads(rec.value)
        models = tuple((m["version"], m["score"], m["action"]) for m in d["models"])
        row = (d["features"], d["champion"]["score"], d["action"], models)
        assert out.setdefault(d["tx_id"], row) == row, "a re-emitted decision differs"
    return out


def online_models(state_dir: Path) -> dict:
    """The decision step's online models as stored (their learned state, by version)."""
    kv = RocksKV(state_dir / "decisions")
    try:
        (raw,) = kv.get_many([b"m\x00online-models"])
    finally:
        kv.close()
    assert raw is not None, "no online model state stored"
    return orjson.loads(raw)


def test_crash_and_resume_equals_uninterrupted_run(
    kafka_settings, topics, registry, flow_config, tmp_path
):
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=5, customers=150, days=6, days_ago=30)
    load_history(kafka_settings, t, sim)
    batch_size = 100
    assert len(sim.transactions) > 5 * batch_size

    # Uninterrupted reference run.
    ref_decisions = t.decisions + ".ref"
    create_topics(kafka_settings, {ref_decisions: 1})
    ref_topics = dataclasses.replace(t, decisions=ref_decisions)
    ref = flow_config(ref_topics, tmp_path / "ref-state", batch_size=batch_size)
    run_flow(ref, recovery_dir=tmp_path / "ref-recovery", epoch_interval_s=0.0)

    # Crashing run: dies abruptly after 3 input batches, mid-stream.
    spec = {
        "bootstrap": kafka_settings.bootstrap_servers,
        "registry": str(registry),
        "state_dir": str(tmp_path / "state"),
        "recovery_dir": str(tmp_path / "recovery"),
        "topics": dataclasses.asdict(t),
        "batch_size": batch_size,
        "crash_after_batches": 2,
        "consumer_overrides": SMALL_FETCHES,
    }
    crashed = subprocess.run(
        [sys.executable, str(CRASH_SCRIPT), orjson.dumps(spec).decode()], timeout=300, check=False
    )
    assert crashed.returncode == 17
    assert any((tmp_path / "state" / "entities").iterdir()), "crash happened before any state"
    partial = decisions(kafka_settings, t.decisions)
    assert 0 < len(partial) < len(sim.transactions), "the crash was not mid-stream"

    resumed = dataclasses.replace(ref, state_dir=tmp_path / "state", topics=t)
    run_flow(resumed, recovery_dir=tmp_path / "recovery", epoch_interval_s=0.0)

    want = decisions(kafka_settings, ref_decisions)
    got = decisions(kafka_settings, t.decisions)
    assert len(want) == len(sim.transactions)
    assert got == want
    ref_state = entity_state(tmp_path / "ref-state")
    assert len(ref_state) > 150, "the reference run left no entity state behind"
    assert entity_state(tmp_path / "state") == ref_state
    # the challenger scored every decision and learned every label exactly once
    assert all(len(row[3]) == 2 for row in want.values()), "no challenger in the decisions"
    ref_online = online_models(tmp_path / "ref-state")
    ((version, stored),) = ref_online.items()
    registered = ModelRegistry(registry).load(version).model.to_bytes()
    assert base64.b64decode(stored["data"]) != registered, "the challenger learned nothing"
    assert online_models(tmp_path / "state") == ref_online
