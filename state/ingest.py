"""Ingest: records in the input's order -> entity ops and decision events.

This is the one place every record passes through in order (the live flow's ``ingest`` step and
the replay engine both use it), so everything that must happen exactly once per transaction is
decided here:

* the maintenance clock (:mod:`fraudstream.state.clock`) advances;
* the transaction index (:mod:`fraudstream.state.txindex`) says whether a transaction is new, an
  exact re-delivery or a conflict, and turns label changes into fraud ops;
* a new transaction is split into one op per entity (:mod:`fraudstream.state.ops`); the batch's
  ops come out as columns (:class:`~fraudstream.state.ops.OpBatch`), with the new transactions'
  rows (:attr:`IngestResult.txs`) that the ops' ``tx_row`` refers to.

Events, in input order, tell the decision step what to do:

* ``(EV_TX, i, n_ops, clock_ms)``: ``records[i]`` is new; its ``n_ops`` entity parts follow;
* ``(EV_DUPLICATE, i, clock_ms)``: an exact re-delivery of a decided transaction (re-emit its
  decision);
* ``(EV_CONFLICT, i, clock_ms)``: same ``tx_id``, other content (dead-letter it);
* ``(EV_LEARN, tx_id, label, label_time_ms, clock_ms)``: a transaction's label changed (online
  learning).

``clock_ms`` is the maintenance clock at the record.

The clock, the index and the expiry schedule live in one store, written once per batch, so that
a resume from any snapshot continues exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.clock import DEFAULT_STEP_MS, MaintenanceClock
from fraudstream.state.features import DAY_MS, FeatureSet
from fraudstream.state.ops import Op, OpBatch, fraud_ops, split_many
from fraudstream.state.txindex import INDEX_FORMAT, TxIndex

__all__ = [
    "EV_CONFLICT",
    "EV_DUPLICATE",
    "EV_LEARN",
    "EV_TX",
    "INDEX_FORMAT",
    "Ingest",
    "IngestResult",
]

EV_TX = 0
EV_DUPLICATE = 1
EV_CONFLICT = 2
EV_LEARN = 3

_META_CLOCK = b"m\x00clock"
_META_EXPIRED = b"m\x00expired-day"
_I64 = struct.Struct("<q")


@dataclass
class IngestResult:
    """``batch``: the entity ops; ``events`` (module docstring); ``txs``/``tx_index``: the new
    transactions in order and their positions in the records (row ``k`` of the batch's
    transaction columns, ``OpBatch.tx_row``); ``n_ops``: each new transaction's op count."""

    batch: OpBatch = field(default_factory=OpBatch.empty)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    txs: list[Transaction] = field(default_factory=list)
    tx_index: list[int] = field(default_factory=list)
    n_ops: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def ops(self) -> list[Op]:
        """The ops as tuples, in order (tests and tools; the flow passes the columns)."""
        return self.batch.ops()


