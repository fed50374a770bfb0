"""The columnar kernel: a batch of transaction ops evaluated with a few numpy calls per plan.

The per-op kernel (:mod:`fraudstream.state.kernel`) costs tens of microseconds of Python per op;
a partition's batch of hundreds of ops costs here a few dozen numpy calls per plan instead:

1. **Decode** every touched history at once. Records are multiples of 8 bytes (format 3), so the
   batch's records joined end to end are one int64 buffer; headers and columns are gathered with
   index arithmetic (:class:`Records`).
2. **Accumulate** each entity's new events exactly as one-by-one adds would: the prefix sums are
   continued with ``np.add.accumulate`` along rows of a (entities x events) matrix, which adds
   left to right like the sequential code, and the TwoSum errors are computed elementwise. The
   results are bit for bit those of :meth:`History.add`.
3. **Evaluate** every window of every event: each entity's combined timeline (history buckets
   plus the batch's new buckets) is laid out flat with keys ``entity * 2**32 + time``, so one
   ``searchsorted`` finds every window's lower bound; the upper bound of event ``k`` is the
   prefix *before* it (its entity's earlier events included). The arithmetic is the per-op
   kernel's, on the same values, so features are bit for bit identical.
4. **Encode** the new histories with the same index arithmetic (:func:`encode_many`).

Which groups qualify (the others take the per-op path, with identical results): a plan without
``max``; no fraud op for the entity in the batch; the entity's events in time order, none older
than its newest event already stored; fewer than ``max_buckets`` buckets after the batch (no
coarsening); the batch's events of the entity spanning less than the horizon. In a live stream
or a replay in order that is nearly every group. Novelty flags (dict lookups) and delayed fraud
counts (entities with fraud entries) stay per event in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Records", "encode_many", "ranges"]

_HDR_WORDS = 4
_LOW32 = np.int64(0xFFFFFFFF)
_FORMAT = 3
KEY_SHIFT = np.int64(1 << 32)


def ranges(offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``concatenate([arange(o, o + n) for o, n in zip(offs, lens)])`` without a Python loop."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    firsts = np.cumsum(lens) - lens
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(offs, np.int64) - firsts, lens)


class Records:
    """G encoded histories (format 3) read as columns; offsets are in 8-byte words."""

    def __init__(self, raws: Sequence[bytes]) -> None:
        joined = b"".join(raws)
        self.w = np.frombuffer(joined, dtype=np.int64)
        self.f = self.w.view(np.float64)
        words = np.fromiter((len(r) >> 3 for r in raws), dtype=np.int64, count=len(raws))
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

    def seen(self, i: int) -> bytes:
        """The raw seen-values JSON of record ``i`` (empty when it has none)."""
        size = int(self.seen_len[i])
        if not size:
            return b""
        off = int(self.o_seen[i]) * 8 - int(self.start[i]) * 8
        return self.raws[i][off : off + size]


@dataclass
class Columns:
    """New histories of G entities, flat: per entity a slice of each array."""

    last_ms: np.ndarray
    max_t: np.ndarray
    n: np.ndarray  # buckets per entity
    times: np.ndarray  # sum(n)
    cums: list[np.ndarray]  # 5 arrays, sum(n + 1)
    maxs: np.ndarray  # sum(n)
    nf: np.ndarray
    fraud: list[np.ndarray]  # 3 int64 arrays, sum(nf)
    seen: list[bytes]


def encode_many(c: Columns) -> list[bytes]:
    """Format-3 records of every entity of ``c`` (bit for bit :func:`history.encode`)."""
    g = len(c.n)
    n = c.n.astype(np.int64)
    nf = c.nf.astype(np.int64)
    seen_words = np.fromiter(((len(s) + 7) >> 3 for s in c.seen), dtype=np.int64, count=g)
    seen_len = np.fromiter((len(s) for s in c.seen), dtype=np.int64, count=g)
    words = _HDR_WORDS + n + 5 * (n + 1) + n + 3 * nf + seen_words
    start = np.cumsum(words) - words
    out = np.empty(int(words.sum()), dtype=np.int64)
    out[start] = _FORMAT | (seen_len << 32)
    out[start + 1] = c.last_ms
    out[start + 2] = c.max_t
    out[start + 3] = n | (nf << 32)
    fout = out.view(np.float64)
    pos = start + _HDR_WORDS
    out[ranges(pos, n)] = c.times
    pos = pos + n
    for cum in c.cums:
        fout[ranges(pos, n + 1)] = cum
        pos = pos + n + 1
    fout[ranges(pos, n)] = c.maxs
    pos = pos + n
    for col in c.fraud:
        out[ranges(pos, nf)] = col
        pos = pos + nf
    if seen_words.any():
        padded = b"".join(s + b" " * (-len(s) % 8) for s in c.seen)
        out[ranges(pos, seen_words)] = np.frombuffer(padded, dtype=np.int64)
    data = out.view(np.uint8)
    bounds = [*(start * 8).tolist(), len(data)]
    raw = data.tobytes()
    return [raw[bounds[i] : bounds[i + 1]] for i in range(g)]


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


def evaluate(
    plan: Plan,
    rec: Records,
    rows: np.ndarray,
    ev_group: np.ndarray,
    ev_t: np.ndarray,
    ev_tms: np.ndarray,
    ev_amt: np.ndarray,
    clock_first: np.ndarray,
    clock_last: np.ndarray,
    horizon: int,
) -> tuple[np.ndarray, Columns]:
    """Features of every event and the entities' new histories (see the module docstring).

    ``rows[g]`` is the record of group ``g``; events are sorted by group, in op order within a
    group, times in resolution units; ``clock_first``/``clock_last`` are each group's maintenance
    clock at its first and last op, in resolution units. Novelty columns are left as NaN (the
    caller fills them); ``Columns.seen`` is left empty.
    """
    g_count = len(rows)
    e_count = len(ev_t)
    gidx = np.arange(g_count, dtype=np.int64)
    m = np.bincount(ev_group, minlength=g_count).astype(np.int64)
    first = np.cumsum(m) - m  # index of each group's first event
    rank = np.arange(e_count, dtype=np.int64) - first[ev_group]
    last = first + m - 1
    t_first, t_last = ev_t[first], ev_t[last]

    n0 = rec.n[rows]
    max_t = rec.max_t[rows]
    o_times = rec.o_times[rows]
    # prune before the first op (its reference time), as the per-op path does
    ref0 = np.minimum(np.maximum(t_first, max_t), clock_first)
    h_times = rec.w[ranges(o_times, n0)]
    h_keys = np.repeat(gidx * KEY_SHIFT, n0) + h_times
    h_start = np.cumsum(n0) - n0
    drop0 = np.searchsorted(h_keys, gidx * KEY_SHIFT + (ref0 - horizon), side="right") - h_start
    n1 = n0 - drop0
    last_h_time = np.where(n1 > 0, rec.w[o_times + np.maximum(n0 - 1, 0)], np.int64(-(2**62)))
    merged = (n1 > 0) & (t_first == last_h_time)
    keep = n1 - merged

    # runs of events in the same time unit: the batch's buckets (the first may extend the last
    # stored bucket)
    run_start = np.ones(e_count, dtype=bool)
    run_start[1:] = (ev_t[1:] != ev_t[:-1]) | (rank[1:] == 0)
    run_first = np.flatnonzero(run_start)
    run_last = np.r_[run_first[1:] - 1, e_count - 1]
    run_group = ev_group[run_first]
    nb = np.bincount(run_group, minlength=g_count).astype(np.int64)

    # prefix sums continued event by event, exactly as History.add adds (left to right)
    width = int(m.max()) + 1 if e_count else 1
    o_cum = [o[rows] for o in rec.o_cum]
    base = [rec.f[o + n0] for o in o_cum]  # the entry after the last stored bucket
    amt = np.zeros((g_count, width))
    amt[ev_group, rank + 1] = ev_amt
    a2 = amt * amt
    chains = []
    for hi0, lo0, x in ((base[1], base[2], amt), (base[3], base[4], a2)):
        x[:, 0] = hi0
        hi = np.add.accumulate(x, axis=1)
        bp = hi[:, 1:] - hi[:, :-1]
        err = np.empty_like(x)
        err[:, 0] = lo0
        err[:, 1:] = (hi[:, :-1] - (hi[:, 1:] - bp)) + (x[:, 1:] - bp)
        chains.append((hi, np.add.accumulate(err, axis=1)))
    (s_hi, s_lo), (q_hi, q_lo) = chains
    before = (ev_group, rank)
    after = (ev_group, rank + 1)
    u_cc = base[0][ev_group] + rank.astype(np.float64)
    u = [u_cc, s_hi[before], s_lo[before], q_hi[before], q_lo[before]]
    end_ev = run_last
    run_end = [
        base[0][run_group] + (rank[end_ev] + 1).astype(np.float64),
        s_hi[after][end_ev],
        s_lo[after][end_ev],
        q_hi[after][end_ev],
        q_lo[after][end_ev],
    ]

    # combined timelines: kept stored buckets, then the batch's buckets
    clen = keep + nb
    c_start = np.cumsum(clen) - clen
    p_start = np.cumsum(clen + 1) - (clen + 1)
    c_times = np.empty(int(clen.sum()), dtype=np.int64)
    c_maxs = np.empty(len(c_times))
    src = ranges(o_times + drop0, keep)
    dst = ranges(c_start, keep)
    c_times[dst] = rec.w[src]
    c_maxs[dst] = rec.f[ranges(rec.o_maxs[rows] + drop0, keep)]
    run_rank = np.arange(len(run_first), dtype=np.int64) - (np.cumsum(nb) - nb)[run_group]
    run_dst = c_start[run_group] + keep[run_group] + run_rank
    c_times[run_dst] = ev_t[run_first]
    run_max = np.maximum.reduceat(ev_amt, run_first) if e_count else np.empty(0)
    merged_runs = merged[run_group] & (run_rank == 0)
    if merged_runs.any():
        stored_last = rec.f[rec.o_maxs[rows] + n0 - 1][run_group[merged_runs]]
        run_max[merged_runs] = np.maximum(stored_last, run_max[merged_runs])
    c_maxs[run_dst] = run_max
    p_src = ranges(o_cum[0] + drop0, keep + 1)
    p_dst = ranges(p_start, keep + 1)
    prefix = []
    for k in range(5):
        arr = np.empty(int((clen + 1).sum()))
        arr[p_dst] = rec.f[p_src + (o_cum[k] - o_cum[0])[np.repeat(gidx, keep + 1)]]
        arr[p_start[run_group] + keep[run_group] + 1 + run_rank] = run_end[k]
        prefix.append(arr)
    c_keys = np.repeat(gidx * KEY_SHIFT, clen) + c_times
    g_key = ev_group * KEY_SHIFT

    def lower(t: np.ndarray) -> np.ndarray:
        """Prefix index of the first combined bucket after ``t`` (per event)."""
        i = np.searchsorted(c_keys, g_key + t, side="right") - c_start[ev_group]
        return p_start[ev_group] + i

    out = np.full((e_count, plan.width), np.nan)
    col = 0
    amount = ev_amt
    cur = plan.include_current
    for w in plan.wins:
        pi = lower(ev_t - w)
        c = u[0] - prefix[0][pi]
        s = (u[1] - prefix[1][pi]) + (u[2] - prefix[2][pi])
        if cur:
            c = c + 1.0
            s = s + amount
        if plan.aggs == ("count", "sum"):
            out[:, col], out[:, col + 1] = c, s
            col += 2
            continue
        q = (u[3] - prefix[3][pi]) + (u[4] - prefix[4][pi])
        if cur:
            q = q + amount * amount
        for agg in plan.aggs:
            if agg == "count":
                out[:, col] = c
            elif agg == "sum":
                out[:, col] = s
            elif agg == "mean":
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[:, col] = np.where(c != 0, s / c, 0.0)
            else:  # std
                out[:, col] = _std(c, s, q)
            col += 1
    if plan.zwin is not None:
        pi = lower(ev_t - plan.zwin)
        c = u[0] - prefix[0][pi]
        s = (u[1] - prefix[1][pi]) + (u[2] - prefix[2][pi])
        q = (u[3] - prefix[3][pi]) + (u[4] - prefix[4][pi])
        sd = _std(c, s, q)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (amount - s / c) / sd
        out[:, col] = np.where((c >= 2) & (sd > 0), z, 0.0)
        col += 1
    if plan.recency:
        prev = np.empty(e_count, dtype=np.int64)
        prev[1:] = ev_t[:-1]
        has_prev = rank > 0
        at_first = ~has_prev
        prev[at_first] = last_h_time[ev_group[at_first]]
        has_prev |= at_first & (n1[ev_group] > 0)
        out[:, col] = np.where(has_prev, (ev_t - prev) * plan.sec_per_unit, -1.0)
        col += 1
    col += plan.n_novelty
    if plan.delayed_los:
        hi = ev_t - plan.delay
        pd = lower(hi)
        fraud_groups = np.flatnonzero(rec.nf[rows] > 0)
        for w in plan.delayed_los:
            pi = lower(hi - w)
            c = prefix[0][pd] - prefix[0][pi]
            frauds = np.zeros(e_count)
            for g in fraud_groups.tolist():
                r = int(rows[g])
                k = int(rec.nf[r])
                ft = rec.w[rec.o_f[0][r] : rec.o_f[0][r] + k]
                fl = rec.w[rec.o_f[1][r] : rec.o_f[1][r] + k]
                fd = rec.w[rec.o_f[2][r] : rec.o_f[2][r] + k]
                for e in range(int(first[g]), int(first[g] + m[g])):
                    lo, top, known = hi[e] - w, hi[e], ev_tms[e]
                    sel = (ft > lo) & (ft <= top) & (fl <= known)
                    frauds[e] = float(int(fd[sel].sum()))
            for o in plan.delayed_outputs:
                if o == "delayed_count":
                    out[:, col] = c
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        out[:, col] = np.where(c != 0, frauds / c, 0.0)
                col += 1

    # the new histories: pruned once more at the last op's reference time
    ref_last = np.minimum(np.maximum(t_last, max_t), clock_last)
    drop = np.searchsorted(c_keys, gidx * KEY_SHIFT + (ref_last - horizon), side="right") - c_start
    n_new = clen - drop
    times = c_times[ranges(c_start + drop, n_new)]
    maxs = c_maxs[ranges(c_start + drop, n_new)]
    p_keep = ranges(p_start + drop, n_new + 1)
    cums = [p[p_keep] for p in prefix]
    nf = rec.nf[rows]
    fraud = [rec.w[ranges(o[rows], nf)] for o in rec.o_f]
    if nf.any():
        f_cut = np.repeat(ref_last - horizon, nf)
        keep_f = fraud[0] > f_cut
        nf = np.bincount(np.repeat(gidx, nf)[keep_f], minlength=g_count).astype(np.int64)
        fraud = [f[keep_f] for f in fraud]
    new_last_ms = np.maximum(rec.last_ms[rows], np.maximum.reduceat(ev_tms, first))
    cols = Columns(
        last_ms=new_last_ms,
        max_t=np.maximum(max_t, t_last),
        n=n_new,
        times=times,
        cums=cums,
        maxs=maxs,
        nf=nf,
        fraud=fraud,
        seen=[],
    )
    return out, cols
