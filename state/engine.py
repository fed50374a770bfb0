"""Pure feature computation: routing, per-partition logic, and an in-order engine for replays.

The live flow and the replay tool share everything here; only the transport differs.

A transaction is *split* into one op per entity plan whose field is present (routed to the state
partition of that entity), one index op (routed to the partition of its ``tx_id``, only when the
feature set has delayed windows) and its base features. :class:`EntityPartition` answers each
entity op with that plan's feature values and updates the entity's history; :class:`IndexPartition`
remembers which delayed-window entities a transaction touched so that a late label can be turned
into fraud ops for those entities. :func:`assemble` joins the parts back into one feature vector.

Ops are plain tuples (cheap to pickle across workers):

* ``(OP_TX, plan, entity_id, tx_id, event_time_ms, amount, novelty_values)``
* ``(OP_FRAUD, plan, entity_id, event_time_ms, label_time_ms, delta)``
* ``(OP_INDEX, tx_id, event_time_ms, ((plan, entity_id), ...))``
* ``(OP_LABEL, tx_id, label, label_time_ms)``
"""

from __future__ import annotations

import itertools
import math
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.features import FeatureSet
from fraudstream.state.history import (
    HISTORY_FORMAT,
    History,
    decode,
    encode,
    newest_event_ms,
)

__all__ = [
    "ENTITY_FORMAT",
    "INDEX_FORMAT",
    "OP_FRAUD",
    "OP_INDEX",
    "OP_LABEL",
    "OP_TX",
    "EntityPartition",
    "InOrderEngine",
    "IndexPartition",
    "PartitionStats",
    "assemble",
    "base_features",
    "partition_of",
    "split_transaction",
]

# Value encodings of the two state families (checked on resume by EpochStore).
ENTITY_FORMAT = b"entities/history-%d" % HISTORY_FORMAT
INDEX_FORMAT = b"txindex/json-1"

OP_TX = 0
OP_FRAUD = 1
OP_INDEX = 2
OP_LABEL = 3

_DAY_MS = 86_400_000
_ENTITY_PREFIX = b"e\x00"
_INDEX_PREFIX = b"x\x00"
_QUEUE_PREFIX = b"q\x00"


def partition_of(key: str, partitions: int) -> int:
    """Stable partition of a key (crc32; Python's ``hash`` is salted per process)."""
    return zlib.crc32(key.encode()) % partitions


def base_features(fs: FeatureSet, tx: Transaction) -> tuple[float, ...]:
    """Stateless features, in the feature set's order (weekday/hour in UTC)."""
    out = []
    if fs.amount_feature:
        out.append(tx.amount)
    if fs.weekend_feature or fs.night_feature:
        days = tx.event_time_ms // _DAY_MS
        if fs.weekend_feature:
            out.append(1.0 if (days + 3) % 7 >= 5 else 0.0)  # 1970-01-01 was a Thursday
        if fs.night_feature:
            hour = (tx.event_time_ms - days * _DAY_MS) // 3_600_000
            out.append(1.0 if hour <= fs.night_last_hour else 0.0)
    return tuple(out)


def split_transaction(fs: FeatureSet, tx: Transaction) -> tuple[list[tuple[Any, ...]], Any]:
    """Entity ops for ``tx`` plus its index op (``None`` without delayed windows)."""
    ops: list[tuple[Any, ...]] = []
    delayed = []
    for i, plan in enumerate(fs.plans):
        entity_id = tx.account_id if plan.field == "account_id" else tx.get(plan.field)
        if entity_id is None:
            continue
        novelty = tuple(tx.get(f) for f in plan.novelty_fields)
        ops.append((OP_TX, i, entity_id, tx.tx_id, tx.event_time_ms, tx.amount, novelty))
        if plan.delayed_windows:
            delayed.append((i, entity_id))
    index_op = (OP_INDEX, tx.tx_id, tx.event_time_ms, tuple(delayed)) if delayed else None
    return ops, index_op


def assemble(
    fs: FeatureSet, base: Sequence[float], parts: Mapping[int, Sequence[float]]
) -> list[float]:
    """Concatenate base features and each plan's values (imputed when the entity was absent)."""
    row = list(base)
    for i in range(len(fs.plans)):
        values = parts.get(i)
        row.extend(values if values is not None else fs.imputed(i))
    return row


