"""Ops: what the ingest step sends to entity state partitions, and how a row is put together.

A transaction is *split* into one op per entity plan whose field is present (routed to the state
partition of that entity by :func:`partition_of`) and its base (stateless) features; a label that
changes a transaction's fraud status becomes one fraud op per delayed-window entity of that
transaction. :func:`assemble` joins a transaction's base features and its plans' values into one
feature row in the feature set's order.

Ops are plain tuples (cheap to pickle between workers). ``clock_ms`` is the maintenance clock at
the op (see :mod:`fraudstream.state.clock`): entity partitions prune and sweep by it, never by a
single event's time.

* ``(OP_TX, plan, entity_id, tx_id, event_time_ms, amount, novelty_values, clock_ms)``
* ``(OP_FRAUD, plan, entity_id, event_time_ms, label_time_ms, delta, clock_ms)``
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from fraudstream.schema import Transaction
from fraudstream.state.features import DAY_MS, FeatureSet

__all__ = [
    "OP_FRAUD",
    "OP_TX",
    "assemble",
    "base_features",
    "delayed_entities",
    "fraud_ops",
    "partition_of",
    "split_transaction",
]

OP_TX = 0
OP_FRAUD = 1

Op = tuple[Any, ...]


def partition_of(key: str, partitions: int) -> int:
    """Stable partition of a key (crc32; Python's ``hash`` is salted per process)."""
    return zlib.crc32(key.encode()) % partitions


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
