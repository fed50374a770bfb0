"""The same input records give the same decisions: any batching, any process count, a backlog
drained or a stream tailed live."""

from __future__ import annotations

import dataclasses
import subprocess

import orjson

from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume, create_topics, produce_streams
from tests.flows.conftest import load_history, recent_stream, sidecar_argv


def _rows(settings, topic: str, n: int | None = None) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    records = (
        consume(settings, topic)
        if n is None
        else consume(settings, topic, until=lambda r: len({x.key for x in r}) >= n, timeout_s=180)
    )
    for rec in records:
        d = orjson.loads(rec.value)
        models = tuple((m["version"], m["score"], m["action"]) for m in d["models"])
        row = (d["features"], d["champion"]["score"], d["action"], models)
        assert out.setdefault(d["tx_id"], row) == row
    return out


def _sidecar(settings, registry, tmp, t, *extra: str) -> list[str]:
    return sidecar_argv(settings.bootstrap_servers, registry, tmp, t, *extra)


def test_two_processes_and_other_batches_decide_as_one_process(
    kafka_settings, topics, registry, flow_config, tmp_path
):
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=8, customers=250, days=6, days_ago=30)
    load_history(kafka_settings, t, sim)
    ref_topic = t.decisions + ".ref"
    create_topics(kafka_settings, {ref_topic: 1})
    ref = flow_config(dataclasses.replace(t, decisions=ref_topic), tmp_path / "ref", 1000)
    run_flow(ref, recovery_dir=None, epoch_interval_s=0.5)

    argv = _sidecar(kafka_settings, registry, tmp_path / "two", t, "--processes", "2")
    argv += ["--no-tail", "--batch-size", "37", "--epoch-interval", "0.1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, [x for x in done.stderr.splitlines() if "alert" not in x][-40:]

    want = _rows(kafka_settings, ref_topic)
    assert len(want) == len(sim.transactions)
    assert _rows(kafka_settings, t.decisions) == want


def test_a_stream_tailed_live_is_decided_as_the_same_backlog(
    kafka_settings, topics, registry, flow_config, tmp_path
):
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=9, customers=120, days=3, days_ago=20)
    argv = _sidecar(kafka_settings, registry, tmp_path / "live", t, "--idle-grace-ms", "3000")
    sidecar = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        # live: the producer's clock stamps the records while the sidecar tails the topics
        produce_streams(
            kafka_settings,
            t.transactions,
            t.labels,
            sim.transactions,
            sim.labels,
            stamp="now",
            rate_per_s=800,
        )
        live = _rows(kafka_settings, t.decisions, n=len(sim.transactions))
        assert sidecar.poll() is None, "the sidecar died"
    finally:
        sidecar.terminate()
        sidecar.wait(timeout=30)

    ref_topic = t.decisions + ".backlog"
    create_topics(kafka_settings, {ref_topic: 1})
    backlog = flow_config(dataclasses.replace(t, decisions=ref_topic), tmp_path / "ref", 500)
    run_flow(backlog, recovery_dir=None, epoch_interval_s=0.5)
    assert _rows(kafka_settings, ref_topic) == live
