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

import numpy as np
import orjson

from fraudstream.state.base import EpochStore
from fraudstream.state.columnar import Plan, Records, encode_many, evaluate
from fraudstream.state.features import FeatureSet
from fraudstream.state.history import HISTORY_FORMAT, History, decode, encode, newest_event_ms
from fraudstream.state.kernel import ENTITY_PREFIX, Kernel
from fraudstream.state.ops import OP_TX

__all__ = ["ENTITY_FORMAT", "EntityPartition", "PartitionStats", "ProcessResult"]

# Value encoding of the family (checked on resume by EpochStore): histories + sweep schedule.
ENTITY_FORMAT = b"entities/history-%d.1" % HISTORY_FORMAT

_META_SWEEP = b"m\x00last-sweep"
_EMPTY = encode(History())


def _columnar_plan(k: Kernel, plan: Any) -> Plan | None:
    """The columnar kernel's description of a plan, or None where it does not apply (max)."""
    if "max" in plan.aggs:
        return None
    return Plan(
        wins=list(k.wins),
        aggs=tuple(plan.aggs),
        include_current=plan.include_current,
        zwin=k.zwin,
        recency=plan.recency,
        n_novelty=len(plan.novelty_fields),
        delay=k.delay,
        delayed_los=list(k.delayed_los),
        delayed_outputs=tuple(plan.delayed_outputs),
        sec_per_unit=k.sec_per_unit,
    )


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
    columnar_fallbacks: int = 0
    columnar_ops: int = 0


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
        columnar_min_ops: int = 32,
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
        # the columnar kernel's description of each plan (None: a plan it does not cover)
        self._plans = [_columnar_plan(k, p) for k, p in zip(self.kernels, fs.plans, strict=True)]
        self.columnar_min_ops = columnar_min_ops

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
        """Route each entity's ops to the columnar kernel or the per-op path (same results)."""
        if not ops:
            return
        if self.keep_decoded or len(ops) < self.columnar_min_ops:
            self._apply_sequential(ops, result)
            return
        kernels = self.kernels
        groups: dict[bytes, list[int]] = {}
        fraud_keys: set[bytes] = set()
        op_keys = []
        for n, op in enumerate(ops):
            key = kernels[op[1]].key_prefix + op[2].encode()
            op_keys.append(key)
            groups.setdefault(key, []).append(n)
            if op[0] != OP_TX:
                fraud_keys.add(key)
        candidates = [
            key
            for key, idx in groups.items()
            if key not in fraud_keys and self._plans[ops[idx[0]][1]] is not None
        ]
        fast: list[bytes] = []
        if candidates:
            raws = self._load(candidates)
            fast = self._columnar(ops, groups, candidates, raws, result)
        if len(fast) < len(groups):
            done = set(fast)
            rest = [op for op, key in zip(ops, op_keys, strict=True) if key not in done]
            self._apply_sequential(rest, result)

    def _load(self, keys: list[bytes]) -> list[bytes]:
        """Encoded histories of ``keys`` (cache, else store, else a new empty one)."""
        cache = self._cache
        out: list[bytes | None] = []
        missing = []
        for i, key in enumerate(keys):
            value = cache.pop(key, None)
            if value is None:
                missing.append(i)
                out.append(None)
            else:
                cache[key] = value  # most recently used last
                out.append(value)
        self.stats.cache_misses += len(missing)
        self.stats.cache_hits += len(keys) - len(missing)
        if missing:
            stored = self._stored
            got = self.store.get_many([keys[i] for i in missing])
            for i, raw in zip(missing, got, strict=True):
                key = keys[i]
                if stored is not None:
                    stored[key] = raw
                value = raw if raw is not None else _EMPTY
                cache[key] = value
                out[i] = value
        return out  # type: ignore[return-value]

    def _columnar(
        self,
        ops: list[tuple[Any, ...]],
        groups: dict[bytes, list[int]],
        candidates: list[bytes],
        raws: list[bytes],
        result: ProcessResult,
    ) -> list[bytes]:
        """Evaluate the groups that qualify (module docstring of state.columnar); return them."""
        rec = Records(raws)
        res = self.res
        by_plan: dict[int, list[int]] = {}
        for i, key in enumerate(candidates):
            idx = groups[key]
            t = [ops[n][4] // res for n in idx]
            if any(b < a for a, b in itertools.pairwise(t)):
                continue  # out of order within the batch
            if t[0] < rec.max_t[i] or t[-1] - t[0] >= self.horizon:
                continue  # older than what is stored, or a batch spanning the horizon
            if int(rec.n[i]) + len(idx) > self.max_buckets:
                continue  # would coarsen
            by_plan.setdefault(ops[idx[0]][1], []).append(i)
        fast: list[bytes] = []
        encoded: dict[bytes, bytes] = {}
        for plan_index, members in by_plan.items():
            try:
                encoded.update(
                    self._evaluate(plan_index, members, ops, groups, candidates, rec, result)
                )
            except Exception as exc:  # fall back to the per-op path for these groups
                self.stats.columnar_fallbacks += 1
                result.errors.extend(())  # nothing applied yet: the per-op path redoes them
                del exc
                continue
            fast.extend(candidates[i] for i in members)
        cache = self._cache
        for key, raw in encoded.items():
            cache[key] = raw
        self._dirty.update(encoded)
        return fast

    def _evaluate(
        self,
        plan_index: int,
        members: list[int],
        ops: list[tuple[Any, ...]],
        groups: dict[bytes, list[int]],
        candidates: list[bytes],
        rec: Records,
        result: ProcessResult,
    ) -> dict[bytes, bytes]:
        plan = self._plans[plan_index]
        assert plan is not None
        res = self.res
        idx_lists = [groups[candidates[i]] for i in members]
        flat = [n for idx in idx_lists for n in idx]
        sizes = [len(idx) for idx in idx_lists]
        ev_ops = [ops[n] for n in flat]
        ev_group = np.repeat(np.arange(len(members), dtype=np.int64), sizes)
        ev_tms = np.fromiter((o[4] for o in ev_ops), dtype=np.int64, count=len(flat))
        ev_amt = np.fromiter((o[5] for o in ev_ops), dtype=np.float64, count=len(flat))
        ev_t = ev_tms // res
        clocks = np.fromiter((o[7] for o in ev_ops), dtype=np.int64, count=len(flat)) // res
        ends = np.cumsum(sizes)
        clock_first = clocks[ends - np.asarray(sizes)]
        clock_last = clocks[ends - 1]
        rows = np.asarray(members, dtype=np.int64)
        values, cols = evaluate(
            plan, rec, rows, ev_group, ev_t, ev_tms, ev_amt, clock_first, clock_last, self.horizon
        )
        kernel = self.kernels[plan_index]
        seen_out: list[bytes] = []
        if kernel.novelty_fields:
            col0 = plan.width - plan.n_novelty - len(plan.delayed_los) * len(plan.delayed_outputs)
            start = 0
            for g, i in enumerate(members):
                raw_seen = rec.seen(i)
                h = History.__new__(History)
                h.seen = orjson.loads(raw_seen) if raw_seen else {}
                max_t = int(rec.max_t[i])
                for e in range(start, start + sizes[g]):
                    op = ev_ops[e]
                    t, t_ms = int(ev_t[e]), op[4]
                    ref = t if t > max_t else max_t
                    clock = int(clocks[e])
                    if clock < ref:
                        ref = clock
                    if h.seen:
                        h.prune_seen(ref * res - self.horizon_ms)
                    for f, (name, value) in enumerate(
                        zip(kernel.novelty_fields, op[6], strict=True)
                    ):
                        values[e, col0 + f] = (
                            0.0
                            if value is None
                            else float(h.observe(name, value, t_ms, self.max_seen))
                        )
                    if t > max_t:
                        max_t = t
                start += sizes[g]
                seen_out.append(orjson.dumps(h.seen) if h.seen else b"")
        else:
            for i in members:
                raw_seen = rec.seen(i)
                seen_out.append(raw_seen)
        cols.seen = seen_out
        out = result.values
        for op, row in zip(ev_ops, values.tolist(), strict=True):
            out.append((op[3], op[1], row))
        self.stats.tx_ops += len(ev_ops)
        self.stats.columnar_ops += len(ev_ops)
        return dict(zip((candidates[i] for i in members), encode_many(cols), strict=True))

    def _apply_sequential(self, ops: list[tuple[Any, ...]], result: ProcessResult) -> None:
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
        applied_before = len(out)
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
        stats.tx_ops += len(out) - applied_before
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
