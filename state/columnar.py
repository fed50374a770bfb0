"""The columnar kernel: every plan of a partition's batch evaluated with a few hundred numpy calls.

The per-op kernel (:mod:`fraudstream.state.kernel`) costs tens of microseconds of Python per op;
here a whole batch (all plans, all entities, all events) costs a fixed number of numpy calls plus
a few dictionary operations per entity:

1. **Decode** every touched history at once. Records are multiples of 8 bytes (format 3), so the
   batch's records joined end to end are one int64 buffer; headers and columns are gathered with
   index arithmetic (:class:`Records`).
2. **Accumulate** each entity's new events exactly as one-by-one adds would: the prefix sums are
   continued with ``np.add.accumulate`` along the rows of a (entities x events) matrix, which adds
   left to right like the sequential code, and the TwoSum errors are computed elementwise.
   Entities are grouped by their number of events (powers of two) so that a hot entity does not
   pad every other row. The results are bit for bit those of :meth:`History.add`.
3. **Evaluate** every window of every event of every plan: the combined timelines of all entities
   (stored buckets plus the batch's new buckets) are laid out flat with keys
   ``entity * span + time``, so one ``searchsorted`` per distinct look-back finds that look-back's
   lower bound for every event of the batch; the upper bound of event ``k`` is the prefix
   *before* it (its entity's earlier events included). The arithmetic is the per-op kernel's, on
   the same values, so features are bit for bit identical. Delayed fraud counts pair each event
   with its entity's fraud entries (few: labels are rare) and sum with ``bincount``.
4. **Encode** the new histories: each new record is one gather from the old records (the
   buckets that survive pruning are contiguous) and the batch's new values (:class:`Rewrite`).

Which entities qualify (the others take the per-op path, with identical results) is decided by
the caller (:mod:`fraudstream.state.entities`): a plan without ``max``; no fraud op for the entity
in the batch; its events in time order, none older than its newest stored event; no coarsening;
the batch's events spanning less than the horizon. In a live stream or a replay in order that is
nearly every entity. Novelty flags (small dictionaries of seen values) stay per event in Python,
in the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Plan", "Records", "Rewrite", "SpanError", "evaluate", "ranges"]

_HDR_WORDS = 4
_LOW32 = np.int64(0xFFFFFFFF)
_FORMAT = 3
_POW2 = 2 ** np.arange(1, 63, dtype=np.int64)
_EMPTY_I = np.empty(0, dtype=np.int64)


def ranges(offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``concatenate([arange(o, o + n) for o, n in zip(offs, lens)])`` without a Python loop."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return _EMPTY_I
    firsts = np.cumsum(lens) - lens
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(offs, np.int64) - firsts, lens)


class Records:
    """G encoded histories (format 3) read as columns; offsets are in 8-byte words."""

    def __init__(self, raws: Sequence[bytes]) -> None:
        joined = b"".join(raws)
        self.w = np.frombuffer(joined, dtype=np.int64)
        self.f = self.w.view(np.float64)
        words = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws)) >> 3
        self.start = np.cumsum(words) - words
        hdr = self.w[self.start[:, None] + np.arange(_HDR_WORDS)]
        if len(raws) and ((hdr[:, 0] & _LOW32) != _FORMAT).any():
            raise ValueError("entity record of another format in the batch")
        self.seen_len = hdr[:, 0] >> 32
        self.last_ms = hdr[:, 1].copy()
        self.max_t = hdr[:, 2].copy()
        self.n = hdr[:, 3] & _LOW32
        self.nf = hdr[:, 3] >> 32
        n, nf = self.n, self.nf
        self.o_times = self.start + _HDR_WORDS
        self.o_cum = [self.o_times + n + k * (n + 1) for k in range(5)]  # cc cs cs_lo cq cq_lo
        self.o_maxs = self.o_times + n + 5 * (n + 1)
        self.o_f = [self.o_maxs + n + k * nf for k in range(3)]  # f_time f_label_ms f_delta
        self.o_seen = self.o_maxs + n + 3 * nf
        self.raws = raws

    def take(self, rows: np.ndarray) -> Records:
        """The records ``rows`` (same buffer: offsets stay valid)."""
        sub = Records.__new__(Records)
        sub.w, sub.f = self.w, self.f
        for name in ("start", "seen_len", "last_ms", "max_t", "n", "nf", "o_times", "o_maxs"):
            setattr(sub, name, getattr(self, name)[rows])
        sub.o_cum = [o[rows] for o in self.o_cum]
        sub.o_f = [o[rows] for o in self.o_f]
        sub.o_seen = self.o_seen[rows]
        sub.raws = [self.raws[i] for i in rows.tolist()]
        return sub

    def seen(self, i: int) -> bytes:
        """The raw seen-values JSON of record ``i`` (empty when it has none)."""
        size = int(self.seen_len[i])
        if not size:
            return b""
        off = int(self.o_seen[i]) * 8 - int(self.start[i]) * 8
        return self.raws[i][off : off + size]

    def seen_all(self) -> list[bytes]:
        """:meth:`seen` of every record (most have none)."""
        out = [b""] * len(self.raws)
        for i in np.flatnonzero(self.seen_len).tolist():
            out[i] = self.seen(i)
        return out


def _std(c: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``kernel._std`` elementwise: 0 below two events or for a non-positive variance."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / c
        var = q / c - mean * mean
        out = np.sqrt(np.where(var > 0, var, 1.0))
    return np.where((c >= 2) & (var > 0), out, 0.0)


@dataclass
class Plan:
    """What :func:`evaluate` needs of one plan (a :class:`~fraudstream.state.kernel.Kernel`)."""

    wins: list[int]
    aggs: tuple[str, ...]
    include_current: bool
    zwin: int | None
    recency: bool
    n_novelty: int
    delay: int
    delayed_los: list[int]
    delayed_outputs: tuple[str, ...]
    sec_per_unit: float

    @property
    def width(self) -> int:
        return (
            len(self.wins) * len(self.aggs)
            + (self.zwin is not None)
            + self.recency
            + self.n_novelty
            + len(self.delayed_los) * len(self.delayed_outputs)
        )

    @property
    def novelty_col(self) -> int:
        """Index of the first novelty column."""
        return self.width - self.n_novelty - len(self.delayed_los) * len(self.delayed_outputs)


class _Chains:
    """Prefix sums of amounts and squared amounts continued event by event (see module doc):
    per event, the double-double prefix *after* it."""

    def __init__(
        self,
        base: list[np.ndarray],
        amt: np.ndarray,
        first: np.ndarray,
        m: np.ndarray,
        rank: np.ndarray,
    ) -> None:
        e_count = len(amt)
        a2 = amt * amt
        self.s_hi = np.empty(e_count)
        self.s_lo = np.empty(e_count)
        self.q_hi = np.empty(e_count)
        self.q_lo = np.empty(e_count)
        if not e_count:
            return
        # rows grouped by size class (m <= 2**k), so a hot entity does not pad every other row
        cls = np.searchsorted(_POW2, m)
        order = np.argsort(cls, kind="stable")
        bounds = np.flatnonzero(np.diff(cls[order])) + 1
        for gs in np.split(order, bounds.tolist()):
            width = int(_POW2[cls[gs[0]]]) + 1
            mg = m[gs]
            ev = ranges(first[gs], mg)
            row = np.repeat(np.arange(len(gs), dtype=np.int64), mg)
            col = rank[ev] + 1
            x = np.zeros((2, len(gs), width))
            x[0, :, 0] = base[1][gs]
            x[1, :, 0] = base[3][gs]
            x[0, row, col] = amt[ev]
            x[1, row, col] = a2[ev]
            hi = np.add.accumulate(x, axis=2)
            bp = hi[:, :, 1:] - hi[:, :, :-1]
            err = np.empty_like(x)
            err[0, :, 0] = base[2][gs]
            err[1, :, 0] = base[4][gs]
            err[:, :, 1:] = (hi[:, :, :-1] - (hi[:, :, 1:] - bp)) + (x[:, :, 1:] - bp)
            lo = np.add.accumulate(err, axis=2)
            self.s_hi[ev] = hi[0, row, col]
            self.q_hi[ev] = hi[1, row, col]
            self.s_lo[ev] = lo[0, row, col]
            self.q_lo[ev] = lo[1, row, col]


class SpanError(ValueError):
    """Times of a batch too far apart for the flat keys (the caller takes the per-op path)."""


class Rewrite:
    """The batch's entities' new records, encoded once their seen values are final
    (:meth:`encode`): each record is gathered in one pass from its old record (the buckets that
    survive pruning, contiguous) and the batch's new values (header, new buckets, fraud entries,
    seen values)."""

    def __init__(self, rec: Records, seen: list[bytes], **parts: np.ndarray) -> None:
        self.rec = rec
        self.seen = seen
        self.parts = parts

    def encode(self) -> list[bytes]:
        """Format-3 records (bit for bit :func:`~fraudstream.state.history.encode`)."""
        rec, p = self.rec, self.parts
        g_count = len(rec.n)
        seen = self.seen
        seen_len = np.fromiter(map(len, seen), dtype=np.int64, count=g_count)
        seen_words = (seen_len + 7) >> 3
        ks, nb, d_s, r_off, nf = p["ks"], p["nb"], p["d_s"], p["r_off"], p["nf"]
        n_new = ks + nb
        hdr = np.empty((g_count, _HDR_WORDS), dtype=np.int64)
        hdr[:, 0] = _FORMAT | (seen_len << 32)
        hdr[:, 1] = p["last_ms"]
        hdr[:, 2] = p["max_t"]
        hdr[:, 3] = n_new | (nf << 32)
        runs = len(p["run_times"])
        frauds = len(p["f_time"])
        new_parts = [hdr.ravel(), p["run_times"]]
        new_parts += [e.view(np.int64) for e in p["run_end"]]
        new_parts += [p["run_max"].view(np.int64), p["f_time"], p["f_label"], p["f_delta"]]
        if seen_len.any():
            padded = b"".join(x + b" " * (-len(x) % 8) for x in seen)
            new_parts.append(np.frombuffer(padded, dtype=np.int64))
        source = np.concatenate([rec.w, *new_parts])
        base = len(rec.w)
        gidx = np.arange(g_count, dtype=np.int64)
        f_first = np.cumsum(nf) - nf
        s_first = np.cumsum(seen_words) - seen_words
        o_new = base + _HDR_WORDS * g_count
        starts = [base + _HDR_WORDS * gidx, rec.o_times + d_s, o_new + r_off]
        lens = [np.full(g_count, _HDR_WORDS, dtype=np.int64), ks, nb]
        for k in range(5):
            starts += [rec.o_cum[k] + d_s, o_new + runs * (1 + k) + r_off]
            lens += [ks + 1, nb]
        starts += [rec.o_maxs + d_s, o_new + runs * 6 + r_off]
        lens += [ks, nb]
        o_f = o_new + runs * 7
        for j in range(3):
            starts.append(o_f + frauds * j + f_first)
            lens.append(nf)
        starts.append(o_f + frauds * 3 + s_first)
        lens.append(seen_words)
        start_m = np.stack(starts, axis=1)
        len_m = np.stack(lens, axis=1)
        out = source[ranges(start_m.ravel(), len_m.ravel())]
        bounds = (np.cumsum(len_m.sum(axis=1)) * 8).tolist()
        raw = out.tobytes()
        return [raw[a:b] for a, b in zip([0, *bounds], bounds, strict=False)]


def evaluate(
    plans: Sequence[Plan | None],
    rec: Records,
    g_plan: np.ndarray,
    ev_group: np.ndarray,
    ev_t: np.ndarray,
    ev_tms: np.ndarray,
    ev_amt: np.ndarray,
    clock_first: np.ndarray,
    clock_last: np.ndarray,
    horizon: int,
) -> tuple[dict[int, tuple[int, int, np.ndarray]], Rewrite]:
    """Features of every event and the entities' new records (see the module docstring).

    Group ``g`` is record ``g`` of ``rec``; groups are sorted by plan (``g_plan``), events by
    group, in op order within a group; times are in resolution units; ``clock_first`` and
    ``clock_last`` are each group's maintenance clock at its first and last op, in resolution
    units. Returns, per plan present, ``(first_event, end_event, values)`` (the plan's events are
    the contiguous range ``[first_event, end_event)``), and the new records to encode. Novelty
    columns are left as NaN: the caller fills them and the new seen values
    (``Rewrite.seen``, the stored ones until then).
    """
    g_count = len(g_plan)
    e_count = len(ev_t)
    gidx = np.arange(g_count, dtype=np.int64)
    m = np.bincount(ev_group, minlength=g_count).astype(np.int64)
    first = np.cumsum(m) - m  # index of each group's first event
    rank = np.arange(e_count, dtype=np.int64) - first[ev_group]
    last = first + m - 1
    t_first, t_last = ev_t[first], ev_t[last]

    n0 = rec.n
    max_t = rec.max_t
    o_times = rec.o_times
    h_times = rec.w[ranges(o_times, n0)]
    # flat keys: entity * span + (time - t0); look-ups are clipped to [-1, span - 2]
    t_min = int(ev_t.min()) if e_count else 0
    t_max = int(ev_t.max()) if e_count else 0
    if len(h_times):
        t_min = min(t_min, int(h_times.min()))
        t_max = max(t_max, int(h_times.max()))
    span = t_max - t_min + 2
    if span * (g_count + 1) >= 2**62:
        raise SpanError("times too far apart for one batch")
    t0 = t_min
    h_keys = np.repeat(gidx * span, n0) + (h_times - t0)
    h_start = np.cumsum(n0) - n0

    def stored_le(t: np.ndarray) -> np.ndarray:
        """Per group: stored buckets at or before ``t``."""
        q = gidx * span + np.clip(t - t0, -1, span - 2)
        return np.searchsorted(h_keys, q, side="right") - h_start

    # prune before the first op (its reference time), as the per-op path does
    ref0 = np.minimum(np.maximum(t_first, max_t), clock_first)
    drop0 = stored_le(ref0 - horizon)
    n1 = n0 - drop0
    last_h_time = np.where(n0 > 0, rec.w[o_times + np.maximum(n0 - 1, 0)], np.int64(-(2**62)))
    merged = (n1 > 0) & (t_first == last_h_time)
    keep = n1 - merged  # stored buckets before the batch's first bucket

    # runs of events in the same time unit: the batch's buckets (the first may extend the last
    # stored bucket)
    run_start = np.ones(e_count, dtype=bool)
    run_start[1:] = (ev_t[1:] != ev_t[:-1]) | (rank[1:] == 0)
    run_first = np.flatnonzero(run_start)
    run_last = np.empty_like(run_first)
    run_last[:-1] = run_first[1:] - 1
    if len(run_last):
        run_last[-1] = e_count - 1
    run_group = ev_group[run_first]
    nb = np.bincount(run_group, minlength=g_count).astype(np.int64)
    r_off = np.cumsum(nb) - nb
    run_times = ev_t[run_first]
    r_keys = run_group * span + (run_times - t0)

    # prefix sums continued event by event, exactly as History.add adds (left to right)
    o_cum = rec.o_cum
    base = [rec.f[o + n0] for o in o_cum]  # the entry after the last stored bucket
    ch = _Chains(base, ev_amt, first, m, rank)
    not_first = rank > 0
    prev = np.maximum(np.arange(e_count, dtype=np.int64) - 1, 0)

    def before(after: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(not_first, after[prev], b[ev_group])

    u = [
        base[0][ev_group] + rank.astype(np.float64),
        before(ch.s_hi, base[1]),
        before(ch.s_lo, base[2]),
        before(ch.q_hi, base[3]),
        before(ch.q_lo, base[4]),
    ]
    run_end = [
        base[0][run_group] + (rank[run_last] + 1).astype(np.float64),
        ch.s_hi[run_last],
        ch.s_lo[run_last],
        ch.q_hi[run_last],
        ch.q_lo[run_last],
    ]

    # look-ups in each entity's combined timeline (kept stored buckets, then the batch's): the
    # prefix entry after the last bucket at or before t - back, per event
    g_key = ev_group * span
    e_hs = h_start[ev_group] + drop0[ev_group]
    e_keep = keep[ev_group]
    e_roff = r_off[ev_group]
    e_cum = [o[ev_group] + drop0[ev_group] for o in o_cum]
    looked: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def lower(back: int) -> tuple[np.ndarray, np.ndarray]:
        got = looked.get(back)
        if got is None:
            q = g_key + np.clip(ev_t - back - t0, -1, span - 2)
            cs = np.clip(np.searchsorted(h_keys, q, side="right") - e_hs, 0, e_keep)
            cr = np.searchsorted(r_keys, q, side="right") - e_roff
            got = looked[back] = (cs, cr)
        return got

    prefixes: dict[tuple[int, int], np.ndarray] = {}

    def prefix(back: int, k: int) -> np.ndarray:
        got = prefixes.get((back, k))
        if got is None:
            cs, cr = lower(back)
            stored = rec.f[e_cum[k] + cs]
            from_runs = run_end[k][np.maximum(e_roff + cr - 1, 0)]
            got = prefixes[(back, k)] = np.where(cr > 0, from_runs, stored)
        return got

    sums: dict[tuple[int, int], np.ndarray] = {}

    def window(back: int, what: int) -> np.ndarray:
        """0: count, 1: sum, 2: sum of squares of the buckets in ``(t - back, t]`` before the
        event (its own bucket's earlier events included)."""
        got = sums.get((back, what))
        if got is None:
            if what == 0:
                got = u[0] - prefix(back, 0)
            elif what == 1:
                got = (u[1] - prefix(back, 1)) + (u[2] - prefix(back, 2))
            else:
                got = (u[3] - prefix(back, 3)) + (u[4] - prefix(back, 4))
            sums[(back, what)] = got
        return got

    out: dict[int, tuple[int, int, np.ndarray]] = {}
    plan_ids = np.unique(g_plan).tolist()
    g_bounds = np.searchsorted(g_plan, [*plan_ids, np.iinfo(np.int64).max]).tolist()
    for k, p in enumerate(plan_ids):
        plan = plans[p]
        assert plan is not None
        g0, g1 = g_bounds[k], g_bounds[k + 1]
        a = int(first[g0])
        b = int(first[g1 - 1] + m[g1 - 1])
        sl = slice(a, b)
        amount = ev_amt[sl]
        cols: list[np.ndarray] = []
        cur = plan.include_current
        for w in plan.wins:
            c = window(w, 0)[sl]
            s = window(w, 1)[sl]
            if cur:
                c = c + 1.0
                s = s + amount
            if plan.aggs == ("count", "sum"):
                cols += (c, s)
                continue
            q = None
            for agg in plan.aggs:
                if agg == "count":
                    cols.append(c)
                elif agg == "sum":
                    cols.append(s)
                elif agg == "mean":
                    with np.errstate(divide="ignore", invalid="ignore"):
                        cols.append(np.where(c != 0, s / c, 0.0))
                else:  # std
                    if q is None:
                        q = window(w, 2)[sl]
                        if cur:
                            q = q + amount * amount
                    cols.append(_std(c, s, q))
        if plan.zwin is not None:
            c = window(plan.zwin, 0)[sl]
            s = window(plan.zwin, 1)[sl]
            q = window(plan.zwin, 2)[sl]
            sd = _std(c, s, q)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (amount - s / c) / sd
            cols.append(np.where((c >= 2) & (sd > 0), z, 0.0))
        if plan.recency:
            t = ev_t[sl]
            has_prev = not_first[sl]
            prev_t = np.where(has_prev, ev_t[prev[sl]], last_h_time[ev_group[sl]])
            has_prev = has_prev | (n1[ev_group[sl]] > 0)
            cols.append(np.where(has_prev, (t - prev_t) * plan.sec_per_unit, -1.0))
        for _ in range(plan.n_novelty):
            cols.append(np.full(b - a, np.nan))
        if plan.delayed_los:
            top = prefix(plan.delay, 0)[sl]
            fraud_groups = np.flatnonzero(rec.nf[g0:g1]) + g0
            for w in plan.delayed_los:
                c = top - prefix(plan.delay + w, 0)[sl]
                frauds = _fraud_counts(
                    rec, fraud_groups, first, m, ev_t, ev_tms, plan.delay, w, a, b - a
                )
                for o in plan.delayed_outputs:
                    if o == "delayed_count":
                        cols.append(c)
                    else:
                        with np.errstate(divide="ignore", invalid="ignore"):
                            cols.append(np.where(c != 0, frauds / c, 0.0))
        out[p] = (a, b, np.column_stack(cols))

    # the new records: pruned once more at the last op's reference time (only stored buckets
    # can go: the batch spans less than the horizon)
    ref_last = np.minimum(np.maximum(t_last, max_t), clock_last)
    cut = ref_last - horizon
    d_s = drop0 + np.minimum(stored_le(cut) - drop0, keep)
    ks = n0 - merged - d_s
    run_max = np.maximum.reduceat(ev_amt, run_first) if e_count else np.empty(0)
    merged_runs = np.flatnonzero(merged) + 0
    if len(merged_runs):
        first_runs = r_off[merged_runs]
        stored_last = rec.f[rec.o_maxs[merged_runs] + n0[merged_runs] - 1]
        run_max[first_runs] = np.maximum(stored_last, run_max[first_runs])
    nf = rec.nf
    if nf.any():
        f_pos = ranges(rec.o_f[0], nf)
        f_rep = np.repeat(nf, nf)
        f_time = rec.w[f_pos]
        keep_f = f_time > np.repeat(cut, nf)
        f_pos, f_rep = f_pos[keep_f], f_rep[keep_f]
        f_time, f_label, f_delta = f_time[keep_f], rec.w[f_pos + f_rep], rec.w[f_pos + 2 * f_rep]
        nf = np.bincount(np.repeat(gidx, nf)[keep_f], minlength=g_count).astype(np.int64)
    else:
        f_time = f_label = f_delta = _EMPTY_I
    new_last_ms = (
        np.maximum(rec.last_ms, np.maximum.reduceat(ev_tms, first)) if e_count else rec.last_ms
    )
    rewrite = Rewrite(
        rec,
        rec.seen_all(),
        ks=ks,
        nb=nb,
        d_s=d_s,
        r_off=r_off,
        nf=nf,
        last_ms=new_last_ms,
        max_t=np.maximum(max_t, t_last),
        run_times=run_times,
        run_end=run_end,  # type: ignore[arg-type]
        run_max=run_max,
        f_time=f_time,
        f_label=f_label,
        f_delta=f_delta,
    )
    return out, rewrite


def _fraud_counts(
    rec: Records,
    groups: np.ndarray,
    first: np.ndarray,
    m: np.ndarray,
    ev_t: np.ndarray,
    ev_tms: np.ndarray,
    delay: int,
    w: int,
    a: int,
    n: int,
) -> np.ndarray:
    """Net fraud labels in ``(t - delay - w, t - delay]`` known at each event's time, for the
    events ``[a, a + n)`` (``History.fraud_count``, every event paired with its entity's
    entries)."""
    out = np.zeros(n)
    if not len(groups):
        return out
    nf = rec.nf[groups]
    ev = ranges(first[groups], m[groups])  # events of entities with fraud entries
    per_ev = np.repeat(nf, m[groups])
    pair_ev = np.repeat(ev, per_ev)
    f_off = np.repeat(rec.o_f[0][groups], m[groups])
    pair_f = ranges(f_off, per_ev)
    ft = rec.w[pair_f]
    f_nf = np.repeat(per_ev, per_ev)  # the fraud columns are nf words apart
    fl = rec.w[pair_f + f_nf]
    fd = rec.w[pair_f + 2 * f_nf]
    hi = ev_t[pair_ev] - delay
    sel = (ft > hi - w) & (ft <= hi) & (fl <= ev_tms[pair_ev])
    counts = np.bincount(pair_ev[sel] - a, weights=fd[sel].astype(np.float64), minlength=n)
    return counts[:n]
