"""Point-in-time feature replay: raw streams -> one feature row per transaction, in input order.

Records are applied in the live flow's order (:mod:`fraudstream.order`), with the payload's time
standing in for the Kafka timestamp that files do not carry: transactions in file order (times
raised to the running maximum), and a label just before the first transaction whose time is at or
after ``label_time_ms + label_delay_ms`` (labels "arrive" when they were issued). The state code
is the live flow's (:class:`~fraudstream.state.engine.InOrderEngine`): the same de-duplication, the
same windows, so a feature never sees an event recorded after its transaction or a label issued
after it. :func:`replay_ordered` takes records already in order (a Kafka replay through
:class:`~fraudstream.reader.OrderedReader` gives exactly the live order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from fraudstream.order import Input, Merger
from fraudstream.runtime import gc_paused
from fraudstream.schema import Label, Limits, Transaction, validate_label, validate_transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import FeatureSet
from fraudstream.state.memory import MemoryKV

__all__ = ["ReplayResult", "replay_features", "to_label", "to_transaction"]


@dataclass
class ReplayResult:
    """Rows in input order: ``tx_ids[i]`` has features ``X[i]`` and event time ``times_ms[i]``.

    ``rejected`` counts records that failed validation or conflicted with an earlier record of
    the same ``tx_id``; ``duplicates`` exact re-deliveries (no row: the first copy has it).
    """

    tx_ids: list[str]
    times_ms: np.ndarray
    X: np.ndarray
    rejected: int
    duplicates: int = 0


def _lenient_limits() -> Limits:
    # Historical files are not "far from now" by definition: bound only by the schema itself.
    return Limits(max_past_ms=2**62, max_future_ms=2**62)


_LENIENT = _lenient_limits()


def to_transaction(record: dict, limits: Limits | None = None) -> Transaction | None:
    parsed = validate_transaction(record, now_ms=0, limits=limits or _LENIENT)
    return parsed if isinstance(parsed, Transaction) else None


def to_label(record: dict, limits: Limits | None = None) -> Label | None:
    parsed = validate_label(record, now_ms=0, limits=limits or _LENIENT)
    return parsed if isinstance(parsed, Label) else None


def file_order(
    transactions: Iterable[dict | Transaction],
    labels: Iterable[dict | Label],
    fs: FeatureSet,
    counts: dict[str, int] | None = None,
) -> Iterator[Transaction | Label]:
    """Valid records of two files merged in the live flow's order (see module docstring).

    ``counts["rejected"]`` is incremented for every record that fails validation.
    """
    counts = counts if counts is not None else {}
    counts.setdefault("rejected", 0)
    parsed: list[Label] = []
    for raw_label in labels:
        lab = raw_label if isinstance(raw_label, Label) else to_label(raw_label)
        if lab is None:
            counts["rejected"] += 1
        else:
            parsed.append(lab)
    parsed.sort(key=lambda lab: lab.label_time_ms)
    merger = Merger(
        [Input("transactions", 0, rank=1), Input("labels", 0, rank=0, shift_ms=fs.label_delay_ms)]
    )
    for i, lab in enumerate(parsed):
        merger.push(1, i, lab.label_time_ms, lab.label_time_ms, lab)
    merger.finish(1)
    offset = 0
    for raw in transactions:
        tx = raw if isinstance(raw, Transaction) else to_transaction(raw)
        if tx is None:
            counts["rejected"] += 1
            continue
        merger.push(0, offset, tx.event_time_ms, tx.event_time_ms, tx)
        offset += 1
        if offset % 256 == 0:
            for _, item in merger.ready():
                yield item
    merger.finish(0)
    for _, item in merger.ready():
        yield item


def kafka_order(
    settings: Any,
    transactions_topic: str,
    labels_topic: str,
    fs: FeatureSet,
    *,
    limits: Limits | None = None,
) -> Iterator[Transaction | Label]:
    """Valid records of two topics, from their start to their current end, in the live order.

    The same reader and merge as the sidecar's input, so a replay of these records gives the
    live flow's features bit for bit.
    """
    from fraudstream.reader import K_DLQ, OrderedReader, ReaderConfig

    reader = OrderedReader(
        ReaderConfig(
            consumer=settings.confluent_config(),
            transactions_topic=transactions_topic,
            labels_topic=labels_topic,
            tail=False,
            label_delay_ms=fs.label_delay_ms,
            limits=limits or Limits(),
        )
    )
    try:
        while True:
            try:
                batch = reader.next_batch()
            except StopIteration:
                return
            for rec in batch:
                if rec.kind != K_DLQ:
                    yield rec.value  # type: ignore[misc]
    finally:
        reader.close()


#: Records per state step in a replay. Features do not depend on batch boundaries (the live
#: flow's batches vary), so a replay takes large ones: the columnar state step costs a fixed
#: number of numpy calls per batch plus one copy of every touched entity's record, so the copy
#: costs about (history span / batch span) rows per event: a hot entity (a terminal) is touched
#: by every batch and its record holds the whole horizon. 65,536 against 16,384: +32% on a
#: 1M-event replay of the default set (131,072: +40%, for ~150 MB more at the peak); 16,384
#: against 256: +30-40% (benchmarks/README.md).
REPLAY_BATCH = 65_536


def replay_features(
    transactions: Iterable[dict | Transaction],
    labels: Iterable[dict | Label],
    fs: FeatureSet,
    *,
    batch_size: int = REPLAY_BATCH,
    progress: bool = False,
) -> ReplayResult:
    """Replay raw streams through the live state code (in memory), in micro-batches."""
    counts: dict[str, int] = {"rejected": 0}
    records = file_order(transactions, labels, fs, counts)
    result = replay_ordered(records, fs, batch_size=batch_size, progress=progress)
    result.rejected += counts["rejected"]
    return result


def replay_ordered(
    records: Iterable[Transaction | Label],
    fs: FeatureSet,
    *,
    batch_size: int = REPLAY_BATCH,
    progress: bool = False,
) -> ReplayResult:
    """Replay records that are already in the input's order (live-flow micro-batches)."""
    # Everything built here is acyclic; the cyclic collector would only walk the (large) cache
    # of entity histories over and over.
    with gc_paused():
        return _replay(records, fs, batch_size=batch_size, progress=progress)


