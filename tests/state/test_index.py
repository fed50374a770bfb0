"""Ingest and the transaction index: exactly-once effect, conflicts, held labels, expiry."""

from __future__ import annotations

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.features import default_feature_set
from fraudstream.state.ingest import EV_CONFLICT, EV_DUPLICATE, EV_LEARN, EV_TX, Ingest
from fraudstream.state.memory import MemoryKV
from fraudstream.state.ops import OP_FRAUD, OP_TX

DAY = 86_400_000
FS = default_feature_set()


def _ingest(store=None, **kw) -> Ingest:
    return Ingest(FS, EpochStore(store or MemoryKV(), resume_epoch=None), **kw)


def _tx(tx_id="t1", t=5 * DAY, amount=10.0, terminal="T1"):
    return Transaction(tx_id, t, "acct", amount, terminal_id=terminal)


def _fraud(ops):
    return [op[:6] for op in ops if op[0] == OP_FRAUD]


def test_label_before_or_after_its_transaction_gives_the_same_fraud_ops():
    tx, label = _tx(), Label("t1", 1, 6 * DAY)
    after = _ingest().process([tx, label])
    before = _ingest().process([label, tx])
    want = [(OP_FRAUD, 2, "T1", 5 * DAY, 6 * DAY, 1)]
    assert _fraud(after.ops) == _fraud(before.ops) == want
    assert [e[0] for e in after.events] == [e[0] for e in before.events] == [EV_TX, EV_LEARN]


def test_repeated_and_reversed_labels_emit_only_changes():
    ing = _ingest()
    ing.process([_tx()])
    out = ing.process([Label("t1", 1, 6 * DAY), Label("t1", 1, 7 * DAY), Label("t1", 0, 8 * DAY)])
    assert _fraud(out.ops) == [
        (OP_FRAUD, 2, "T1", 5 * DAY, 6 * DAY, 1),
        (OP_FRAUD, 2, "T1", 5 * DAY, 8 * DAY, -1),
    ]
    assert [e[:4] for e in out.events if e[0] == EV_LEARN] == [
        (EV_LEARN, "t1", 1, 6 * DAY),
        (EV_LEARN, "t1", 0, 8 * DAY),
    ]
    assert ing.stats.labels_noop == 1
    assert ing.stats.labels_matched == 2


def test_a_first_review_is_learned_without_touching_fraud_counts():
    ing = _ingest()
    ing.process([_tx()])
    out = ing.process([Label("t1", 0, 6 * DAY), Label("t1", 0, 7 * DAY), Label("t1", 1, 8 * DAY)])
    assert [e[:3] for e in out.events] == [(EV_LEARN, "t1", 0), (EV_LEARN, "t1", 1)]
    assert _fraud(out.ops) == [(OP_FRAUD, 2, "T1", 5 * DAY, 8 * DAY, 1)]


def test_an_exact_redelivery_touches_no_state_and_a_conflict_is_refused():
    ing = _ingest()
    first = ing.process([_tx()])
    again = ing.process([_tx(), _tx(amount=99.0)])
    assert [e[0] for e in first.events] == [EV_TX]
    assert [op for op in first.ops if op[0] == OP_TX]
    assert again.ops == []
    assert [e[:2] for e in again.events] == [(EV_DUPLICATE, 0), (EV_CONFLICT, 1)]
    # the same within one batch
    ing2 = _ingest()
    both = ing2.process([_tx(), _tx()])
    assert [e[0] for e in both.events] == [EV_TX, EV_DUPLICATE]
    assert len(both.ops) == len(first.ops)


def test_held_labels_are_applied_once_or_counted_expired():
    ing = _ingest(label_hold_ms=2 * DAY, clock_step_ms=DAY)
    ing.process([Label("early", 1, 1 * DAY)])
    assert ing.stats.labels_held == 1 and ing.stats.labels_matched == 0
    ing.process([_tx("early", t=1 * DAY)])
    assert ing.stats.labels_matched == 1
    ing.process([Label("never", 1, 1 * DAY)])
    # the clock moves a day at a time: the held label expires unmatched, once
    for day in range(2, 6):
        ing.process([_tx(f"later{day}", t=day * DAY)])
    assert ing.stats.labels_expired == 1
    assert ing.stats.labels_matched == 1


def test_expired_transactions_are_forgotten_after_the_ttl():
    ing = _ingest(ttl_ms=3 * DAY, clock_step_ms=DAY)
    ing.process([_tx("old", t=1 * DAY)])
    for day in range(2, 8):
        ing.process([_tx(f"t{day}", t=day * DAY)])
    assert ing.stats.expired >= 1
    out = ing.process([_tx("old", t=1 * DAY)])
    assert [e[0] for e in out.events] == [EV_TX]  # unknown again: a new transaction


def test_one_outlier_timestamp_moves_the_clock_by_one_step_only():
    ing = _ingest()
    ing.process([_tx("a", t=100 * DAY)])
    ing.process([_tx("outlier", t=400 * DAY)])
    assert ing.clock.value == 100 * DAY + ing.clock.step_ms
    ing.process([_tx("b", t=100 * DAY + 5_000)])
    assert ing.clock.value == 100 * DAY + ing.clock.step_ms


def test_a_resumed_ingest_continues_exactly():
    kv = MemoryKV()
    store = EpochStore(kv, resume_epoch=None)
    ing = Ingest(FS, store)
    ing.process([_tx("a"), Label("b", 1, 5 * DAY)])
    epoch = store.commit_epoch()
    ing.process([_tx("c", t=9 * DAY)])  # lost in the crash
    resumed = Ingest(FS, EpochStore(kv, resume_epoch=epoch))
    assert resumed.clock.value == 5 * DAY
    out = resumed.process([_tx("a"), _tx("b"), _tx("c", t=9 * DAY)])
    assert [e[0] for e in out.events] == [EV_DUPLICATE, EV_TX, EV_LEARN, EV_TX]


def test_stored_index_values_hold_no_more_memory_than_their_size():
    # orjson returns bytes allocated in 4 KiB steps; kept in a MemoryKV (every replay), 1M
    # ~100-byte index values held ~4 GB
    import tracemalloc

    kv = MemoryKV()
    ing = _ingest(kv)
    txs = [_tx(f"t{i}", 5 * DAY + i, terminal=f"T{i % 7}") for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ing.process(txs)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    values = [v for k, v in kv.data.items() if k.startswith(b"x\x00")]
    assert len(values) == len(txs)
    size = sum(len(v) for v in values)
    assert held < 4 * size + 400 * len(values), (held, size)
