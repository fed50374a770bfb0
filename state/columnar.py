"""The columnar kernel: every plan of a partition's batch evaluated with a few hundred numpy calls.

The per-op kernel (:mod:`fraudstream.state.kernel`) costs tens of microseconds of Python per op;
here a whole batch (all plans, all entities, all events) costs a fixed number of numpy calls plus
a few dictionary operations per entity:

1. **Decode** every touched history at once. Records are rows of 7 eight-byte words (format 4), so
   the batch's records joined end to end are one (rows x 7) int64 array; headers and columns
   are gathered with index arithmetic (:class:`Records`).
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

Which ops qualify (the others take the per-op path, with identical results) is decided by the
caller (:mod:`fraudstream.state.entities`): transaction ops of a plan without ``max``; per entity,
those before its first fraud op and before the op that would take it past its bucket budget
(those two ops take the per-op path, and the entity's later ops come back in another round); in
time order, none older than its newest stored event; spanning less than the plan's horizon. In a
live stream or a replay in order that is nearly every op. Novelty flags (small dictionaries of
seen values) stay per event in Python, in the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fraudstream.state.history import HISTORY_FORMAT, ROW

__all__ = ["Plan", "Records", "Rewrite", "evaluate", "ranges"]

_HDR_WORDS = 4
_LOW32 = np.int64(0xFFFFFFFF)
_FORMAT = HISTORY_FORMAT
_COLS = np.arange(2, 2 + 5)
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
    """G encoded histories (format 4: rows of 7 words) read as columns.

    ``w``/``f`` are the records joined end to end as words (int64/float64 views); ``start`` is
    each record's first row, bucket ``i`` is row ``start + 2 + i``, and prefix entry ``j`` (the
    sums before bucket ``j``) sits in columns 2-6 of row ``start + 1 + j``.
    """

    def __init__(self, raws: Sequence[bytes]) -> None:
        joined = b"".join(raws)
        self.w = np.frombuffer(joined, dtype=np.int64)
        self.f = self.w.view(np.float64)
        rows = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws)) // (8 * ROW)
        self.start = np.cumsum(rows) - rows
        hdr = self.w[(self.start * ROW)[:, None] + np.arange(_HDR_WORDS)]
        if len(raws) and ((hdr[:, 0] & _LOW32) != _FORMAT).any():
            raise ValueError("entity record of another format in the batch")
        self.seen_len = hdr[:, 0] >> 32
        self.last_ms = hdr[:, 1].copy()
        self.max_t = hdr[:, 2].copy()
        self.n = hdr[:, 3] & _LOW32
        self.nf = hdr[:, 3] >> 32
        self.o_rows = self.start + 2
        o_f = (self.o_rows + self.n) * ROW
        self.o_f = [o_f, o_f + self.nf, o_f + 2 * self.nf]  # f_time f_label_ms f_delta (words)
        self.o_seen = o_f + 3 * self.nf + (-3 * self.nf) % ROW
        self.raws = raws

    def take(self, rows: np.ndarray) -> Records:
        """The records ``rows`` (same buffer: offsets stay valid)."""
        sub = Records.__new__(Records)
        sub.w, sub.f = self.w, self.f
        for name in ("start", "seen_len", "last_ms", "max_t", "n", "nf", "o_rows", "o_seen"):
            setattr(sub, name, getattr(self, name)[rows])
        sub.o_f = [o[rows] for o in self.o_f]
        sub.raws = [self.raws[i] for i in rows.tolist()]
        return sub

    def seen(self, i: int) -> bytes:
        """The raw seen-values JSON of record ``i`` (empty when it has none)."""
        size = int(self.seen_len[i])
        if not size:
            return b""
        off = (int(self.o_seen[i]) - int(self.start[i]) * ROW) * 8
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


class _SpanError(ValueError):
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
        """Format-4 records (bit for bit :func:`~fraudstream.state.history.encode`)."""
        rec, p = self.rec, self.parts
        g_count = len(rec.n)
        seen = self.seen
        seen_len = np.fromiter(map(len, seen), dtype=np.int64, count=g_count)
        ks, nb, d_s, r_off, nf = p["ks"], p["nb"], p["d_s"], p["r_off"], p["nf"]
        # new rows: headers, bases, the batch's buckets, fraud entries, seen values
        head = np.zeros((2 * g_count, ROW), dtype=np.int64)
        head[0::2, 0] = _FORMAT | (seen_len << 32)
        head[0::2, 1] = p["last_ms"]
        head[0::2, 2] = p["max_t"]
        head[0::2, 3] = (ks + nb) | (nf << 32)
        head.view(np.float64)[1::2, 2:] = rec.f[((rec.start + 1 + d_s) * ROW)[:, None] + _COLS]
        runs = len(p["run_times"])
        run_rows = np.empty((runs, ROW), dtype=np.int64)
        run_rows[:, 0] = p["run_times"]
        fr = run_rows.view(np.float64)
        fr[:, 1] = p["run_max"]
        for k in range(5):
            fr[:, 2 + k] = p["run_end"][k]
        f_rows = (3 * nf + ROW - 1) // ROW
        fraud = np.zeros(int(f_rows.sum()) * ROW, dtype=np.int64)
        if len(p["f_time"]):
            f_word = (np.cumsum(f_rows) - f_rows) * ROW
            i = ranges(f_word, nf)
            rep = np.repeat(nf, nf)
            fraud[i] = p["f_time"]
            fraud[i + rep] = p["f_label"]
            fraud[i + 2 * rep] = p["f_delta"]
        # One join per record of byte slices (old surviving rows, header, new rows): the old
        # rows are copied once, at memcpy speed; a gather of every touched record's rows through
        # one index array cost 4-5 copies of the whole batch's records, a cost that grew with
        # the histories (replay rate down 40% over a 30-day stream)
        size = 8 * ROW
        head_b = memoryview(head.tobytes())
        run_b = memoryview(run_rows.tobytes())
        fraud_b = memoryview(fraud.tobytes())
        f_first = (np.cumsum(f_rows) - f_rows).tolist()
        pad = b" " * size
        out: list[bytes] = []
        add = out.append
        join = b"".join
        for g, (raw, d, k, r, n, fa, fn, sv) in enumerate(
            zip(
                rec.raws,
                d_s.tolist(),
                ks.tolist(),
                r_off.tolist(),
                nb.tolist(),
                f_first,
                f_rows.tolist(),
                seen,
                strict=True,
            )
        ):
            a = (2 + d) * size  # the record's bucket 0 is its row 2
            parts = [
                head_b[2 * g * size : (2 * g + 2) * size],
                memoryview(raw)[a : a + k * size],
                run_b[r * size : (r + n) * size],
            ]
            if fn:
                parts.append(fraud_b[fa * size : (fa + fn) * size])
            if sv:
                parts.append(sv)
                parts.append(pad[: -len(sv) % size])
            add(join(parts))
        return out


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
    horizon: np.ndarray,
) -> tuple[dict[int, tuple[int, int, np.ndarray]], Rewrite]:
    """Features of every event and the entities' new records (see the module docstring).

    Group ``g`` is record ``g`` of ``rec``; groups are sorted by plan (``g_plan``), events by
    group, in op order within a group; times are in resolution units; ``clock_first`` and
    ``clock_last`` are each group's maintenance clock at its first and last op, and ``horizon``
    its plan's horizon (older buckets are pruned), all in resolution units. Returns, per plan
    present, ``(first_event, end_event, values)`` (the plan's events are the contiguous range
    ``[first_event, end_event)``), and the new records to encode. Novelty columns are left as
    NaN: the caller fills them and the new seen values (``Rewrite.seen``, the stored ones until
    then).
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
    o_rows = rec.o_rows
    h_times = rec.w[ranges(o_rows, n0) * ROW]
    # flat keys: entity * span + (time - t0); look-ups are clipped to [-1, span - 2]
    t_min = int(ev_t.min()) if e_count else 0
    t_max = int(ev_t.max()) if e_count else 0
    if len(h_times):
        t_min = min(t_min, int(h_times.min()))
        t_max = max(t_max, int(h_times.max()))
    span = t_max - t_min + 2
    if span * (g_count + 1) >= 2**62:
        raise _SpanError("times too far apart for one batch")
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
    last_row = np.maximum(o_rows + n0 - 1, rec.start + 1) * ROW  # (row 1 when empty: masked)
    last_h_time = np.where(n0 > 0, rec.w[last_row], np.int64(-(2**62)))
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
    o_prefix = (rec.start + 1) * ROW + 2  # word of prefix entry 0's count
    base = [rec.f[o_prefix + n0 * ROW + k] for k in range(5)]  # after the last stored bucket
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

    # look-ups in each entity's combined timeline (kept stored buckets, then the batch's): per
    # event and look-back, the prefix entry after the last bucket at or before t - back; every
    # look-back of every plan at once, as (events x look-backs) matrices
    plan_ids = np.unique(g_plan).tolist()
    present = [plans[p] for p in plan_ids]
    backs_set: set[int] = set()
    sq_set: set[int] = set()
    for plan in present:
        assert plan is not None
        backs_set.update(plan.wins)
        if "std" in plan.aggs:
            sq_set.update(plan.wins)
        if plan.zwin is not None:
            backs_set.add(plan.zwin)
            sq_set.add(plan.zwin)
        if plan.delayed_los:
            backs_set.add(plan.delay)
            backs_set.update(plan.delay + w for w in plan.delayed_los)
    backs = sorted(backs_set)
    col_of = {b: i for i, b in enumerate(backs)}
    sq_backs = sorted(sq_set)
    sq_of = {b: i for i, b in enumerate(sq_backs)}
    g_key = (ev_group * span)[:, None]
    q = g_key + np.clip(ev_t[:, None] - np.asarray(backs, dtype=np.int64) - t0, -1, span - 2)
    e_keep = keep[ev_group][:, None]
    cs = np.searchsorted(h_keys, q, side="right") - (h_start + drop0)[ev_group][:, None]
    cs = np.clip(cs, 0, e_keep)
    e_roff = r_off[ev_group][:, None]
    cr = np.searchsorted(r_keys, q, side="right") - e_roff
    in_runs = cr > 0
    run_pos = np.maximum(e_roff + cr - 1, 0)
    stored_pos = (o_prefix + drop0 * ROW)[ev_group][:, None] + cs * ROW

    # The five prefix sums of every look-up, (events x look-backs x 5): one gather of a row's five
    # adjacent words from the records (one cache line, where five gathers of one word each cost
    # five misses), then the look-ups that land in the batch's runs overwritten from those
    stored_row = (stored_pos - 2) // ROW  # stored_pos: the word of a prefix entry's count
    pre = rec.f.reshape(-1, ROW)[:, 2:][stored_row]
    if in_runs.any():
        pre[in_runs] = np.stack(run_end, axis=1)[run_pos[in_runs]]

    count = u[0][:, None] - pre[:, :, 0]  # (events x look-backs) of stored buckets
    total = (u[1][:, None] - pre[:, :, 1]) + (u[2][:, None] - pre[:, :, 2])
    squares = None
    if sq_backs:
        qc = [col_of[b] for b in sq_backs]
        squares = (u[3][:, None] - pre[:, qc, 3]) + (u[4][:, None] - pre[:, qc, 4])

    out: dict[int, tuple[int, int, np.ndarray]] = {}
    g_bounds = np.searchsorted(g_plan, [*plan_ids, np.iinfo(np.int64).max]).tolist()
    for k, (p, plan) in enumerate(zip(plan_ids, present, strict=True)):
        assert plan is not None
        g0, g1 = g_bounds[k], g_bounds[k + 1]
        a = int(first[g0])
        b = int(first[g1 - 1] + m[g1 - 1])
        sl = slice(a, b)
        n_ev = b - a
        amount = ev_amt[sl]
        values = np.empty((n_ev, plan.width))
        col = 0
        cur = plan.include_current
        if plan.wins:
            wi = [col_of[w] for w in plan.wins]
            c = count[sl, wi]
            s = total[sl, wi]
            if cur:
                c = c + 1.0
                s = s + amount[:, None]
            n_aggs = len(plan.aggs)
            width = n_aggs * len(wi)
            block = values[:, :width]
            sq = None
            for j, agg in enumerate(plan.aggs):
                if agg == "count":
                    block[:, j::n_aggs] = c
                elif agg == "sum":
                    block[:, j::n_aggs] = s
                elif agg == "mean":
                    with np.errstate(divide="ignore", invalid="ignore"):
                        block[:, j::n_aggs] = np.where(c != 0, s / c, 0.0)
                else:  # std
                    if sq is None:
                        assert squares is not None
                        sq = squares[sl, [sq_of[w] for w in plan.wins]]
                        if cur:
                            sq = sq + (amount * amount)[:, None]
                    block[:, j::n_aggs] = _std(c, s, sq)
            col = width
        if plan.zwin is not None:
            assert squares is not None
            zi, zq = col_of[plan.zwin], sq_of[plan.zwin]
            c1, s1, q1 = count[sl, zi], total[sl, zi], squares[sl, zq]
            sd = _std(c1, s1, q1)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (amount - s1 / c1) / sd
            values[:, col] = np.where((c1 >= 2) & (sd > 0), z, 0.0)
            col += 1
        if plan.recency:
            t = ev_t[sl]
            has_prev = not_first[sl]
            prev_t = np.where(has_prev, ev_t[prev[sl]], last_h_time[ev_group[sl]])
            has_prev = has_prev | (n1[ev_group[sl]] > 0)
            values[:, col] = np.where(has_prev, (t - prev_t) * plan.sec_per_unit, -1.0)
            col += 1
        if plan.n_novelty:
            values[:, col : col + plan.n_novelty] = np.nan
            col += plan.n_novelty
        if plan.delayed_los:
            top = pre[sl, col_of[plan.delay], 0][:, None]
            lows = pre[sl][:, [col_of[plan.delay + w] for w in plan.delayed_los], 0]
            delayed = top - lows  # stored buckets in (t - delay - w, t - delay]
            fraud_groups = np.flatnonzero(rec.nf[g0:g1]) + g0
            for i, w in enumerate(plan.delayed_los):
                c = delayed[:, i]
                frauds = None
                for o in plan.delayed_outputs:
                    if o == "delayed_count":
                        values[:, col] = c
                    else:
                        if frauds is None:
                            frauds = _fraud_counts(
                                rec, fraud_groups, first, m, ev_t, ev_tms, plan.delay, w, a, n_ev
                            )
                        with np.errstate(divide="ignore", invalid="ignore"):
                            values[:, col] = np.where(c != 0, frauds / c, 0.0)
                    col += 1
        out[p] = (a, b, values)

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
        stored_last = rec.f[last_row[merged_runs] + 1]
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
