"""Deciding: join a transaction's parts, score it, pick an action, write the decision record.

:class:`Decider` is the decision step's logic, free of any stream engine. It receives, from the
ingest step and in the input's order, one item per new transaction, re-delivery and label change,
and from the entity partitions (in any order) each transaction's per-entity feature values. It
keeps the ingest items in a queue and works off its completed head: every transaction whose parts
have all arrived, up to the first one still waiting. So decisions come out in the input's order,
and anything that depends on that order (online models, in a later stage) sees the same sequence
in every run.

All transactions of a completed head are scored with one batch call per model (XGBoost's per-call
overhead dominates small batches). Their records are written to the decision store, so that an
exact re-delivery re-emits the original record byte for byte.

Items (tuples, cheap to pickle):

* ``("tx", tx_id, meta, base, n_parts, clock_ms)``: ``meta`` holds ``event_time_ms``,
  ``source`` (topic, partition, offset), ``ingest_ms`` and ``key``/``raw`` for dead letters;
* ``("dup", tx_id, meta, clock_ms)``: re-emit the decision of ``tx_id``;
* ``("learn", tx_id, label, label_time_ms, clock_ms)``: a label change (online learning);
* ``("parts", [(tx_id, plan, values), ...], [(tx_id, reason), ...])``: from entity partitions.

Output: ``("decision", tx_id, record_bytes, action, ingest_ms)`` (``action`` is ``None`` for a
re-emitted record) and ``("dead", meta, reason, detail)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from fraudstream.schema import DECISION_SCHEMA_VERSION
from fraudstream.state.decisions import DecisionStore
from fraudstream.state.features import FeatureSet
from fraudstream.state.ops import assemble

__all__ = ["Decider", "action_policy"]


def action_policy(scores: np.ndarray, thresholds: dict[str, float]) -> list[str]:
    """``decline`` at or above the decline threshold, ``review`` at or above review, else
    ``approve``. NaN scores are refused (a model that produces them has failed)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    out = np.where(
        scores >= thresholds["decline"],
        "decline",
        np.where(scores >= thresholds["review"], "review", "approve"),
    )
    return out.tolist()


class _Tx:
    __slots__ = ("base", "clock_ms", "failed", "meta", "need", "parts", "tx_id")

    def __init__(self, tx_id: str, meta: dict[str, Any], base: Any, need: int, clock: int):
        self.tx_id = tx_id
        self.meta = meta
        self.base = base
        self.need = need
        self.clock_ms = clock
        self.parts: dict[int, list[float]] = {}
        self.failed: str | None = None

    def complete(self) -> bool:
        return self.failed is not None or len(self.parts) >= self.need


