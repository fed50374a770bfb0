"""Transaction index: label order relative to its transaction does not change the outcome."""

from __future__ import annotations

from fraudstream.state.base import EpochStore
from fraudstream.state.engine import OP_FRAUD, OP_INDEX, OP_LABEL, IndexPartition
from fraudstream.state.memory import MemoryKV

DAY = 86_400_000


def _index() -> IndexPartition:
    return IndexPartition(EpochStore(MemoryKV(), resume_epoch=None), ttl_ms=40 * DAY)


def test_label_before_or_after_its_transaction_gives_the_same_fraud_ops():
    tx = (OP_INDEX, "t1", 5 * DAY, ((2, "T1"),))
    label = (OP_LABEL, "t1", 1, 6 * DAY)
    after = _index().process([tx, label])
    before = _index().process([label, tx])
    assert after == before == [(OP_FRAUD, 2, "T1", 5 * DAY, 6 * DAY, 1)]


def test_repeated_and_reversed_labels_emit_only_changes():
    idx = _index()
    idx.process([(OP_INDEX, "t1", 5 * DAY, ((2, "T1"),))])
    out = idx.process(
        [
            (OP_LABEL, "t1", 1, 6 * DAY),
            (OP_LABEL, "t1", 1, 7 * DAY),
            (OP_LABEL, "t1", 0, 8 * DAY),
        ]
    )
    assert out == [
        (OP_FRAUD, 2, "T1", 5 * DAY, 6 * DAY, 1),
        (OP_FRAUD, 2, "T1", 5 * DAY, 8 * DAY, -1),
    ]
    assert idx.stats.labels_noop == 1


def test_expired_transactions_are_swept_and_their_labels_counted():
    idx = IndexPartition(EpochStore(MemoryKV(), resume_epoch=None), ttl_ms=10 * DAY)
    idx.process([(OP_INDEX, "old", 1 * DAY, ((0, "T"),))])
    idx.process([(OP_INDEX, "new", 30 * DAY, ((0, "T"),))])  # sweep drops "old"
    assert idx.process([(OP_LABEL, "old", 1, 31 * DAY)]) == []
    assert idx.stats.labels_unmatched == 1
    assert idx.stats.expired == 1