def _replay(
    records: Iterable[Transaction | Label], fs: FeatureSet, *, batch_size: int, progress: bool
) -> ReplayResult:
    engine = InOrderEngine(
        fs,
        EpochStore(MemoryKV(), resume_epoch=None, log_undo=False),
        EpochStore(MemoryKV(), resume_epoch=None, log_undo=False),
    )
    tx_ids: list[str] = []
    times: list[int] = []
    chunks: list[np.ndarray] = []  # float64 per micro-batch: 8 bytes a value, not a float object
    rejected = duplicates = 0
    pending: list[Transaction | Label] = []

    def flush() -> None:
        nonlocal rejected, duplicates
        if not pending:
            return
        result = engine.process(pending)
        if result.positions:
            chunks.append(result.X)
            for i in result.positions:
                tx = pending[i]
                tx_ids.append(tx.tx_id)
                times.append(tx.event_time_ms)
        rejected += len(result.conflicts) + len(result.failed)
        duplicates += len(result.duplicates)
        pending.clear()

    for rec in tqdm(records, unit="rec", disable=not progress, mininterval=0.5, leave=False):
        pending.append(rec)
        if len(pending) >= batch_size:
            flush()
    flush()
    width = len(fs.feature_names)
    X = np.concatenate(chunks) if chunks else np.empty((0, width), dtype=np.float64)
    return ReplayResult(tx_ids, np.asarray(times, dtype=np.int64), X, rejected, duplicates)
