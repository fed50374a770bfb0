"""The dataflow's input: both topics as one ordered stream (one Bytewax source partition).

All partitions of the transactions and labels topics are read by one
:class:`~fraudstream.reader.OrderedReader`, which releases records in the input's deterministic
order (:mod:`fraudstream.order`). A single source partition is what makes that order global: every
downstream step receives its items from this one upstream worker, in order. Its resume state is the
reader's snapshot (per partition: first unreleased offset and order floor). Each batch goes out
with the wall-clock time it was polled (the start of the in-process latency,
:data:`fraudstream.metrics.INPROCESS`).
"""

from __future__ import annotations

import time
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from fraudstream.reader import OrderedReader, ReaderConfig, Received
from fraudstream.runtime import STOP

__all__ = ["OrderedSource"]


Polled = tuple[float, list[Received]]  # (time.time() of the poll, records in order)


class _Partition(StatefulSourcePartition[Polled, dict[str, Any]]):
    def __init__(self, reader: OrderedReader) -> None:
        self.reader = reader

    def next_batch(self) -> list[Polled]:
        if STOP.is_set():
            raise StopIteration  # unreleased records stay unread: the snapshot resumes at them
        batch = self.reader.next_batch()  # StopIteration ends a bounded run
        return [(time.time(), batch)] if batch else []

    def snapshot(self) -> dict[str, Any]:
        return self.reader.snapshot()

    def close(self) -> None:
        self.reader.close()


class OrderedSource(FixedPartitionedSource[Polled, dict[str, Any]]):
    """Emits, per poll, its time and its :class:`~fraudstream.reader.Received` in input order."""

    PART = "ordered-input"

    def __init__(self, cfg: ReaderConfig) -> None:
        self.cfg = cfg

    def list_parts(self) -> list[str]:
        return [self.PART]

    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, Any] | None
    ) -> _Partition:
        return _Partition(OrderedReader(self.cfg, resume_state))
