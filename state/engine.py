"""The in-order engine: the replay path and the reference for tests.

It runs exactly the live flow's state logic on records that are already in the input's order
(:mod:`fraudstream.order`): :class:`~fraudstream.state.ingest.Ingest` (clock, de-duplication,
labels) then one in-memory :class:`~fraudstream.state.entities.EntityPartition` (partitioning
never changes results: every entity's ops keep their relative order). The batch's feature matrix
is put together by scatter (:func:`assemble_matrix`): base features computed as columns, each
plan's block of values written to its transactions' rows, imputed values elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.clock import DEFAULT_STEP_MS
from fraudstream.state.entities import Block, EntityPartition
from fraudstream.state.features import DAY_MS, FeatureSet
from fraudstream.state.ingest import EV_CONFLICT, EV_DUPLICATE, Ingest
from fraudstream.state.ops import OP_TX, base_matrix

__all__ = ["EngineResult", "InOrderEngine", "assemble_matrix"]


@dataclass
class EngineResult:
    """Positions in the processed records: ``positions`` of new transactions (in order) with
    their feature rows ``X``, and the transactions that were re-deliveries, conflicts, or failed
    in the state step."""

    positions: list[int] = field(default_factory=list)
    X: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    duplicates: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    @property
    def rows(self) -> list[tuple[int, list[float]]]:
        """``(position, feature row)`` per new transaction, in order."""
        return list(zip(self.positions, self.X.tolist(), strict=True))


def assemble_matrix(
    fs: FeatureSet, t_ms: np.ndarray, amount: np.ndarray, rows: np.ndarray, blocks: list[Block]
) -> np.ndarray:
    """Feature rows of ``len(t_ms)`` transactions: base features, then each plan's values where
    a block has them (``rows[position]`` is the row of the block's op at ``position``), imputed
    values where the transaction lacks the plan's entity (the same row as ``ops.assemble``)."""
    n = len(t_ms)
    X = np.empty((n, len(fs.feature_names)))
    n_base = len(fs.base_names())
    X[:, :n_base] = base_matrix(fs, t_ms, amount)
    for i, (lo, hi) in enumerate(fs.plan_slices):
        X[:, lo:hi] = fs.imputed(i)
    for plan, pos, values in blocks:
        lo, hi = fs.plan_slices[plan]
        X[rows[pos], lo:hi] = values
    return X


class InOrderEngine:
    """Ingest plus one entity partition, fed records in order (see module docstring).

    ``keep_decoded`` selects the per-op reference path (decoded histories, one op at a time);
    the default is the columnar kernel, as in the live flow.
    """

    def __init__(
        self,
        fs: FeatureSet,
        entity_store: EpochStore,
        index_store: EpochStore,
        *,
        cache_entries: int = 65_536,
        keep_decoded: bool = False,
        label_hold_ms: int = 7 * DAY_MS,
        clock_step_ms: int = DEFAULT_STEP_MS,
    ) -> None:
        self.fs = fs
        self.ingest = Ingest(
            fs, index_store, label_hold_ms=label_hold_ms, clock_step_ms=clock_step_ms
        )
        self.entities = EntityPartition(
            fs, entity_store, cache_entries=cache_entries, keep_decoded=keep_decoded
        )

    def process(self, records: Sequence[Transaction | Label]) -> EngineResult:
        """Apply ``records`` in order, as one micro-batch of the live flow would."""
        fs = self.fs
        ing = self.ingest.process(records)
        batch = ing.batch
        applied = self.entities.process(batch)
        txs = ing.txs
        n = len(txs)
        t_ms = np.fromiter((tx.event_time_ms for tx in txs), dtype=np.int64, count=n)
        amount = np.fromiter((tx.amount for tx in txs), dtype=np.float64, count=n)
        X = assemble_matrix(fs, t_ms, amount, batch.tx_row, applied.blocks)
        out = EngineResult(positions=ing.tx_index, X=X)
        if applied.errors:
            broken = {op[3] for op, _ in applied.errors if op[0] == OP_TX}
            ok = np.array([tx.tx_id not in broken for tx in txs], dtype=bool)
            out.failed = [i for i, good in zip(ing.tx_index, ok.tolist(), strict=True) if not good]
            out.positions = [i for i, good in zip(ing.tx_index, ok.tolist(), strict=True) if good]
            out.X = X[ok]
        for ev in ing.events:
            kind = ev[0]
            if kind == EV_DUPLICATE:
                out.duplicates.append(ev[1])
            elif kind == EV_CONFLICT:
                out.conflicts.append(ev[1])
        return out

    def on_transactions(self, txs: Sequence[Transaction]) -> list[list[float] | None]:
        """Feature rows for consecutive transactions (``None``: not applied), in order."""
        result = self.process(txs)
        rows: list[list[float] | None] = [None] * len(txs)
        for i, row in result.rows:
            rows[i] = row
        return rows

    def on_transaction(self, tx: Transaction) -> list[float]:
        row = self.on_transactions([tx])[0]
        if row is None:
            raise ValueError(f"transaction {tx.tx_id!r} was not applied (duplicate or conflict)")
        return row

    def on_label(self, label: Label) -> None:
        self.process([label])

    def flush(self) -> None:
        """Write cached entity state to the store (to inspect or snapshot it)."""
        self.entities.flush()