class _Kernel:
    """One plan's precomputed constants and its feature arithmetic."""

    __slots__ = (
        "aggs",
        "delay",
        "delayed_los",
        "delayed_outputs",
        "include_current",
        "key_prefix",
        "novelty_fields",
        "recency",
        "sec_per_unit",
        "simple",
        "wins",
        "zwin",
    )

    def __init__(self, fs: FeatureSet, index: int) -> None:
        p = fs.plans[index]
        res = fs.resolution_ms
        self.key_prefix = _ENTITY_PREFIX + p.entity.encode() + b"\x00"
        self.wins = [w.length_ms // res for w in p.windows]
        self.aggs = p.aggs
        self.simple = p.aggs == ("count", "sum")
        self.include_current = p.include_current
        self.zwin = p.zscore_window.length_ms // res if p.zscore_window else None
        self.recency = p.recency
        self.sec_per_unit = res / 1000.0
        self.novelty_fields = p.novelty_fields
        self.delay = p.delay_ms // res
        self.delayed_los = [w.length_ms // res for w in p.delayed_windows]
        self.delayed_outputs = p.delayed_outputs

    def features(self, h: History, t: int, t_ms: int, amount: float) -> list[float]:
        # Window sums are prefix-sum differences (see History); inlined: this runs per op.
        times, cc, cs, cs_lo = h.times, h.cc, h.cs, h.cs_lo
        j = bisect_right(times, t)
        out: list[float] = []
        if self.wins:
            c_hi, s_hi, sl_hi = cc[j], cs[j], cs_lo[j]
            if self.simple:  # count and sum only: the common case
                if self.include_current:
                    for w in self.wins:
                        i = bisect_right(times, t - w, 0, j)
                        if i == j:
                            out += (1.0, amount)
                        else:
                            s = (s_hi - cs[i]) + (sl_hi - cs_lo[i])
                            out += (c_hi - cc[i] + 1.0, s + amount)
                else:
                    for w in self.wins:
                        i = bisect_right(times, t - w, 0, j)
                        if i == j:
                            out += (0.0, 0.0)
                        else:
                            out += (c_hi - cc[i], (s_hi - cs[i]) + (sl_hi - cs_lo[i]))
            else:
                self._general(h, t, j, amount, out)
        if self.zwin is not None:
            i = bisect_right(times, t - self.zwin, 0, j)
            if j - i == 0:
                out.append(0.0)
            else:
                c = cc[j] - cc[i]
                s = (cs[j] - cs[i]) + (cs_lo[j] - cs_lo[i])
                q = (h.cq[j] - h.cq[i]) + (h.cq_lo[j] - h.cq_lo[i])
                sd = _std(c, s, q)
                out.append((amount - s / c) / sd if c >= 2 and sd > 0 else 0.0)
        if self.recency:
            out.append(-1.0 if j == 0 else (t - times[j - 1]) * self.sec_per_unit)
        if self.delayed_los:
            hi = t - self.delay
            jd = bisect_right(times, hi)
            for w in self.delayed_los:
                i = bisect_right(times, hi - w, 0, jd)
                c = cc[jd] - cc[i]
                frauds = h.fraud_count(hi - w, hi, t_ms) if h.f_time else 0.0
                for o in self.delayed_outputs:
                    out.append(c if o == "delayed_count" else (frauds / c if c else 0.0))
        return out

    def _general(self, h: History, t: int, j: int, amount: float, out: list[float]) -> None:
        """Windows with aggregations beyond count and sum."""
        times, cc, cs, cs_lo, cq, cq_lo = h.times, h.cc, h.cs, h.cs_lo, h.cq, h.cq_lo
        c_hi, s_hi, sl_hi, q_hi, ql_hi = cc[j], cs[j], cs_lo[j], cq[j], cq_lo[j]
        cur = self.include_current
        a2 = amount * amount
        for w in self.wins:
            i = bisect_right(times, t - w, 0, j)
            if i == j:
                c = s = q = 0.0
            else:
                c = c_hi - cc[i]
                s = (s_hi - cs[i]) + (sl_hi - cs_lo[i])
                q = (q_hi - cq[i]) + (ql_hi - cq_lo[i])
            if cur:
                c += 1.0
                s += amount
                q += a2
            for agg in self.aggs:
                if agg == "count":
                    out.append(c)
                elif agg == "sum":
                    out.append(s)
                elif agg == "mean":
                    out.append(s / c if c else 0.0)
                elif agg == "std":
                    out.append(_std(c, s, q))
                else:  # max
                    m = max(h.maxs[i:j]) if i < j else -math.inf
                    if cur and amount > m:
                        m = amount
                    out.append(m if c else 0.0)


def _std(c: float, s: float, q: float) -> float:
    if c < 2:
        return 0.0
    mean = s / c
    var = q / c - mean * mean
    return math.sqrt(var) if var > 0 else 0.0


@dataclass
class PartitionStats:
    """Counters a partition exposes to metrics."""

    tx_ops: int = 0
    fraud_ops: int = 0
    fraud_ignored: int = 0
    labels_matched: int = 0
    labels_unmatched: int = 0
    labels_noop: int = 0
    expired: int = 0


class EntityPartition:
    """Applies entity ops in order against one store, through a write-back cache.

    Histories stay cached (up to ``cache_entries``, least recently used evicted first), decoded or
    encoded (``keep_decoded``);
    changed ones are encoded and written in one atomic batch by :meth:`flush`, which the owner
    calls before every :meth:`EpochStore.commit_epoch`. Between flushes the store holds the
    contents of the last flush, which is all a resume needs: the undo log rolls the store back to
    the snapshot and the input is replayed from there. An eviction flushes early, which the undo
    log covers the same way.
    """

    def __init__(
        self,
        fs: FeatureSet,
        store: EpochStore,
        *,
        sweep_every_ms: int | None = None,
        cache_entries: int = 4096,
        keep_decoded: bool = True,
    ):
        if cache_entries < 1:
            raise ValueError("cache_entries must be >= 1")
        self.fs = fs
        self.store = store
        self.kernels = [_Kernel(fs, i) for i in range(len(fs.plans))]
        self.res = fs.resolution_ms
        self.horizon = fs.horizon_ms() // fs.resolution_ms
        self.horizon_ms = fs.horizon_ms()
        self.max_buckets = fs.max_buckets
        self.max_seen = fs.max_seen_values
        self.units_per_s = 1000.0 / fs.resolution_ms
        self.sweep_every_ms = sweep_every_ms
        self.cache_entries = cache_entries
        self.watermark_ms = -1
        self._last_sweep_ms = -1
        self.keep_decoded = keep_decoded
        # Decoded histories, or their encoded bytes (keep_decoded=False): a long-running process
        # with a large cache pays for long-lived History objects in every full GC, while bytes
        # are invisible to the collector; a batch job with few, large batches does better decoded.
        self._cache: dict[bytes, Any] = {}
        self._dirty: set[bytes] = set()
        # The store's value of every cached key (the undo log's "before"), when undo is logged.
        self._stored: dict[bytes, bytes | None] | None = {} if store.log_undo else None
        self.stats = PartitionStats()

    def process(self, ops: Iterable[tuple[Any, ...]]) -> list[tuple[str, int, list[float]]]:
        """Apply ops in order; return ``(tx_id, plan, values)`` for every transaction op."""
        ops = list(ops)
        kernels = self.kernels
        cache = self._cache
        op_keys = [kernels[op[1]].key_prefix + op[2].encode() for op in ops]
        hist: dict[bytes, History] = cache if self.keep_decoded else {}
        missing = []
        for key in dict.fromkeys(op_keys):
            value = cache.pop(key, None)
            if value is None:
                missing.append(key)
            else:
                cache[key] = value  # most recently used last
                if not self.keep_decoded:
                    hist[key] = decode(value)
        if missing:
            stored = self._stored
            for key, raw in zip(missing, self.store.get_many(missing), strict=True):
                hist[key] = decode(raw) if raw is not None else History()
                if stored is not None:
                    stored[key] = raw
        out: list[tuple[str, int, list[float]]] = []
        res, horizon, horizon_ms = self.res, self.horizon, self.horizon_ms
        max_buckets = self.max_buckets
        stats = self.stats
        wm = self.watermark_ms
        for op, key in zip(ops, op_keys, strict=True):
            k = kernels[op[1]]
            h = hist[key]
            t_ms = op[3] if op[0] == OP_FRAUD else op[4]
            t = t_ms // res
            ref = t if t > h.max_t else h.max_t
            cutoff = ref - horizon
            if (h.times and h.times[0] <= cutoff) or h.f_time or h.seen:
                h.prune(cutoff, ref * res - horizon_ms)
            if op[0] == OP_TX:
                _, _, _, tx_id, _, amount, novelty = op
                values = k.features(h, t, t_ms, amount)
                if novelty:
                    for name, value in zip(k.novelty_fields, novelty, strict=True):
                        values.append(
                            0.0
                            if value is None
                            else float(h.observe(name, value, t_ms, self.max_seen))
                        )
                h.add(t, amount)
                if t_ms > h.last_ms:
                    h.last_ms = t_ms
                if len(h.times) > max_buckets:
                    h.coarsen(max_buckets, self.units_per_s)
                out.append((tx_id, op[1], values))
                if t_ms > wm:
                    wm = t_ms
            else:  # OP_FRAUD
                stats.fraud_ops += 1
                _, _, _, _, label_ms, delta = op
                if t <= h.max_t - horizon:
                    stats.fraud_ignored += 1
                else:
                    h.add_fraud(t, label_ms, delta)
        stats.tx_ops += len(out)
        if self.keep_decoded:
            self._dirty.update(op_keys)
        else:
            for key, h in hist.items():
                cache[key] = encode(h)
            self._dirty.update(hist)
        self.watermark_ms = wm
        if self.sweep_every_ms and wm - self._last_sweep_ms >= self.sweep_every_ms:
            self._sweep()
        if len(cache) > self.cache_entries:
            self._evict()
        return out

    def flush(self) -> None:
        """Write every changed history to the store in one atomic batch."""
        if self._dirty:
            self._write(list(self._dirty))

    def _write(self, keys: list[bytes]) -> None:
        cache = self._cache
        if self.keep_decoded:
            updates: dict[bytes, bytes | None] = {key: encode(cache[key]) for key in keys}
        else:
            updates = {key: cache[key] for key in keys}
        stored = self._stored
        if stored is None:  # no undo log: nothing needs the previous values
            self.store.write(updates, {})
        else:
            # The store holds what was last read or written for each cached key: no re-read.
            self.store.write(updates, {k: stored[k] for k in self.store.unlogged(keys)})
            stored.update(updates)
        self._dirty.difference_update(keys)

    def _evict(self) -> None:
        """Drop the least recently used quarter of the cache, writing the changed ones first."""
        cache = self._cache
        drop = list(itertools.islice(cache, len(cache) - self.cache_entries * 3 // 4))
        dirty = [key for key in drop if key in self._dirty]
        if dirty:
            self._write(dirty)
        stored = self._stored
        for key in drop:
            del cache[key]
            if stored is not None:
                del stored[key]

    def _sweep(self) -> None:
        """Delete entities idle for longer than the horizon plus lateness (no result changes)."""
        self._last_sweep_ms = self.watermark_ms
        self.flush()
        cutoff = self.watermark_ms - self.horizon_ms - self.fs.allowed_lateness_ms
        updates: dict[bytes, bytes | None] = {}
        before: dict[bytes, bytes | None] = {}
        for key, raw in self.store.iter_prefix(_ENTITY_PREFIX):
            if newest_event_ms(raw) <= cutoff:
                updates[key] = None
                before[key] = raw
                self._cache.pop(key, None)
                if self._stored is not None:
                    self._stored.pop(key, None)
                self.stats.expired += 1
        if updates:
            self.store.write(updates, before)


class IndexPartition:
    """Transaction index: tx_id -> [event time, label, delayed-window entities, label time].

    A label for a transaction not indexed yet is kept pending (event time ``None``) and applied
    when the transaction arrives; only the latest label of a pending transaction is kept.
    """

    def __init__(
        self,
        store: EpochStore,
        *,
        ttl_ms: int,
        sweep_every_ms: int | None = _DAY_MS,
    ) -> None:
        self.store = store
        self.ttl_ms = ttl_ms
        self.sweep_every_ms = sweep_every_ms
        self.watermark_ms = -1
        self._last_sweep_ms = -1
        self.stats = PartitionStats()

    def process(self, ops: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Apply index and label ops in order; return the fraud ops the labels imply."""
        ops = list(ops)
        keys = list({_INDEX_PREFIX + op[1].encode(): None for op in ops})
        before = dict(zip(keys, self.store.get_many(keys), strict=True))
        entries: dict[bytes, list[Any] | None] = {}
        updates: dict[bytes, bytes | None] = {}
        out: list[tuple[Any, ...]] = []
        wm = self.watermark_ms
        for op in ops:
            key = _INDEX_PREFIX + op[1].encode()
            if key in entries:
                entry = entries[key]
            else:
                raw = before[key]
                entry = entries[key] = orjson.loads(raw) if raw is not None else None
            if op[0] == OP_INDEX:
                _, tx_id, t_ms, delayed = op
                if entry is None or entry[0] is None:
                    pending = entry
                    entry = entries[key] = [t_ms, 0, [list(d) for d in delayed], 0]
                    self._enqueue(t_ms, tx_id, updates, before)
                    if pending is not None and pending[1] == 1:
                        # the label arrived before its transaction: apply it now
                        self.stats.labels_matched += 1
                        entry[1], entry[3] = 1, pending[3]
                        for plan, entity_id in entry[2]:
                            out.append((OP_FRAUD, plan, entity_id, t_ms, pending[3], 1))
                if t_ms > wm:
                    wm = t_ms
                continue
            _, tx_id, label, label_ms = op  # OP_LABEL
            if entry is None or entry[0] is None:
                # Unknown transaction (not seen yet, or expired): keep the latest label pending
                # so that processing order between the two topics cannot change the state.
                self.stats.labels_unmatched += 1
                if entry is None:
                    self._enqueue(label_ms, tx_id, updates, before)
                entry = entries[key] = [None, label, None, label_ms]
                continue
            if label == entry[1]:
                self.stats.labels_noop += 1
                continue
            self.stats.labels_matched += 1
            entry[1], entry[3] = label, label_ms
            delta = 1 if label == 1 else -1
            for plan, entity_id in entry[2]:
                out.append((OP_FRAUD, plan, entity_id, entry[0], label_ms, delta))
        for key, entry in entries.items():
            if entry is not None:
                updates[key] = orjson.dumps(entry)
        self.watermark_ms = wm
        if self.sweep_every_ms and wm - self._last_sweep_ms >= self.sweep_every_ms:
            self._sweep(updates, before)
        if updates:
            self.store.write(updates, before)
        return out

    @staticmethod
    def _enqueue(
        t_ms: int, tx_id: str, updates: dict[bytes, bytes | None], before: dict[bytes, bytes | None]
    ) -> None:
        qkey = b"%s%010d\x00%s" % (_QUEUE_PREFIX, t_ms // _DAY_MS, tx_id.encode())
        before.setdefault(qkey, None)
        updates[qkey] = b""

    def _sweep(self, updates: dict[bytes, bytes | None], before: dict[bytes, bytes | None]) -> None:
        self._last_sweep_ms = self.watermark_ms
        cutoff_day = (self.watermark_ms - self.ttl_ms) // _DAY_MS
        for qkey, _ in self.store.iter_prefix(_QUEUE_PREFIX):
            day = int(qkey[len(_QUEUE_PREFIX) : len(_QUEUE_PREFIX) + 10])
            if day >= cutoff_day:
                break
            tx_key = _INDEX_PREFIX + qkey[len(_QUEUE_PREFIX) + 11 :]
            for key in (qkey, tx_key):
                if key not in before:
                    before[key] = self.store.get_many([key])[0]
                updates[key] = None
            self.stats.expired += 1


class InOrderEngine:
    """Single-threaded engine: labels and transactions applied in one recorded order.

    This is the replay path and the reference for tests; it uses the same partition classes as the
    live flow, with one in-memory partition of each kind (partitioning never changes results).
    """

    def __init__(
        self,
        fs: FeatureSet,
        entity_store: EpochStore,
        index_store: EpochStore,
        *,
        cache_entries: int = 65_536,
        keep_decoded: bool = True,
    ) -> None:
        self.fs = fs
        self.entities = EntityPartition(
            fs, entity_store, cache_entries=cache_entries, keep_decoded=keep_decoded
        )
        self.index = IndexPartition(index_store, ttl_ms=fs.horizon_ms(), sweep_every_ms=None)

    def on_transaction(self, tx: Transaction) -> list[float]:
        return self.on_transactions([tx])[0]

    def on_transactions(self, txs: Sequence[Transaction]) -> list[list[float]]:
        """Feature rows for consecutive transactions (no label between them), in order.

        One partition call for the whole run of transactions, exactly as the live flow does per
        micro-batch.
        """
        fs = self.fs
        ops: list[tuple[Any, ...]] = []
        index_ops = []
        for tx in txs:
            tx_ops, index_op = split_transaction(fs, tx)
            ops.extend(tx_ops)
            if index_op is not None:
                index_ops.append(index_op)
        parts: dict[str, dict[int, list[float]]] = {tx.tx_id: {} for tx in txs}
        for tx_id, plan, values in self.entities.process(ops):
            parts[tx_id][plan] = values
        if index_ops:
            self.index.process(index_ops)
        return [assemble(fs, base_features(fs, tx), parts[tx.tx_id]) for tx in txs]

    def on_label(self, label: Label) -> None:
        fraud_ops = self.index.process([(OP_LABEL, label.tx_id, label.label, label.label_time_ms)])
        if fraud_ops:
            self.entities.process(fraud_ops)

    def flush(self) -> None:
        """Write cached entity state to the store (to inspect or snapshot it)."""
        self.entities.flush()
