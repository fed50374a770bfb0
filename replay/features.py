"""Point-in-time feature replay: raw streams -> one feature row per transaction, in input order.

Transactions are applied in their recorded order; a label is applied just before the first
transaction whose event time is at or after the label's ``label_time_ms`` (labels "arrive" when
they were issued). The state code is the live flow's (:mod:`fraudstream.state.engine`), so a
feature can never see an event recorded after its transaction or a label issued after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from fraudstream.runtime import gc_paused
from fraudstream.schema import Label, Limits, Transaction, validate_label, validate_transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import FeatureSet
from fraudstream.state.memory import MemoryKV

__all__ = ["ReplayResult", "replay_features", "to_label", "to_transaction"]


@dataclass(frozen=True)
class ReplayResult:
    """Rows in input order: ``tx_ids[i]`` has features ``X[i]`` and event time ``times_ms[i]``."""

    tx_ids: list[str]
    times_ms: np.ndarray
    X: np.ndarray
    rejected: int


def _lenient_limits() -> Limits:
    # Historical files are not "far from now" by definition: bound only by the schema itself.
    return Limits(max_past_ms=2**62, max_future_ms=2**62)


_LENIENT = _lenient_limits()


def to_transaction(record: dict, limits: Limits | None = None) -> Transaction | None:
    parsed = validate_transaction(record, now_ms=0, limits=limits or _LENIENT)
    return parsed if isinstance(parsed, Transaction) else None


def to_label(record: dict) -> Label | None:
    parsed = validate_label(record)
    return parsed if isinstance(parsed, Label) else None


def replay_features(
    transactions: Iterable[dict | Transaction],
    labels: Iterable[dict | Label],
    fs: FeatureSet,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> ReplayResult:
    """Replay raw streams through the live state code (in memory), in micro-batches."""
    # Everything built here is acyclic; the cyclic collector would only walk the (large) cache
    # of entity histories over and over.
    with gc_paused():
        return _replay(transactions, labels, fs, batch_size=batch_size, progress=progress)


def _replay(
    transactions: Iterable[dict | Transaction],
    labels: Iterable[dict | Label],
    fs: FeatureSet,
    *,
    batch_size: int,
    progress: bool,
) -> ReplayResult:
    engine = InOrderEngine(
        fs,
        EpochStore(MemoryKV(), resume_epoch=None, log_undo=False),
        EpochStore(MemoryKV(), resume_epoch=None, log_undo=False),
    )
    parsed_labels = []
    for raw_label in labels:
        lab = raw_label if isinstance(raw_label, Label) else to_label(raw_label)
        if lab is not None:
            parsed_labels.append(lab)
    parsed_labels.sort(key=lambda lab: lab.label_time_ms)
    li = 0
    tx_ids: list[str] = []
    times: list[int] = []
    chunks: list[np.ndarray] = []  # float64 per micro-batch: 8 bytes a value, not a float object
    rejected = 0
    pending: list[Transaction] = []

    def flush() -> None:
        if pending:
            chunks.append(np.asarray(engine.on_transactions(pending), dtype=np.float64))
        pending.clear()

    for raw in tqdm(transactions, unit="tx", disable=not progress, mininterval=0.5, leave=False):
        tx = raw if isinstance(raw, Transaction) else to_transaction(raw)
        if tx is None:
            rejected += 1
            continue
        if li < len(parsed_labels) and parsed_labels[li].label_time_ms <= tx.event_time_ms:
            flush()  # labels due before this transaction take effect before it
            while li < len(parsed_labels) and parsed_labels[li].label_time_ms <= tx.event_time_ms:
                engine.on_label(parsed_labels[li])
                li += 1
        pending.append(tx)
        tx_ids.append(tx.tx_id)
        times.append(tx.event_time_ms)
        if len(pending) >= batch_size:
            flush()
    flush()
    width = len(fs.feature_names)
    X = np.concatenate(chunks) if chunks else np.empty((0, width), dtype=np.float64)
    return ReplayResult(tx_ids, np.asarray(times, dtype=np.int64), X, rejected)
