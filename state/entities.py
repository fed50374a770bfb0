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
from fraudstream.state.columnar import Plan, Records, Rewrite, _SpanError, evaluate
from fraudstream.state.features import FeatureSet
from fraudstream.state.history import (
    HISTORY_FORMAT,
    History,
    InPlace,
    decode,
    encode,
    newest_event_ms,
)
from fraudstream.state.kernel import ENTITY_PREFIX, Kernel
from fraudstream.state.ops import OP_TX, OpBatch

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
    in_place_ops: int = 0  # per-op path ops applied to a record in place (InPlace)
    budget_cuts: int = 0  # columnar groups cut at their bucket budget (coarsened per op)
    label_cuts: int = 0  # columnar groups cut at a fraud op (applied per op)


Block = tuple[int, np.ndarray, np.ndarray]


@dataclass
class ProcessResult:
    """``blocks``: per plan, ``(plan, op positions, values)``: the feature values (one row per
    transaction op applied, positions into the batch given to :meth:`EntityPartition.process`);
    ``errors``: ``(op, reason)`` per op that failed (its transaction gets no decision)."""

    blocks: list[Block] = field(default_factory=list)
    errors: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)
    tx_ids: list[str | None] = field(default_factory=list)

    @property
    def values(self) -> list[tuple[str, int, list[float]]]:
        """``(tx_id, plan, features)`` per transaction op applied, in op order."""
        rows: list[tuple[int, int, list[float]]] = []
        for plan, pos, vals in self.blocks:
            rows += zip(pos.tolist(), [plan] * len(pos), vals.tolist(), strict=True)
        rows.sort(key=lambda r: r[0])
        ids = self.tx_ids
        return [(ids[i], plan, v) for i, plan, v in rows]  # type: ignore[misc]


