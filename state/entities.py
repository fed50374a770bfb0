"""Entity state partitions: ops applied in order against one store, through a write-back cache.

An :class:`EntityPartition` owns the histories of the entities whose key routes to it. It
answers each transaction op with that plan's feature values (then adds the event) and applies
fraud ops (label changes) for delayed windows. Ops arrive in the input's deterministic order
(:mod:`fraudstream.order`), so the stored state after any op is a function of the input alone.

Maintenance is driven by the op's maintenance clock (:mod:`fraudstream.state.clock`), never by
one event's own time: buckets are pruned relative to ``min(newest event, clock)``, and idle
entities are swept when the clock passes the next sweep point. A sweep happens *at* the op that
crosses it (the batch is split there), so stored state does not depend on batch boundaries.

A failure while applying one op (a bug, or a resource error) never stops the partition: the op is
reported in :attr:`ProcessResult.errors`, the entity's history is rebuilt without it, and
processing goes on.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fraudstream.state.base import EpochStore
from fraudstream.state.features import FeatureSet
from fraudstream.state.history import HISTORY_FORMAT, History, decode, encode, newest_event_ms
from fraudstream.state.kernel import ENTITY_PREFIX, Kernel
from fraudstream.state.ops import OP_TX

__all__ = ["ENTITY_FORMAT", "EntityPartition", "PartitionStats", "ProcessResult"]

# Value encoding of the family (checked on resume by EpochStore): histories + sweep schedule.
ENTITY_FORMAT = b"entities/history-%d.1" % HISTORY_FORMAT

_META_SWEEP = b"m\x00last-sweep"
_I64 = struct.Struct("<q")


@dataclass
class PartitionStats:
    """Counters a partition exposes to metrics."""

    tx_ops: int = 0
    fraud_ops: int = 0
    fraud_ignored: int = 0
    expired: int = 0
    sweeps: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass
class ProcessResult:
    """``values``: ``(tx_id, plan, features)`` per transaction op applied;
    ``errors``: ``(op, reason)`` per op that failed (its transaction gets no decision)."""

    values: list[tuple[str, int, list[float]]] = field(default_factory=list)
    errors: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)


class EntityPartition:
    """Applies entity ops in order against one store, through a write-back cache.

    Histories stay cached (up to ``cache_entries``, least recently used evicted first), decoded or
    encoded (``keep_decoded``); changed ones are encoded and written in one atomic batch by
    :meth:`flush`, which the owner calls before every :meth:`EpochStore.commit_epoch`. Between
    flushes the store holds the contents of the last flush, which is all a resume needs: the
    undo log rolls the store back to the snapshot and the input is replayed from there. An
    eviction flushes early, which the undo log covers the same way.
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
        self.kernels = [Kernel(fs, i) for i in range(len(fs.plans))]
        self.res = fs.resolution_ms
        self.horizon = fs.horizon_ms() // fs.resolution_ms
        self.horizon_ms = fs.horizon_ms()
        self.max_buckets = fs.max_buckets
        self.max_seen = fs.max_seen_values
        self.units_per_s = 1000.0 / fs.resolution_ms
        self.sweep_every_ms = sweep_every_ms
        self.cache_entries = cache_entries
        self.keep_decoded = keep_decoded
        # Decoded histories, or their encoded bytes (keep_decoded=False): a long-running process
        # with a large cache pays for long-lived History objects in every full GC, while bytes
        # are invisible to the collector; a batch job with few, large batches does better decoded.
        self._cache: dict[bytes, Any] = {}
        self._dirty: set[bytes] = set()
        # The store's value of every cached key (the undo log's "before"), when undo is logged.
        self._stored: dict[bytes, bytes | None] | None = {} if store.log_undo else None
        (raw,) = store.get_many([_META_SWEEP])
        self._last_sweep_ms: int | None = None if raw is None else _I64.unpack(raw)[0]
        self.stats = PartitionStats()

    # ----------------------------------------------------------------------------- ops
    def process(self, ops: Iterable[tuple[Any, ...]]) -> ProcessResult:
        """Apply ops in order; see :class:`ProcessResult`."""
        ops = list(ops)
        result = ProcessResult()
        start = 0
        every = self.sweep_every_ms
        if every:
            for i, op in enumerate(ops):
                clock = op[-1]
                if self._last_sweep_ms is None:
                    # the first op starts the sweep schedule; stored so that a resume keeps it
                    self._last_sweep_ms = clock
                    self.store.write({_META_SWEEP: _I64.pack(clock)}, {_META_SWEEP: None})
                elif clock - self._last_sweep_ms >= every:
                    self._apply(ops[start:i], result)
                    self._sweep(clock)
                    start = i
        self._apply(ops[start:], result)
        if len(self._cache) > self.cache_entries:
            self._evict()
        return result

    def _apply(self, ops: list[tuple[Any, ...]], result: ProcessResult) -> None:
        if not ops:
            return
        kernels = self.kernels
        cache = self._cache
        op_keys = [kernels[op[1]].key_prefix + op[2].encode() for op in ops]
        hist: dict[bytes, History] = cache if self.keep_decoded else {}
        missing = []
        unique = dict.fromkeys(op_keys)
        for key in unique:
            value = cache.pop(key, None)
            if value is None:
                missing.append(key)
            else:
                cache[key] = value  # most recently used last
                if not self.keep_decoded:
                    hist[key] = decode(value)
        self.stats.cache_misses += len(missing)
        self.stats.cache_hits += len(unique) - len(missing)
        if missing:
            stored = self._stored
            for key, raw in zip(missing, self.store.get_many(missing), strict=True):
                hist[key] = decode(raw) if raw is not None else History()
                if stored is not None:
                    stored[key] = raw
        out = result.values
        res, horizon, horizon_ms = self.res, self.horizon, self.horizon_ms
        max_buckets = self.max_buckets
        stats = self.stats
        for n, (op, key) in enumerate(zip(ops, op_keys, strict=True)):
            k = kernels[op[1]]
            h = hist[key]
            try:
                if op[0] == OP_TX:
                    _, _, _, tx_id, t_ms, amount, novelty, clock_ms = op
                else:
                    t_ms, clock_ms = op[3], op[6]
                t = t_ms // res
                ref = t if t > h.max_t else h.max_t
                clock = clock_ms // res
                if clock < ref:
                    ref = clock  # one outlier timestamp must not prune an entity's history
                cutoff = ref - horizon
                if (h.times and h.times[0] <= cutoff) or h.f_time or h.seen:
                    h.prune(cutoff, ref * res - horizon_ms)
                if op[0] == OP_TX:
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
                        h.coarsen(max_buckets, self.units_per_s, clock)
                    out.append((tx_id, op[1], values))
                else:  # OP_FRAUD
                    stats.fraud_ops += 1
                    label_ms, delta = op[4], op[5]
                    if t <= ref - horizon:
                        stats.fraud_ignored += 1
                    else:
                        h.add_fraud(t, label_ms, delta)
            except Exception as exc:  # one op must never stop the partition
                stats.errors += 1
                result.errors.append((op, f"{type(exc).__name__}: {exc}"[:300]))
                if not self.keep_decoded:
                    hist[key] = self._rebuild(key, ops, op_keys, n)
        stats.tx_ops += len(out)
        if self.keep_decoded:
            self._dirty.update(op_keys)
        else:
            for key, h in hist.items():
                cache[key] = encode(h)
            self._dirty.update(hist)

    def _rebuild(
        self,
        key: bytes,
        ops: list[tuple[Any, ...]],
        op_keys: list[bytes],
        upto: int,
    ) -> History:
        """The history of ``key`` as of this batch's start plus its ops before ``upto`` that
        succeeded (deterministic: the same failure rebuilds the same history every run).

        Encoded cache only (the flow's): the cache still holds the batch's starting bytes. A
        decoded cache (replays of validated files) keeps the history as the failing op left it.
        """
        start = self._cache.get(key)
        if start is None:
            start = self.store.get_many([key])[0]
        h = decode(start) if isinstance(start, bytes) else History()
        earlier = [op for op, k in zip(ops[:upto], op_keys[:upto], strict=True) if k == key]
        if not earlier:
            return h
        scratch = EntityPartition.__new__(EntityPartition)
        scratch.__dict__.update(self.__dict__)
        scratch._cache = {key: encode(h)}
        scratch._dirty = set()
        scratch._stored = None
        scratch.stats = PartitionStats()
        probe = ProcessResult()
        scratch._apply(earlier, probe)
        if probe.errors:  # failing again: keep the start state rather than guess
            return h
        return decode(scratch._cache[key])

    # ----------------------------------------------------------------------------- storage
    def flush(self) -> None:
        """Write every changed history to the store in one atomic batch."""
        if self._dirty:
            self._write(list(self._dirty))

    def _write(self, keys: list[bytes], extra: dict[bytes, bytes | None] | None = None) -> None:
        cache = self._cache
        if self.keep_decoded:
            updates: dict[bytes, bytes | None] = {key: encode(cache[key]) for key in keys}
        else:
            updates = {key: cache[key] for key in keys}
        stored = self._stored
        if stored is None:  # no undo log: nothing needs the previous values
            self.store.write({**updates, **(extra or {})}, {})
        else:
            # The store holds what was last read or written for each cached key: no re-read.
            before = {k: stored[k] for k in self.store.unlogged(keys)}
            if extra:
                before.update(zip(extra, self.store.get_many(list(extra)), strict=True))
                updates.update(extra)
            self.store.write(updates, before)
            stored.update((k, updates[k]) for k in keys)
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

    def _sweep(self, clock_ms: int) -> None:
        """Delete entities idle for longer than the horizon plus lateness (no result changes)."""
        self._last_sweep_ms = clock_ms
        self.stats.sweeps += 1
        self._write(list(self._dirty), {_META_SWEEP: _I64.pack(clock_ms)})
        cutoff = clock_ms - self.horizon_ms - self.fs.allowed_lateness_ms
        updates: dict[bytes, bytes | None] = {}
        before: dict[bytes, bytes | None] = {}
        for key, raw in self.store.iter_prefix(ENTITY_PREFIX):
            if newest_event_ms(raw) <= cutoff:
                updates[key] = None
                before[key] = raw
                self._cache.pop(key, None)
                if self._stored is not None:
                    self._stored.pop(key, None)
                self.stats.expired += 1
        if updates:
            self.store.write(updates, before)
