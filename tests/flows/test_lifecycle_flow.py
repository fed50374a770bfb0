"""The model lifecycle on a running flow: a canary that misbehaves goes back to shadow by itself,
a rollback takes effect between two batches, and no transaction loses or repeats its decision."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume, produce_streams
from fraudstream.models.registry import ModelRegistry
from fraudstream.models.serving import AUTO_HALT_ACTOR, CanaryPolicy
from fraudstream.state.features import default_feature_set
from tests.flows.conftest import load_history, recent_stream
from tests.flows.test_shutdown import _argv


def _copy(registry: Path, tmp: Path) -> ModelRegistry:
    """A private copy of the session's registry (champion in production, challenger shadow)."""
    shutil.copytree(registry, tmp / "registry")
    return ModelRegistry(tmp / "registry")


def _register_copy(reg: ModelRegistry, stage: str, thresholds: dict[str, float]) -> str:
    """The production booster again, with other thresholds, as a new version in ``stage``."""
    loaded = reg.load(stage="production")
    return reg.register(
        loaded.model,
        default_feature_set(),
        thresholds=thresholds,
        metrics=loaded.manifest["metrics"],
        training_window=loaded.manifest.get("training_window"),
        reference=loaded.manifest.get("reference"),
        stage=stage,
        actor="test",
        reason="lifecycle test",
    )


def _decisions(settings: Any, topic: str, n: int | None = None) -> dict[str, dict]:
    """Decisions by tx_id, in input order; every copy of a re-emitted one must be identical."""
    recs = (
        consume(settings, topic)
        if n is None
        else consume(settings, topic, until=lambda r: len({x.key for x in r}) >= n, timeout_s=180)
    )
    out: dict[str, dict] = {}
    for rec in recs:
        d = orjson.loads(rec.value)
        assert out.setdefault(d["tx_id"], d) == d, "a re-emitted decision differs"
    return out


def test_a_canary_that_declines_far_more_than_the_champion_goes_back_to_shadow(
    kafka_settings, topics, registry, flow_config, tmp_path
):
    reg = _copy(registry, tmp_path)
    champion = reg.newest(stage="production")
    canary = _register_copy(reg, "canary", {"review": 1e-6, "decline": 1e-6})  # declines all
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=51, customers=150, days=6, days_ago=30)
    load_history(kafka_settings, t, sim)
    cfg = dataclasses.replace(
        flow_config(t, tmp_path / "state", batch_size=200),
        model_registry=reg.root,
        canary_share=0.3,
        canary_policy=CanaryPolicy(min_decisions=100),
    )
    run_flow(cfg, recovery_dir=None, epoch_interval_s=0.0)

    decided = _decisions(kafka_settings, t.decisions)
    assert sorted(decided) == sorted(tx["tx_id"] for tx in sim.transactions)  # once each
    by = [d["decided_by"]["version"] for d in decided.values()]
    assert by.count(canary) >= 100, "the canary never decided"
    # one switch: once halted, the canary decides nothing more
    last_canary = max(i for i, v in enumerate(by) if v == canary)
    assert set(by[last_canary + 1 :]) == {champion} and len(by) - last_canary > 300
    assert reg.stage_of(canary) == "shadow"
    halt = reg.history(canary)[-1]
    assert (halt.to_stage, halt.actor) == ("shadow", AUTO_HALT_ACTOR) and "decline" in halt.reason
    alerts = [orjson.loads(r.value) for r in consume(kafka_settings, t.alerts)]
    halts = [a for a in alerts if a["kind"] == "canary_halt"]
    assert len(halts) == 1 and halts[0]["models"]["challenger"] == canary
    assert halts[0]["runbook"] == "docs/runbook.md#canary-halt"


def test_a_rollback_mid_stream_switches_once_and_loses_no_decision(
    kafka_settings, topics, registry, tmp_path
):
    reg = _copy(registry, tmp_path)
    old = reg.newest(stage="production")
    new = _register_copy(reg, "production", {"review": 0.3, "decline": 0.8})
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=52, customers=100, days=4, days_ago=10)
    txs = sim.transactions
    half = len(txs) // 2
    argv = _argv(kafka_settings, reg.root, tmp_path, t)
    sidecar = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        produce_streams(kafka_settings, t.transactions, t.labels, txs[:half], [], stamp="now")
        before = _decisions(kafka_settings, t.decisions, half)
        assert {d["decided_by"]["version"] for d in before.values()} == {new}
        rolled = subprocess.run(
            [sys.executable, "-m", "fraudstream", "model", "rollback", "--registry",
             str(reg.root), "--reason", "test: bad thresholds"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert rolled.returncode == 0, rolled.stderr
        assert reg.newest(stage="production") == old
        # probes, one at a time, until the sidecar decides with the rolled-back version
        probes = []
        for i in range(600):
            probe = {**txs[i % half], "tx_id": f"probe-{i}"}
            probes.append(probe)
            produce_streams(kafka_settings, t.transactions, t.labels, [probe], [], stamp="now")
            got = _decisions(kafka_settings, t.decisions, half + len(probes))
            if got[probe["tx_id"]]["decided_by"]["version"] == old:
                break
        else:
            raise AssertionError("the sidecar never picked up the rollback")
        rest = txs[half:]
        produce_streams(kafka_settings, t.transactions, t.labels, rest, [], stamp="now")
        decided = _decisions(kafka_settings, t.decisions, len(txs) + len(probes))
    finally:
        sidecar.terminate()
        _, err = sidecar.communicate(timeout=60)
    assert sidecar.returncode == 0, err[-3000:]
    want = [tx["tx_id"] for tx in txs[:half]] + [p["tx_id"] for p in probes]
    want += [tx["tx_id"] for tx in rest]
    assert sorted(decided) == sorted(want)  # every transaction decided, once
    by = [decided[tx_id]["decided_by"]["version"] for tx_id in want]
    switch = by.index(old)
    assert set(by[:switch]) == {new} and set(by[switch:]) == {old}
    assert all(decided[tx["tx_id"]]["thresholds"]["review"] != 0.3 for tx in rest)
