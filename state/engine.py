"""The in-order engine: the replay path and the reference for tests.

It runs exactly the live flow's state logic on records that are already in the input's order
(:mod:`fraudstream.order`): :class:`~fraudstream.state.ingest.Ingest` (clock, de-duplication,
labels) then one in-memory :class:`~fraudstream.state.entities.EntityPartition` (partitioning
never changes results: every entity's ops keep their relative order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.clock import DEFAULT_STEP_MS
from fraudstream.state.entities import EntityPartition
from fraudstream.state.features import DAY_MS, FeatureSet
from fraudstream.state.ingest import EV_CONFLICT, EV_DUPLICATE, EV_TX, Ingest
from fraudstream.state.ops import assemble, base_features

__all__ = ["EngineResult", "InOrderEngine"]


@dataclass
class EngineResult:
    """Positions in the processed records: ``rows`` of new transactions (in order), and the
    transactions that were re-deliveries, conflicts, or failed in the state step."""

    rows: list[tuple[int, list[float]]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


class InOrderEngine:
    """Ingest plus one entity partition, fed records in order (see module docstring)."""

    def __init__(
        self,
        fs: FeatureSet,
        entity_store: EpochStore,
        index_store: EpochStore,
        *,
        cache_entries: int = 65_536,
        keep_decoded: bool = True,
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
        applied = self.entities.process(ing.ops)
        parts: dict[str, dict[int, list[float]]] = {}
        for tx_id, plan, values in applied.values:
            parts.setdefault(tx_id, {})[plan] = values
        broken = {op[3] for op, _ in applied.errors if op[0] == 0}
        out = EngineResult()
        for ev in ing.events:
            kind = ev[0]
            if kind == EV_TX:
                i = ev[1]
                tx = records[i]
                assert isinstance(tx, Transaction)
                if tx.tx_id in broken:
                    out.failed.append(i)
                else:
                    row = assemble(fs, base_features(fs, tx), parts.get(tx.tx_id, {}))
                    out.rows.append((i, row))
            elif kind == EV_DUPLICATE:
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
