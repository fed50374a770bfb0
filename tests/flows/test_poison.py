"""No record stops the flow, none is lost, none counts twice.

One run over a stream laced with re-deliveries, a conflicting record, an 8 MB record, a label
whose time overflows 64 bits, hostile payloads and a valid transaction stamped 12 hours ahead,
compared with a run over the same valid records without any of it.
"""

from __future__ import annotations

import dataclasses
import time

import orjson

from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume, create_topics, produce
from tests.flows.conftest import load_history, recent_stream

HOUR = 3_600_000


def _hostile(now_ms: int) -> list[bytes]:
    good = {"tx_id": "h", "event_time_ms": now_ms - 20 * 86_400_000, "account_id": "a", "amount": 1}
    cases = [
        {**good, "tx_id": "bad\x00nul"},
        {**good, "tx_id": "neg-zero", "amount": -0.0},
        {**good, "tx_id": "subnormal", "amount": 1e-320},
        {**good, "tx_id": "bool", "amount": True},
        {**good, "tx_id": "far-past", "event_time_ms": 5},
    ]
    out = [orjson.dumps(c) for c in cases]
    out += [
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"tx_id": "nan", "event_time_ms": 1, "account_id": "a", "amount": NaN}',
        b'{"tx_id": "huge", "event_time_ms": 1e400, "account_id": "a", "amount": 1}',
        b'{"tx_id": "big", "event_time_ms": 1, "account_id": "a", "amount": 1' + b"0" * 30 + b"}",
    ]
    return out


def _decisions(settings, topic):
    by_id: dict[str, list[bytes]] = {}
    for rec in consume(settings, topic):
        by_id.setdefault(orjson.loads(rec.value)["tx_id"], []).append(rec.value)
    return by_id


def test_poison_pills_duplicates_and_outliers(kafka_settings, topics, flow_config, tmp_path):
    t = topics(tx_partitions=4)
    clean_t = topics(tx_partitions=4)
    sim = recent_stream(seed=17, customers=150, days=6, days_ago=30)
    txs = list(sim.transactions)
    now = int(time.time() * 1000)
    outlier = {**txs[len(txs) // 2], "tx_id": "outlier", "event_time_ms": now + 12 * HOUR}
    clean = [*txs[: len(txs) // 2], outlier, *txs[len(txs) // 2 :]]
    x, y, z = txs[100], txs[200], txs[300]
    dirty: list = []
    for i, tx in enumerate(clean):
        dirty.append(tx)
        if tx is x:
            dirty.append(dict(x))  # re-delivered at once (same batch)
        if i == 900:
            dirty.append(dict(y))  # re-delivered much later
            dirty.append({**z, "amount": z["amount"] + 1})  # same tx_id, other content
            dirty.append(b'{"tx_id": "huge-record", "pad": "' + b"x" * 8_000_000 + b'"}')
            dirty += _hostile(now)
    load_history(kafka_settings, clean_t, sim, transactions=clean)
    load_history(kafka_settings, t, sim, transactions=dirty)
    bad_labels = [
        b'{"tx_id": "tx0000000001", "label": 1, "label_time_ms": 18446744073709551615}',
        b'{"tx_id": "tx0000000001", "label": 1, "label_time_ms": -5}',
        b'{"tx_id": "tx0000000001", "label": 7, "label_time_ms": 5}',
    ]
    produce(kafka_settings, t.labels, bad_labels)

    cfg = flow_config(t, tmp_path / "state", batch_size=200)
    run_flow(cfg, recovery_dir=tmp_path / "recovery", epoch_interval_s=0.2)
    ref_out = t.decisions + ".clean"
    create_topics(kafka_settings, {ref_out: 1})
    ref = flow_config(dataclasses.replace(clean_t, decisions=ref_out), tmp_path / "ref", 200)
    run_flow(ref, recovery_dir=None, epoch_interval_s=0.2)

    got = _decisions(kafka_settings, t.decisions)
    want = _decisions(kafka_settings, ref_out)
    assert set(got) == {tx["tx_id"] for tx in clean} == set(want)
    # re-deliveries get the original decision again, byte for byte; nothing else is repeated
    assert len(got[x["tx_id"]]) == 2 and got[x["tx_id"]][0] == got[x["tx_id"]][1]
    assert len(got[y["tx_id"]]) == 2 and got[y["tx_id"]][0] == got[y["tx_id"]][1]
    assert all(len(v) == 1 for k, v in got.items() if k not in (x["tx_id"], y["tx_id"]))

    def row(raw):
        d = orjson.loads(raw)
        return d["features"], d["champion"]["score"], d["action"]

    # no duplicate counted twice, no conflicting content mixed in: same features as the clean run
    assert {k: row(v[0]) for k, v in got.items()} == {k: row(v[0]) for k, v in want.items()}

    dlq = consume(kafka_settings, t.transactions_dlq)
    reasons = {}
    for rec in dlq:
        h = dict(rec.headers)
        reasons.setdefault(h["dlq.reason"].decode(), []).append((rec, h))
    ((conflict, ch),) = reasons["duplicate_conflict"]
    assert orjson.loads(conflict.value)["tx_id"] == z["tx_id"]
    assert int(ch["dlq.offset"]) >= 0 and ch["dlq.topic"].decode() == t.transactions
    [(huge, hh)] = [(r, h) for r, h in reasons["oversized"] if "dlq.truncated" in h]
    assert int(hh["dlq.truncated"]) > 8_000_000
    assert len(huge.value) == cfg.max_dead_letter_bytes
    assert sum(len(v) for v in reasons.values()) == 2 + len(_hostile(now))
    label_dlq = consume(kafka_settings, t.labels_dlq)
    assert sorted(r.value for r in label_dlq) == sorted(bad_labels)
    assert {dict(r.headers)["dlq.reason"] for r in label_dlq} == {
        b"label_time_out_of_range",
        b"bad_value:label",
    }