class EntityPartition:
    """Applies entity ops in order against one store, through a write-back cache.

    Histories stay cached (up to ``cache_entries``, least recently used evicted first), encoded
    (the columnar kernel reads and writes the encoded bytes directly) or, with ``keep_decoded``,
    as :class:`History` objects applied one op at a time (the per-op reference path, for tests);
    changed ones are written in one atomic batch by :meth:`flush`, which the owner calls before
    every :meth:`EpochStore.commit_epoch`. Between flushes the store holds the contents of the
    last flush, which is all a resume needs: the undo log rolls the store back to the snapshot
    and the input is replayed from there. An eviction flushes early, which the undo log covers
    the same way.

    A batch (or the part of it between two sweeps) with at least ``columnar_min_ops`` ops takes
    the columnar kernel for every entity that qualifies (:mod:`fraudstream.state.columnar`), the
    per-op path for the others; smaller ones take the per-op path (a few numpy calls cost more
    than a handful of ops). Both give identical results.
    """

    #: columnar rounds per batch at most, and the ops a group must take in a round (after the
    #: first) to be tried again in the next: a compromised terminal has a label for nearly
    #: every event, and a round costs a few hundred microseconds
    MAX_ROUNDS = 64
    MIN_PROGRESS = 8

    def __init__(
        self,
        fs: FeatureSet,
        store: EpochStore,
        *,
        sweep_every_ms: int | None = None,
        cache_entries: int = 4096,
        keep_decoded: bool = False,
        columnar_min_ops: int = 32,
    ):
        if cache_entries < 1:
            raise ValueError("cache_entries must be >= 1")
        self.fs = fs
        self.store = store
        self.kernels = [Kernel(fs, i) for i in range(len(fs.plans))]
        self.res = fs.resolution_ms
        self.horizon_ms = fs.horizon_ms()
        # Buckets are kept for the plan's own longest look-back (plus the allowed lateness): the
        # default set's merchant and IP windows end at 24 h where its horizon is 37 days, and
        # records held for the set's horizon are copied every batch and coarsened when hot. A
        # plan with a recency feature keeps the set's horizon (the time since the previous event
        # reads the newest bucket, however old); seen values always do.
        self.horizons = np.array(
            [
                (fs.horizon_ms() if p.recency else p.horizon_ms() + fs.allowed_lateness_ms)
                // fs.resolution_ms
                for p in fs.plans
            ],
            dtype=np.int64,
        )
        self.max_buckets = fs.max_buckets
        self.max_seen = fs.max_seen_values
        self.units_per_s = 1000.0 / fs.resolution_ms
        self.sweep_every_ms = sweep_every_ms
        self.cache_entries = cache_entries
        self.keep_decoded = keep_decoded
        # Encoded histories (bytes are invisible to the cyclic GC, and the columnar kernel reads
        # them as one buffer), or decoded ones for the per-op reference path.
        self._cache: dict[bytes, Any] = {}
        self._dirty: set[bytes] = set()
        # The store's value of every cached key (the undo log's "before"), when undo is logged.
        self._stored: dict[bytes, bytes | None] | None = {} if store.log_undo else None
        (raw,) = store.get_many([_META_SWEEP])
        self._last_sweep_ms: int | None = None if raw is None else _I64.unpack(raw)[0]
        self.stats = PartitionStats()
        # the columnar kernel's description of each plan (None: a plan it does not cover)
        self._plans = [_columnar_plan(k, p) for k, p in zip(self.kernels, fs.plans, strict=True)]
        self._unsupported = np.array([p is None for p in self._plans], dtype=bool)
        self._prefixes = [k.key_prefix for k in self.kernels]
        self.columnar_min_ops = columnar_min_ops

    # ----------------------------------------------------------------------------- ops
    def process(self, ops: OpBatch | Iterable[tuple[Any, ...]]) -> ProcessResult:
        """Apply ops in order; see :class:`ProcessResult`."""
        batch = ops if isinstance(ops, OpBatch) else OpBatch.from_ops(ops)
        result = ProcessResult(tx_ids=batch.tx_id)
        rows: list[tuple[int, int, list[float]]] = []  # from the per-op path
        n = len(batch)
        start = 0
        every = self.sweep_every_ms
        if every and n:
            clocks = batch.clock_ms
            last = self._last_sweep_ms
            if last is None or int(clocks.max()) - last >= every:
                for i, clock in enumerate(clocks.tolist()):
                    if self._last_sweep_ms is None:
                        # the first op starts the sweep schedule; stored so that a resume keeps it
                        self._last_sweep_ms = clock
                        self.store.write({_META_SWEEP: _I64.pack(clock)}, {_META_SWEEP: None})
                    elif clock - self._last_sweep_ms >= every:
                        self._apply(batch, start, i, result, rows)
                        self._sweep(clock)
                        start = i
        self._apply(batch, start, n, result, rows)
        if rows:
            by_plan: dict[int, list[tuple[int, list[float]]]] = {}
            for pos, plan, values in rows:
                by_plan.setdefault(plan, []).append((pos, values))
            for plan, got in by_plan.items():
                result.blocks.append(
                    (
                        plan,
                        np.fromiter((p for p, _ in got), dtype=np.int64, count=len(got)),
                        np.array([v for _, v in got], dtype=np.float64).reshape(len(got), -1),
                    )
                )
        if len(self._cache) > self.cache_entries:
            self._evict()
        return result

    def _apply(
        self,
        batch: OpBatch,
        lo: int,
        hi: int,
        result: ProcessResult,
        rows: list[tuple[int, int, list[float]]],
    ) -> None:
        """Route each entity's ops to the columnar kernel or the per-op path (same results)."""
        if lo >= hi:
            return
        if self.keep_decoded or hi - lo < self.columnar_min_ops:
            self._apply_sequential([batch.op(i) for i in range(lo, hi)], lo, result, rows)
            return
        todo = np.arange(lo, hi, dtype=np.int64)
        rounds = 0
        while len(todo):
            # A group is cut at its first fraud op, or at the op that would take it past its
            # bucket budget (and coarsen it): the per-op path applies that op, the kernel the
            # rest in the next round. Terminals with a label in the batch and popular online
            # merchants used to take the per-op path for the whole batch.
            if len(todo) < self.columnar_min_ops or rounds == self.MAX_ROUNDS:
                seq, todo = todo, todo[:0]
            else:
                seq, todo = self._columnar(batch, todo, result, rounds == 0)
                rounds += 1
            if len(seq):
                pos = seq.tolist()
                self._apply_sequential([batch.op(i) for i in pos], pos, result, rows)

    def _load(self, keys: list[bytes]) -> list[bytes]:
        """Encoded histories of ``keys`` (cache, else store, else a new empty one)."""
        cache = self._cache
        out: list[bytes | None] = []
        missing = []
        pop = cache.pop
        for i, key in enumerate(keys):
            value = pop(key, None)
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
        self, batch: OpBatch, todo: np.ndarray, result: ProcessResult, first_round: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate the ops ``todo`` (positions, in order) of every entity that qualifies
        (module docstring of state.columnar); return the positions of the ops for the per-op
        path and of those to try again after it (a group cut at a fraud op or at its bucket
        budget), in order."""
        nothing = todo[:0]
        lo, n_todo = int(todo[0]), len(todo)
        plans = batch.plan[todo]
        if int(todo[-1]) - lo + 1 == n_todo:  # a range: the first round
            entities = batch.entity[lo : lo + n_todo]
        else:
            entities = [batch.entity[i] for i in todo.tolist()]
        prefixes = self._prefixes
        keys = [prefixes[p] + e.encode() for p, e in zip(plans.tolist(), entities, strict=True)]
        ids: dict[bytes, int] = {}
        gid = np.fromiter(
            (ids.setdefault(k, len(ids)) for k in keys), dtype=np.int64, count=len(keys)
        )
        g_count = len(ids)
        g_plan = np.empty(g_count, dtype=np.int64)
        g_plan[gid] = plans
        bad = self._unsupported[g_plan]
        # groups sorted by plan, in order of first op within a plan; events by group, in op order
        g_order = np.argsort(g_plan, kind="stable")
        g_order = g_order[~bad[g_order]]
        if not len(g_order):
            return todo, nothing
        new_id = np.full(g_count, -1, dtype=np.int64)
        new_id[g_order] = np.arange(len(g_order), dtype=np.int64)
        ev_group_all = new_id[gid]
        ev_pos = np.flatnonzero(ev_group_all >= 0)
        ev_pos = ev_pos[np.argsort(ev_group_all[ev_pos], kind="stable")]
        ev_group = ev_group_all[ev_pos]
        ukeys = list(ids)
        raws = self._load([ukeys[g] for g in g_order.tolist()])
        rec = Records(raws)
        res = self.res
        abs_pos = todo[ev_pos]
        ev_tms = batch.t_ms[abs_pos]
        ev_t = ev_tms // res
        g_n = len(g_order)
        m = np.bincount(ev_group, minlength=g_n)
        first = np.cumsum(m) - m
        # Each group's ops from its first fraud op on are cut (the per-op path applies that op,
        # the next round the rest); the others, a prefix of the group, are "live"
        cut = batch.kind[abs_pos] != OP_TX
        if cut.any():
            frauds = np.cumsum(cut)  # fraud ops up to each op, all groups
            cut = frauds - (frauds - cut)[first][ev_group] > 0
            self.stats.label_cuts += int(np.count_nonzero(cut[first + m - 1]))
        live = ~cut
        m_live = np.bincount(ev_group[live], minlength=g_n)
        last = first + np.maximum(m_live, 1) - 1
        # qualification of the live ops (module docstring of state.columnar)
        fail = np.zeros(g_n, dtype=bool)
        if len(ev_t) > 1:
            back = np.flatnonzero(ev_t[1:] < ev_t[:-1]) + 1
            back = back[(ev_group[back] == ev_group[back - 1]) & live[back]]
            fail[ev_group[back]] = True
        fail |= live[first] & (ev_t[first] < rec.max_t)
        fail |= ev_t[last] - ev_t[first] >= self.horizons[g_plan[g_order]]
        keep_e = live & ~fail[ev_group]
        if (rec.n + m_live > self.max_buckets).any():
            # Live events past the bucket budget (counted without pruning and without the first
            # event's merge into the newest stored bucket: never fewer than the per-op path's)
            # are cut too: the per-op path coarsens the record at the first of them.
            new_bucket = np.ones(len(ev_t), dtype=bool)
            new_bucket[1:] = (ev_t[1:] != ev_t[:-1]) | (ev_group[1:] != ev_group[:-1])
            buckets = np.cumsum(new_bucket)  # new buckets up to each op, all groups
            base = rec.n - (buckets - new_bucket)[first]
            over = keep_e & (base[ev_group] + buckets > self.max_buckets)
            if over.any():
                self.stats.budget_cuts += len(np.unique(ev_group[over]))
                keep_e &= ~over
                cut |= over
        retry = nothing
        cut &= ~fail[ev_group]
        if cut.any():
            later = cut.copy()
            if not first_round:
                # a group that took few ops this round (labels close together; or pruning kept
                # it at its budget, so no coarsening) takes the per-op path for the rest
                took = np.bincount(ev_group[keep_e], minlength=g_n)
                later &= (took >= self.MIN_PROGRESS)[ev_group]
            later[first] = False
            later[1:] &= cut[:-1]  # not the group's first cut op: the per-op path applies it
            retry = np.sort(todo[ev_pos[later]])
        if not keep_e.all():
            m_kept = np.bincount(ev_group[keep_e], minlength=g_n)
            keep_g = np.flatnonzero(m_kept)
            if not len(keep_g):
                return self._rest(todo, nothing, retry), retry
            renum = np.full(g_n, -1, dtype=np.int64)
            renum[keep_g] = np.arange(len(keep_g), dtype=np.int64)
            ev_pos, ev_group = ev_pos[keep_e], renum[ev_group[keep_e]]
            abs_pos, ev_tms, ev_t = abs_pos[keep_e], ev_tms[keep_e], ev_t[keep_e]
            g_order = g_order[keep_g]
            rec = rec.take(keep_g)
            m = m_kept[keep_g]
            first = np.cumsum(m) - m
            last = first + m - 1
        g_plan_k = g_plan[g_order]
        clocks = batch.clock_ms[abs_pos] // res
        try:
            out, rewrite = evaluate(
                self._plans,
                rec,
                g_plan_k,
                ev_group,
                ev_t,
                ev_tms,
                batch.amount[abs_pos],
                clocks[first],
                clocks[last],
                self.horizons[g_plan_k],
            )
            for p, (a, b, values) in out.items():
                if self._plans[p].n_novelty:
                    self._novelty(p, values, a, b, rewrite, g_plan_k, first, m, batch, abs_pos)
        except _SpanError:
            return todo, nothing
        except Exception:  # the per-op path redoes these groups (nothing was applied yet)
            self.stats.columnar_fallbacks += 1
            return todo, nothing
        encoded = rewrite.encode()
        cache = self._cache
        done_keys = [ukeys[g] for g in g_order.tolist()]
        cache.update(zip(done_keys, encoded, strict=True))
        self._dirty.update(done_keys)
        for p, (a, b, values) in out.items():
            result.blocks.append((p, abs_pos[a:b], values))
        n_ev = len(ev_pos)
        self.stats.tx_ops += n_ev
        self.stats.columnar_ops += n_ev
        if n_ev == n_todo:
            return nothing, nothing
        return self._rest(todo, abs_pos, retry), retry

    @staticmethod
    def _rest(todo: np.ndarray, done: np.ndarray, retry: np.ndarray) -> np.ndarray:
        """The positions of ``todo`` in neither ``done`` nor ``retry``, in order."""
        rest = np.ones(len(todo), dtype=bool)
        rest[np.searchsorted(todo, done)] = False
        rest[np.searchsorted(todo, retry)] = False
        return todo[rest]

    def _novelty(
        self,
        plan_index: int,
        values: np.ndarray,
        a: int,
        b: int,
        rewrite: Rewrite,
        g_plan: np.ndarray,
        first: np.ndarray,
        m: np.ndarray,
        batch: OpBatch,
        abs_pos: np.ndarray,
    ) -> None:
        """Novelty flags of the plan's events ``[a, b)`` (per event, in Python: small dicts of
        seen values), and the entities' new seen values."""
        kernel = self.kernels[plan_index]
        plan = self._plans[plan_index]
        assert plan is not None
        col0 = plan.novelty_col
        res, horizon_ms, max_seen = self.res, self.horizon_ms, self.max_seen
        names = kernel.novelty_fields
        g0, g1 = np.searchsorted(g_plan, [plan_index, plan_index + 1]).tolist()
        novelty = batch.novelty
        pos = abs_pos.tolist()
        t_ms_all = batch.t_ms[abs_pos].tolist()
        clock_all = (batch.clock_ms[abs_pos] // res).tolist()
        firsts, counts = first.tolist(), m.tolist()
        flags = np.zeros((b - a, len(names)))
        max_ts = rewrite.rec.max_t.tolist()
        seen = rewrite.seen
        for g in range(g0, g1):
            raw_seen = seen[g]
            h = History.__new__(History)
            h.seen = orjson.loads(raw_seen) if raw_seen else {}
            max_t = max_ts[g]
            for e in range(firsts[g], firsts[g] + counts[g]):
                t_ms = t_ms_all[e]
                t = t_ms // res
                ref = t if t > max_t else max_t
                clock = clock_all[e]
                if clock < ref:
                    ref = clock
                if h.seen:
                    h.prune_seen(ref * res - horizon_ms)
                row = flags[e - a]
                for f, value in enumerate(novelty[pos[e]]):
                    if value is not None:
                        row[f] = h.observe(names[f], value, t_ms, max_seen)
                if t > max_t:
                    max_t = t
            seen[g] = orjson.dumps(h.seen) if h.seen else b""
        values[:, col0 : col0 + len(names)] = flags

    def _apply_sequential(
        self,
        ops: list[tuple[Any, ...]],
        positions: int | list[int],
        result: ProcessResult,
        rows: list[tuple[int, int, list[float]]],
    ) -> None:
        """The per-op path: ``ops[i]`` is op ``positions[i]`` of the batch (or ``positions + i``);
        its features go to ``rows`` as ``(position, plan, values)``."""
        if not ops:
            return
        if isinstance(positions, int):
            positions = list(range(positions, positions + len(ops)))
        kernels = self.kernels
        cache = self._cache
        op_keys = [kernels[op[1]].key_prefix + op[2].encode() for op in ops]
        # Encoded cache: records are read in place where they can be (InPlace: no decode, no
        # encode; measured ~6 us per entity and batch saved), decoded where they cannot.
        hist: dict[bytes, Any] = cache if self.keep_decoded else {}
        missing = []
        unique = dict.fromkeys(op_keys)
        for key in unique:
            value = cache.pop(key, None)
            if value is None:
                missing.append(key)
            else:
                cache[key] = value  # most recently used last
                if not self.keep_decoded:
                    hist[key] = InPlace.open(value) or decode(value)
        self.stats.cache_misses += len(missing)
        self.stats.cache_hits += len(unique) - len(missing)
        if missing:
            stored = self._stored
            for key, raw in zip(missing, self.store.get_many(missing), strict=True):
                if self.keep_decoded:
                    hist[key] = decode(raw) if raw is not None else History()
                else:
                    hist[key] = InPlace.open(_EMPTY if raw is None else raw) or decode(raw)
                if stored is not None:
                    stored[key] = raw
        applied_before = len(rows)
        in_place = 0
        res, horizons, horizon_ms = self.res, self.horizons.tolist(), self.horizon_ms
        max_buckets = self.max_buckets
        stats = self.stats
        for n, (op, key) in enumerate(zip(ops, op_keys, strict=True)):
            k = kernels[op[1]]
            h = hist[key]
            try:
                if op[0] == OP_TX:
                    _, _, _, _, t_ms, amount, novelty, clock_ms = op
                else:
                    t_ms, clock_ms = op[3], op[6]
                t = t_ms // res
                if type(h) is InPlace and (
                    op[0] != OP_TX or novelty or not h.takes(t, max_buckets)
                ):
                    h = hist[key] = h.history()
                ref = t if t > h.max_t else h.max_t
                clock = clock_ms // res
                if clock < ref:
                    ref = clock  # one outlier timestamp must not prune an entity's history
                cutoff = ref - horizons[op[1]]
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
                    if type(h) is InPlace:
                        in_place += 1
                    elif len(h.times) > max_buckets:
                        h.coarsen(max_buckets, self.units_per_s, clock)
                    rows.append((positions[n], op[1], values))
                else:  # OP_FRAUD
                    stats.fraud_ops += 1
                    label_ms, delta = op[4], op[5]
                    if t <= cutoff:
                        stats.fraud_ignored += 1
                    else:
                        h.add_fraud(t, label_ms, delta)
            except Exception as exc:  # one op must never stop the partition
                stats.errors += 1
                result.errors.append((op, f"{type(exc).__name__}: {exc}"[:300]))
                if not self.keep_decoded:
                    hist[key] = self._rebuild(key, ops, op_keys, n)
        stats.tx_ops += len(rows) - applied_before
        stats.in_place_ops += in_place
        if self.keep_decoded:
            self._dirty.update(op_keys)
        else:
            for key, h in hist.items():
                cache[key] = h.encode() if type(h) is InPlace else encode(h)
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
        scratch._apply_sequential(earlier, 0, probe, [])
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
