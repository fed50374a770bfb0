"""Ops: what the ingest step sends to entity state partitions, and how a row is put together.

A transaction is *split* into one op per entity plan whose field is present (routed to the state
partition of that entity by :func:`partition_of`) and its base (stateless) features; a label that
changes a transaction's fraud status becomes one fraud op per delayed-window entity of that
transaction. :func:`assemble` joins a transaction's base features and its plans' values into one
feature row in the feature set's order.

A micro-batch's ops travel as columns (:class:`OpBatch`: numpy arrays and lists, one row per op,
in op order; cheap to pickle between workers and read by the columnar kernel without a Python
loop). The same op as a tuple (tests, the per-op path)::

* ``(OP_TX, plan, entity_id, tx_id, event_time_ms, amount, novelty_values, clock_ms)``
* ``(OP_FRAUD, plan, entity_id, event_time_ms, label_time_ms, delta, clock_ms)``

``clock_ms`` is the maintenance clock at the op (see :mod:`fraudstream.state.clock`): entity
partitions prune and sweep by it, never by a single event's time. Op order is the input's order
(a transaction's ops in plan order, a held label's fraud ops right after its transaction's);
only the relative order of one entity's ops matters to its state.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np

from fraudstream.schema import Transaction
from fraudstream.state.features import DAY_MS, FeatureSet

__all__ = [
    "OP_FRAUD",
    "OP_TX",
    "OpBatch",
    "assemble",
    "base_features",
    "base_matrix",
    "by_partition",
    "delayed_entities",
    "fraud_ops",
    "partition_of",
    "partitions_of",
    "split_many",
    "split_transaction",
]

OP_TX = 0
OP_FRAUD = 1

Op = tuple[Any, ...]


def partition_of(key: str, partitions: int) -> int:
    """Stable partition of a key (crc32; Python's ``hash`` is salted per process)."""
    return zlib.crc32(key.encode()) % partitions


def partitions_of(keys: Sequence[str], partitions: int) -> np.ndarray:
    """:func:`partition_of` of every key (each distinct key hashed once)."""
    memo: dict[str, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        p = memo.get(key)
        if p is None:
            p = memo[key] = zlib.crc32(key.encode()) % partitions
        out[i] = p
    return out


def by_partition(batch: OpBatch, partitions: int) -> list[tuple[int, OpBatch]]:
    """The batch's ops routed to their state partitions (by entity id), op order kept within
    each; partitions without ops are left out."""
    if not len(batch):
        return []
    part = partitions_of(batch.entity, partitions)
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=partitions)
    return [
        (p, batch.take(idx))
        for p, idx in enumerate(np.split(order, np.cumsum(counts)[:-1].tolist()))
        if len(idx)
    ]


def base_features(fs: FeatureSet, tx: Transaction) -> tuple[float, ...]:
    """Stateless features, in the feature set's order (weekday/hour in UTC)."""
    out = []
    if fs.amount_feature:
        out.append(tx.amount)
    if fs.weekend_feature or fs.night_feature:
        days = tx.event_time_ms // DAY_MS
        if fs.weekend_feature:
            out.append(1.0 if (days + 3) % 7 >= 5 else 0.0)  # 1970-01-01 was a Thursday
        if fs.night_feature:
            hour = (tx.event_time_ms - days * DAY_MS) // 3_600_000
            out.append(1.0 if hour <= fs.night_last_hour else 0.0)
    return tuple(out)


def base_matrix(fs: FeatureSet, t_ms: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """:func:`base_features` of many transactions at once (one row each)."""
    cols = []
    if fs.amount_feature:
        cols.append(amount.astype(np.float64))
    if fs.weekend_feature or fs.night_feature:
        days = t_ms // DAY_MS
        if fs.weekend_feature:
            cols.append(((days + 3) % 7 >= 5).astype(np.float64))
        if fs.night_feature:
            hour = (t_ms - days * DAY_MS) // 3_600_000
            cols.append((hour <= fs.night_last_hour).astype(np.float64))
    if not cols:
        return np.empty((len(t_ms), 0))
    return np.column_stack(cols)


_I8 = np.int8
_EMPTY_I = np.empty(0, dtype=np.int64)


@dataclass
class OpBatch:
    """Entity ops as columns, one row per op, in op order (module docstring).

    Transaction ops leave ``label_ms`` and ``delta`` at 0; fraud ops have ``tx_id`` None,
    ``amount`` 0 and no novelty values. ``novelty[i]`` holds op ``i``'s values of its plan's
    novelty fields (``()`` when the plan has none).
    """

    kind: np.ndarray  # int8: OP_TX or OP_FRAUD
    plan: np.ndarray  # int64
    entity: list[str]
    tx_id: list[str | None]
    t_ms: np.ndarray  # int64
    amount: np.ndarray  # float64
    label_ms: np.ndarray  # int64
    delta: np.ndarray  # int64
    clock_ms: np.ndarray  # int64
    novelty: list[tuple[Any, ...]]
    tx_row: np.ndarray  # int64: a transaction op's row among its batch's new transactions (or -1)

    def __len__(self) -> int:
        return len(self.entity)

    @classmethod
    def empty(cls) -> OpBatch:
        return cls(
            np.empty(0, dtype=_I8), _EMPTY_I, [], [], _EMPTY_I, np.empty(0), _EMPTY_I,
            _EMPTY_I, _EMPTY_I, [], _EMPTY_I,
        )  # fmt: skip

    def take(self, idx: np.ndarray) -> OpBatch:
        """The ops at positions ``idx`` (in that order)."""
        pos = idx.tolist()
        ent, txid, nov = self.entity, self.tx_id, self.novelty
        return OpBatch(
            self.kind[idx],
            self.plan[idx],
            [ent[i] for i in pos],
            [txid[i] for i in pos],
            self.t_ms[idx],
            self.amount[idx],
            self.label_ms[idx],
            self.delta[idx],
            self.clock_ms[idx],
            [nov[i] for i in pos],
            self.tx_row[idx],
        )

    @classmethod
    def concat(cls, batches: Sequence[OpBatch]) -> OpBatch:
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls.empty()
        return OpBatch(
            np.concatenate([b.kind for b in batches]),
            np.concatenate([b.plan for b in batches]),
            [e for b in batches for e in b.entity],
            [t for b in batches for t in b.tx_id],
            np.concatenate([b.t_ms for b in batches]),
            np.concatenate([b.amount for b in batches]),
            np.concatenate([b.label_ms for b in batches]),
            np.concatenate([b.delta for b in batches]),
            np.concatenate([b.clock_ms for b in batches]),
            [v for b in batches for v in b.novelty],
            np.concatenate([b.tx_row for b in batches]),
        )

    @classmethod
    def from_ops(cls, ops: Iterable[Op]) -> OpBatch:
        """Columns of op tuples (see the module docstring)."""
        ops = list(ops)
        n = len(ops)
        kind = np.fromiter((o[0] for o in ops), dtype=_I8, count=n)
        is_tx = [o[0] == OP_TX for o in ops]
        return OpBatch(
            kind,
            np.fromiter((o[1] for o in ops), dtype=np.int64, count=n),
            [o[2] for o in ops],
            [o[3] if tx else None for o, tx in zip(ops, is_tx, strict=True)],
            np.fromiter((o[4] if tx else o[3] for o, tx in zip(ops, is_tx, strict=True)),
                        dtype=np.int64, count=n),
            np.fromiter((o[5] if tx else 0.0 for o, tx in zip(ops, is_tx, strict=True)),
                        dtype=np.float64, count=n),
            np.fromiter((0 if tx else o[4] for o, tx in zip(ops, is_tx, strict=True)),
                        dtype=np.int64, count=n),
            np.fromiter((0 if tx else o[5] for o, tx in zip(ops, is_tx, strict=True)),
                        dtype=np.int64, count=n),
            np.fromiter((o[-1] for o in ops), dtype=np.int64, count=n),
            [o[6] if tx else () for o, tx in zip(ops, is_tx, strict=True)],
            np.full(n, -1, dtype=np.int64),
        )  # fmt: skip

    def op(self, i: int) -> Op:
        """Op ``i`` as a tuple."""
        if self.kind[i] == OP_TX:
            return (
                OP_TX,
                int(self.plan[i]),
                self.entity[i],
                self.tx_id[i],
                int(self.t_ms[i]),
                float(self.amount[i]),
                self.novelty[i],
                int(self.clock_ms[i]),
            )
        return (
            OP_FRAUD,
            int(self.plan[i]),
            self.entity[i],
            int(self.t_ms[i]),
            int(self.label_ms[i]),
            int(self.delta[i]),
            int(self.clock_ms[i]),
        )

    def ops(self) -> list[Op]:
        """Every op as a tuple, in order."""
        return [self.op(i) for i in range(len(self))]


def split_many(
    fs: FeatureSet,
    txs: Sequence[Transaction],
    clock_ms: Sequence[int],
    slots: Sequence[int],
    frauds: Sequence[tuple[int, Op]] = (),
) -> tuple[OpBatch, np.ndarray]:
    """The ops of many transactions and label changes, in op order, and each transaction's
    number of ops.

    ``slots[k]`` orders transaction ``k`` (its ops follow in plan order); ``frauds`` holds
    ``(slot, fraud op)`` pairs, placed after the transaction ops of the same slot and in their
    given order otherwise. Equal to concatenating :func:`split_transaction` and the fraud ops in
    slot order.
    """
    n_tx = len(txs)
    t_all = np.fromiter((tx.event_time_ms for tx in txs), dtype=np.int64, count=n_tx)
    amt_all = np.fromiter((tx.amount for tx in txs), dtype=np.float64, count=n_tx)
    clk_all = np.asarray(clock_ms, dtype=np.int64)
    slot_all = np.asarray(slots, dtype=np.int64)
    n_plans = len(fs.plans)
    idx_parts: list[np.ndarray] = []
    plan_parts: list[np.ndarray] = []
    entity: list[str] = []
    novelty: list[tuple[Any, ...]] = []
    n_ops = np.zeros(n_tx, dtype=np.int64)
    for i, plan in enumerate(fs.plans):
        values = [getattr(tx, plan.field) for tx in txs]
        if plan.field == "account_id":
            idx = np.arange(n_tx, dtype=np.int64)
            present = values
        else:
            keep = [k for k, v in enumerate(values) if v is not None]
            idx = np.asarray(keep, dtype=np.int64)
            present = [values[k] for k in keep]
        entity += present
        n_ops[idx] += 1
        idx_parts.append(idx)
        plan_parts.append(np.full(len(idx), i, dtype=np.int64))
        nf = plan.novelty_fields
        if not nf:
            novelty += [()] * len(idx)
        else:
            get = attrgetter(*nf)
            chosen = [txs[k] for k in idx.tolist()]
            novelty += [get(tx) for tx in chosen] if len(nf) > 1 else [(get(tx),) for tx in chosen]
    tx_idx = np.concatenate(idx_parts) if idx_parts else _EMPTY_I
    plan_arr = np.concatenate(plan_parts) if plan_parts else _EMPTY_I
    n = len(tx_idx)
    ids = [tx.tx_id for tx in txs]
    kind = np.zeros(n, dtype=_I8)
    t_ms, amount, clock = t_all[tx_idx], amt_all[tx_idx], clk_all[tx_idx]
    slot, sub = slot_all[tx_idx], plan_arr
    tx_id: list[str | None] = [ids[k] for k in tx_idx.tolist()]
    label_ms = np.zeros(n, dtype=np.int64)
    delta = np.zeros(n, dtype=np.int64)
    tx_row = tx_idx
    if frauds:
        f = len(frauds)
        kind = np.concatenate([kind, np.full(f, OP_FRAUD, dtype=_I8)])
        plan_arr = np.concatenate([plan_arr, [o[1] for _, o in frauds]]).astype(np.int64)
        entity += [o[2] for _, o in frauds]
        tx_id += [None] * f
        t_ms = np.concatenate([t_ms, [o[3] for _, o in frauds]]).astype(np.int64)
        amount = np.concatenate([amount, np.zeros(f)])
        label_ms = np.concatenate([label_ms, [o[4] for _, o in frauds]]).astype(np.int64)
        delta = np.concatenate([delta, [o[5] for _, o in frauds]]).astype(np.int64)
        clock = np.concatenate([clock, [o[6] for _, o in frauds]]).astype(np.int64)
        novelty += [()] * f
        tx_row = np.concatenate([tx_row, np.full(f, -1, dtype=np.int64)])
        slot = np.concatenate([slot, [s for s, _ in frauds]]).astype(np.int64)
        sub = np.concatenate([sub, n_plans + np.arange(f, dtype=np.int64)])
    batch = OpBatch(
        kind, plan_arr, entity, tx_id, t_ms, amount, label_ms, delta, clock, novelty, tx_row
    )
    order = np.lexsort((sub, slot))
    if len(order) and (np.diff(order) != 1).any():
        batch = batch.take(order)
    return batch, n_ops


def split_transaction(fs: FeatureSet, tx: Transaction, clock_ms: int) -> list[Op]:
    """One entity op per plan whose entity field is present, in plan order."""
    ops: list[Op] = []
    for i, plan in enumerate(fs.plans):
        entity_id = tx.account_id if plan.field == "account_id" else tx.get(plan.field)
        if entity_id is None:
            continue
        novelty = tuple(tx.get(f) for f in plan.novelty_fields)
        ops.append((OP_TX, i, entity_id, tx.tx_id, tx.event_time_ms, tx.amount, novelty, clock_ms))
    return ops


def delayed_entities(fs: FeatureSet, tx: Transaction) -> list[list[Any]]:
    """``[plan, entity_id]`` of every delayed-window plan the transaction touches."""
    out: list[list[Any]] = []
    for i, plan in enumerate(fs.plans):
        if not plan.delayed_windows:
            continue
        entity_id = tx.account_id if plan.field == "account_id" else tx.get(plan.field)
        if entity_id is not None:
            out.append([i, entity_id])
    return out


def fraud_ops(
    entities: Sequence[Sequence[Any]], event_time_ms: int, label_ms: int, delta: int, clock_ms: int
) -> list[Op]:
    """The fraud ops of one label change (``delta`` +1 or -1) for a transaction's entities."""
    return [
        (OP_FRAUD, plan, entity_id, event_time_ms, label_ms, delta, clock_ms)
        for plan, entity_id in entities
    ]


def assemble(
    fs: FeatureSet, base: Sequence[float], parts: Mapping[int, Sequence[float]]
) -> list[float]:
    """Concatenate base features and each plan's values (imputed when the entity was absent)."""
    row = list(base)
    for i in range(len(fs.plans)):
        values = parts.get(i)
        row.extend(values if values is not None else fs.imputed(i))
    return row