class Ingest:
    """Applies ordered transactions and labels to the transaction index; see module doc.

    ``ttl_ms`` (default: the feature set's horizon) bounds both de-duplication and label
    matching; ``label_hold_ms`` how long a label may wait for its transaction.
    """

    def __init__(
        self,
        fs: FeatureSet,
        store: EpochStore,
        *,
        ttl_ms: int | None = None,
        label_hold_ms: int = 7 * DAY_MS,
        clock_step_ms: int = DEFAULT_STEP_MS,
    ) -> None:
        self.fs = fs
        self.store = store
        self.index = TxIndex(store, ttl_ms=ttl_ms or fs.horizon_ms(), label_hold_ms=label_hold_ms)
        raw_clock, raw_day = store.get_many([_META_CLOCK, _META_EXPIRED])
        self.clock = MaintenanceClock(
            clock_step_ms, None if raw_clock is None else _I64.unpack(raw_clock)[0]
        )
        self._expired_day = None if raw_day is None else _I64.unpack(raw_day)[0]
        # (plan, field) of the delayed-window plans: what the index keeps per transaction
        self._delayed = [(i, p.field) for i, p in enumerate(fs.plans) if p.delayed_windows]
        # per process() call: the new transactions' clocks, fraud ops, EV_TX event positions
        self._clocks: list[int] = []
        self._frauds: list[tuple[int, Op]] = []
        self._tx_events: list[int] = []

    @property
    def stats(self) -> Any:
        return self.index.stats

    def process(self, records: Sequence[Transaction | Label]) -> IngestResult:
        """Apply ``records`` in order (see the module docstring for the result)."""
        result = IngestResult()
        self._clocks, self._frauds, self._tx_events = [], [], []
        # The clock at every record, in one pass (MaintenanceClock.observe, inlined): a
        # transaction's clock after it observed its time, a label's the clock as it stands.
        ms: list[int] = [0] * len(records)
        m = self.clock.value
        step = self.clock.step_ms
        for i, rec in enumerate(records):
            if type(rec) is Transaction:
                t = rec.event_time_ms
                if m is None:
                    m = t
                elif t > m:
                    cap = m + step
                    m = t if t < cap else cap
                ms[i] = m
            else:
                assert isinstance(rec, Label)
                ms[i] = m if m is not None else rec.label_time_ms
        # Split the batch where the clock enters a new day: expiry happens exactly there.
        start = 0
        day = self._expired_day
        for i, rec in enumerate(records):
            if type(rec) is Transaction:
                d = ms[i] // DAY_MS
                if day is None:
                    day = d
                elif d > day:
                    self._segment(records, ms, start, i, result)
                    self.index.expire(d * DAY_MS)
                    start, day = i, d
                    self._expired_day = day
        self._segment(records, ms, start, len(records), result)
        batch, n_ops = split_many(self.fs, result.txs, self._clocks, result.tx_index, self._frauds)
        result.batch, result.n_ops = batch, n_ops
        events = result.events
        for e, n in zip(self._tx_events, n_ops.tolist(), strict=True):
            ev = events[e]
            events[e] = (EV_TX, ev[1], n, ev[3])
        return result

    def _segment(
        self,
        records: Sequence[Transaction | Label],
        ms: list[int],
        lo: int,
        hi: int,
        result: IngestResult,
    ) -> None:
        if lo >= hi and self._expired_day is not None:
            return
        index, clock = self.index, self.clock
        delayed_plans = self._delayed
        index.begin([r.tx_id for r in records[lo:hi]])
        events = result.events
        txs, tx_index, clocks, frauds = result.txs, result.tx_index, self._clocks, self._frauds
        tx_events = self._tx_events
        on_transaction = index.on_transaction
        for i in range(lo, hi):
            rec = records[i]
            m = ms[i]
            if type(rec) is Transaction:
                clock.value = m
                # delayed_entities(fs, rec), with the plans looked up once
                delayed = [[p, v] for p, f in delayed_plans if (v := getattr(rec, f)) is not None]
                outcome, held = on_transaction(rec, delayed, m)
                if outcome == "new":
                    txs.append(rec)
                    tx_index.append(i)
                    clocks.append(m)
                    tx_events.append(len(events))
                    events.append((EV_TX, i, 0, m))  # the op count is filled in by process()
                    if held:
                        label, label_ms = held
                        t, ents, delta = index.apply_held(rec.tx_id, label, label_ms)
                        if delta:
                            frauds += [(i, o) for o in fraud_ops(ents, t, label_ms, delta, m)]
                        events.append((EV_LEARN, rec.tx_id, label, label_ms, m))
                elif outcome == "duplicate":
                    events.append((EV_DUPLICATE, i, m))
                else:
                    events.append((EV_CONFLICT, i, m))
            else:
                assert isinstance(rec, Label)
                outcome, change = index.on_label(rec.tx_id, rec.label, rec.label_time_ms, m)
                if outcome == "matched":
                    t, ents, delta = change
                    if delta:
                        frauds += [(i, o) for o in fraud_ops(ents, t, rec.label_time_ms, delta, m)]
                    events.append((EV_LEARN, rec.tx_id, rec.label, rec.label_time_ms, m))
        meta: dict[bytes, bytes | None] = {}
        if clock.value is not None:
            meta[_META_CLOCK] = _I64.pack(clock.value)
        if self._expired_day is None and clock.value is not None:
            self._expired_day = clock.value // DAY_MS
        if self._expired_day is not None:
            meta[_META_EXPIRED] = _I64.pack(self._expired_day)
        index.commit(meta)