class Decider:
    """See the module docstring. ``model`` is a verified, loaded champion (``champion``,
    ``manifest``, ``version``)."""

    def __init__(
        self,
        fs: FeatureSet,
        model: Any,
        *,
        decisions: DecisionStore | None,
        clock_ms: Callable[[], int],
    ) -> None:
        self.fs = fs
        self.model = model
        self.decisions = decisions
        self.clock_ms = clock_ms
        self.queue: deque[Any] = deque()
        self.waiting: dict[str, _Tx] = {}
        self.fs_meta = {"name": fs.name, "version": fs.version, "fingerprint": fs.fingerprint}
        self.scored_batches: list[int] = []

    # ----------------------------------------------------------------------------- input
    def push(self, items: Iterable[tuple[Any, ...]]) -> None:
        for item in items:
            kind = item[0]
            if kind == "parts":
                for tx_id, plan, values in item[1]:
                    entry = self.waiting.get(tx_id)
                    if entry is not None:
                        entry.parts[plan] = values
                for tx_id, reason in item[2]:
                    entry = self.waiting.get(tx_id)
                    if entry is not None and entry.failed is None:
                        entry.failed = reason
            elif kind == "tx" or kind == "txstate":
                _, tx_id, meta, base, need, clock, *rest = item
                entry = _Tx(tx_id, meta, base, need, clock)
                if rest:  # restored from a snapshot
                    entry.parts, entry.failed = dict(rest[0]), rest[1]
                self.waiting[tx_id] = entry
                self.queue.append(entry)
            else:  # "dup", "learn": complete on arrival, ordered by the queue
                self.queue.append(item)

    def pending(self) -> int:
        return len(self.queue)

    def queue_items(self) -> list[tuple[Any, ...]]:
        """The queue as items :meth:`push` accepts (for a snapshot)."""
        out: list[tuple[Any, ...]] = []
        for e in self.queue:
            if isinstance(e, _Tx):
                out.append(
                    ("txstate", e.tx_id, e.meta, e.base, e.need, e.clock_ms, e.parts, e.failed)
                )
            else:
                out.append(e)
        return out

    # ----------------------------------------------------------------------------- output
    def drain(self) -> list[tuple[Any, ...]]:
        """Decide the completed head of the queue; see the module docstring for the output."""
        queue = self.queue
        head: list[Any] = []
        while queue:
            first = queue[0]
            if isinstance(first, _Tx):
                if not first.complete():
                    break
                del self.waiting[first.tx_id]
            head.append(queue.popleft())
        if not head:
            return []
        txs = [e for e in head if isinstance(e, _Tx) and e.failed is None]
        records, dead = self._decide(txs)
        out: list[tuple[Any, ...]] = []
        new: list[tuple[str, bytes, int]] = []
        fresh: dict[str, bytes] = {}
        lookups = [e[1] for e in head if not isinstance(e, _Tx) and e[0] == "dup"]
        stored = (
            dict(zip(lookups, self.decisions.get_many(lookups), strict=True))
            if lookups and self.decisions is not None
            else {}
        )
        for e in head:
            if isinstance(e, _Tx):
                if e.failed is not None:
                    out.append(("dead", e.meta, "processing_error:entities", e.failed))
                elif e.tx_id in dead:
                    out.append(("dead", e.meta, "processing_error:decide", dead[e.tx_id]))
                else:
                    record, action = records[e.tx_id]
                    fresh[e.tx_id] = record
                    new.append((e.tx_id, record, e.clock_ms))
                    out.append(("decision", e.tx_id, record, action, e.meta["ingest_ms"]))
            elif e[0] == "dup":
                tx_id = e[1]
                again = fresh.get(tx_id) or stored.get(tx_id)
                if again is None:
                    out.append(("dead", e[2], "duplicate_undecided", "original decision expired"))
                else:
                    out.append(("decision", tx_id, again, None, 0))
        if self.decisions is not None and new:
            self.decisions.put_many(new)
        return out

    def _decide(self, txs: list[_Tx]) -> tuple[dict[str, tuple[bytes, str]], dict[str, str]]:
        """Score every transaction in one call; a failing batch falls back to one by one."""
        if not txs:
            return {}, {}
        fs = self.fs
        rows = [assemble(fs, e.base, e.parts) for e in txs]
        try:
            return self._score(txs, rows), {}
        except Exception:  # find the rows that fail, decide the others
            records: dict[str, tuple[bytes, str]] = {}
            dead: dict[str, str] = {}
            for e, row in zip(txs, rows, strict=True):
                try:
                    records.update(self._score([e], [row]))
                except Exception as exc:  # one row must not stop the step
                    dead[e.tx_id] = f"{type(exc).__name__}: {exc}"[:300]
            return records, dead

    def _score(self, txs: list[_Tx], rows: list[list[float]]) -> dict[str, tuple[bytes, str]]:
        model = self.model
        X = np.array(rows, dtype=np.float64)
        scores = np.asarray(model.champion.score_many(X), dtype=np.float64)
        thresholds = model.manifest["thresholds"]
        acts = action_policy(scores, thresholds)
        self.scored_batches.append(len(rows))
        now = self.clock_ms()
        version = model.version
        fs_meta = self.fs_meta
        out = {}
        for e, row, score, action in zip(txs, rows, scores.tolist(), acts, strict=True):
            meta = e.meta
            record = {
                "schema_version": DECISION_SCHEMA_VERSION,
                "tx_id": e.tx_id,
                "event_time_ms": meta["event_time_ms"],
                "decided_at_ms": now,
                "ingested_at_ms": meta["ingest_ms"],
                "source": meta["source"],
                "feature_set": fs_meta,
                "features": row,
                "champion": {"version": version, "score": score},
                "action": action,
                "thresholds": thresholds,
            }
            out[e.tx_id] = (orjson.dumps(record), action)
        return out
