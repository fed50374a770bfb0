"""One entity's bounded event-time history and the window arithmetic over it.

A :class:`History` holds time buckets (sorted by time, in units of the feature set's resolution)
with count, sum, sum of squares and max of the amounts, plus the entity's fraud-label entries for
delayed windows and small "seen values" sets for novelty flags. It is encoded to compact bytes
(fixed header + packed arrays) for the key-value store.

Bounds
    * Buckets older than the plan's horizon (its longest look-back + allowed lateness; the
      feature set's for a plan with a recency feature) relative to the entity's newest event are
      dropped before every computation, so stored state never influences a result it could not
      influence in a fresh replay.
    * Past ``max_buckets`` old buckets are merged step by step, from the oldest and finest
      first (older than 7 d into days, 1 d into hours, 1 h into minutes, 5 min into 10 s) and then
      more aggressively (1 d into days, 1 h into hours, 5 min into minutes, all into hours, all into
      days) until three quarters of the budget remain. A merged bucket keeps the time of its newest
      event. A window is therefore exact unless a merged bucket straddles its lower boundary, and
      then that bucket counts whole: the error is at most the events of one merged bucket, which
      spans at most one day (and only the granularity of its tier in the common case). In event
      order, a window never undercounts.
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_right

import numpy as np
import orjson

__all__ = ["HISTORY_FORMAT", "History", "InPlace", "decode", "encode"]

# Format 4: rows of 7 8-byte words, so that a batch of records joined end to end is one
# (rows x 7) array and a record's surviving buckets are one contiguous block of rows
# (fraudstream.state.columnar):
#   row 0: format | seen length << 32, newest event ms, newest bucket time, n | n_fraud << 32,
#          3 zero words
#   row 1: 2 zero words, then the prefix sums before the first bucket (cc cs cs_lo cq cq_lo)
#   n bucket rows: time, max, then the prefix sums after the bucket
#   the fraud entries' times, label times and deltas (3 x n_fraud words), zero-padded to a row
#   the seen-values JSON, space-padded to a row
_HDR = struct.Struct("<IIqqII")
ROW = 7
HISTORY_FORMAT = 4  # 1: per-bucket sums; 2: double-double prefix sums; 3: 8-byte aligned; 4: rows
_CUMS = ("cc", "cs", "cs_lo", "cq", "cq_lo")
# (age, granularity) in seconds, increasingly aggressive; the last step alone fits any horizon.
_TIER_SPECS_S = (
    (7 * 86400, 86400),
    (86400, 3600),
    (3600, 60),
    (300, 10),
    (86400, 86400),
    (3600, 3600),
    (300, 60),
    (0, 3600),
    (0, 86400),
)


class History:
    """Mutable, decoded state of one entity. Times are integers in resolution units.

    Buckets are kept as prefix sums: ``cc[k]``, ``cs[k]`` and ``cq[k]`` are the count, sum and sum
    of squares of every bucket before ``k`` (plus whatever was pruned), so a window is two
    bisections and a subtraction, whatever its length. Sums are double-double (``cs + cs_lo``,
    error-free additions), so a window's difference is as precise as summing its own buckets,
    however large the prefix before it. ``maxs`` is per bucket (max is rare).
    """

    __slots__ = (
        "cc",
        "cq",
        "cq_lo",
        "cs",
        "cs_lo",
        "f_delta",
        "f_label_ms",
        "f_time",
        "last_ms",
        "max_t",
        "maxs",
        "seen",
        "times",
    )

    def __init__(self) -> None:
        self.last_ms = -1
        self.max_t = -(2**62)
        self.times: array[int] = array("q")
        self.cc: array[float] = array("d", (0.0,))
        self.cs: array[float] = array("d", (0.0,))
        self.cq: array[float] = array("d", (0.0,))
        self.cs_lo: array[float] = array("d", (0.0,))
        self.cq_lo: array[float] = array("d", (0.0,))
        self.maxs: array[float] = array("d")
        self.f_time: array[int] = array("q")
        self.f_label_ms: array[int] = array("q")
        self.f_delta: array[int] = array("q")
        self.seen: dict[str, dict[str, int]] = {}

    # ----------------------------------------------------------------------------- mutation
    def add(self, t: int, amount: float) -> None:
        """Add one event at time ``t`` (resolution units)."""
        times, cc = self.times, self.cc
        a2 = amount * amount
        n = len(times)
        if not n or times[-1] < t:  # the common case: a new newest bucket
            times.append(t)
            cc.append(cc[-1] + 1.0)
            # _two_sum, inlined (this is the per-event path)
            x = self.cs[-1]
            hi = x + amount
            bp = hi - x
            self.cs.append(hi)
            self.cs_lo.append(self.cs_lo[-1] + ((x - (hi - bp)) + (amount - bp)))
            x = self.cq[-1]
            hi = x + a2
            bp = hi - x
            self.cq.append(hi)
            self.cq_lo.append(self.cq_lo[-1] + ((x - (hi - bp)) + (a2 - bp)))
            self.maxs.append(amount)
            if t > self.max_t:
                self.max_t = t
            return
        if times[-1] == t:
            i = n - 1
        else:  # out of order: an inner bucket, then every later prefix sum shifts
            i = bisect_right(times, t) - 1
            if i < 0 or times[i] != t:
                i += 1
                times.insert(i, t)
                self.maxs.insert(i, -math.inf)
                for cum in (cc, self.cs, self.cs_lo, self.cq, self.cq_lo):
                    cum.insert(i + 1, cum[i])
        if amount > self.maxs[i]:
            self.maxs[i] = amount
        cs, cs_lo, cq, cq_lo = self.cs, self.cs_lo, self.cq, self.cq_lo
        for k in range(i + 1, len(cc)):
            cc[k] += 1.0
            hi, lo = _two_sum(cs[k], amount)
            cs[k] = hi
            cs_lo[k] += lo
            hi, lo = _two_sum(cq[k], a2)
            cq[k] = hi
            cq_lo[k] += lo

    def add_fraud(self, t: int, label_ms: int, delta: int) -> None:
        """Record a fraud-label change (+1 or -1) for a transaction of this entity at ``t``."""
        self.f_time.append(t)
        self.f_label_ms.append(label_ms)
        self.f_delta.append(delta)

    def prune(self, cutoff: int, cutoff_ms: int) -> None:
        """Drop buckets and fraud entries at or before ``cutoff``, seen values before cutoff_ms."""
        times = self.times
        if times and times[0] <= cutoff:
            k = bisect_right(times, cutoff)
            del times[:k]
            del self.maxs[:k]
            # the prefix sums at k (everything pruned) become the base
            for cum in (self.cc, self.cs, self.cs_lo, self.cq, self.cq_lo):
                del cum[:k]
        if self.f_time and min(self.f_time) <= cutoff:
            keep = [i for i, ft in enumerate(self.f_time) if ft > cutoff]
            self.f_time = array("q", (self.f_time[i] for i in keep))
            self.f_label_ms = array("q", (self.f_label_ms[i] for i in keep))
            self.f_delta = array("q", (self.f_delta[i] for i in keep))
        if self.seen:
            self.prune_seen(cutoff_ms)

    def prune_seen(self, cutoff_ms: int) -> None:
        """Forget seen values last seen at or before ``cutoff_ms``."""
        for values in self.seen.values():
            if values and min(values.values()) <= cutoff_ms:
                for v in [v for v, ms in values.items() if ms <= cutoff_ms]:
                    del values[v]

    def coarsen(self, max_buckets: int, units_per_s: float, ref: int | None = None) -> None:
        """Merge old buckets tier by tier until at most 3/4 of ``max_buckets`` remain.

        Ages count back from ``ref`` (default: the newest bucket; the maintenance clock when
        the newest event may be an outlier); the last, age-free tiers merge everything so that
        the budget always holds.
        """
        target = max_buckets * 3 // 4
        now = self.max_t if ref is None else min(ref, self.max_t)
        for age_s, gran_s in _TIER_SPECS_S:
            if len(self.times) <= target:
                return
            age = int(age_s * units_per_s)
            gran = max(1, int(gran_s * units_per_s))
            self._merge_older_than((now if age_s else self.max_t) - age, gran)

    def _merge_older_than(self, boundary: int, gran: int) -> None:
        """Merge buckets at or before ``boundary`` that share a ``gran``-aligned slot.

        With prefix sums a merge only drops entries: a group keeps its newest bucket's time and
        the prefix sums after its newest bucket.
        """
        times, maxs = self.times, self.maxs
        k = bisect_right(times, boundary)
        if k < 2:
            return
        keep: list[int] = []  # index of the newest bucket of each group
        nm: list[float] = []
        group = None
        for i in range(k):
            g = times[i] // gran
            if g == group:
                keep[-1] = i
                if maxs[i] > nm[-1]:
                    nm[-1] = maxs[i]
            else:
                group = g
                keep.append(i)
                nm.append(maxs[i])
        self.times = array("q", [times[i] for i in keep]) + times[k:]
        self.maxs = array("d", nm) + maxs[k:]
        for name in _CUMS:
            cum = getattr(self, name)
            merged = array("d", [cum[0]])
            merged.extend([cum[i + 1] for i in keep])
            setattr(self, name, merged + cum[k + 1 :])

    def observe(self, field: str, value: str, t_ms: int, max_values: int) -> bool:
        """Remember ``value`` of ``field``; return True when it was not seen before."""
        values = self.seen.get(field)
        if values is None:
            values = self.seen[field] = {}
        is_new = value not in values
        if is_new or values[value] < t_ms:
            values[value] = t_ms
        if len(values) > max_values:
            oldest = min(values, key=values.__getitem__)
            del values[oldest]
        return is_new

    # ----------------------------------------------------------------------------- queries
    def fraud_count(self, lo: int, hi: int, known_at_ms: int) -> float:
        """Net fraud labels for transactions in ``(lo, hi]`` known by ``known_at_ms``."""
        total = 0
        for ft, lm, d in zip(self.f_time, self.f_label_ms, self.f_delta, strict=True):
            if lo < ft <= hi and lm <= known_at_ms:
                total += d
        return float(total)


def _two_sum(a: float, b: float) -> tuple[float, float]:
    """``a + b`` rounded, and the exact rounding error (Knuth's TwoSum)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


def _pad_rows(words: int) -> int:
    return -words % ROW


_Z8 = bytes(8)
_PAD_HDR = bytes(8 * (ROW - 4))


def _head(seen_len: int, last_ms: int, max_t: int, n: int, nf: int) -> bytes:
    """Row 0 of a record."""
    return _HDR.pack(HISTORY_FORMAT, seen_len, last_ms, max_t, n, nf) + _PAD_HDR


def encode(h: History) -> bytes:
    """The record of ``h`` (format 4, module comment above).

    The columns are joined end to end (times and maxs behind a zero word, so every column has
    ``n + 1`` entries like the prefix sums) and transposed into rows by one numpy copy: a fixed
    ~2 us whatever the size (the per-op path encodes every touched history of every batch).
    """
    seen = orjson.dumps(h.seen) if h.seen else b""
    n, nf = len(h.times), len(h.f_time)
    cols = b"".join(
        (
            _Z8,
            h.times.tobytes(),
            _Z8,
            h.maxs.tobytes(),
            h.cc.tobytes(),
            h.cs.tobytes(),
            h.cs_lo.tobytes(),
            h.cq.tobytes(),
            h.cq_lo.tobytes(),
        )
    )
    rows = np.frombuffer(cols, dtype=np.int64).reshape(ROW, n + 1).T.tobytes()
    parts = [_head(len(seen), h.last_ms, h.max_t, n, nf), rows]
    if nf:
        parts += [h.f_time.tobytes(), h.f_label_ms.tobytes(), h.f_delta.tobytes()]
        parts.append(bytes(8 * _pad_rows(3 * nf)))
    if seen:
        parts.append(seen + b" " * (-len(seen) % (8 * ROW)))  # padded: records are whole rows
    return b"".join(parts)


def _column(typecode: str, buf: memoryview) -> array:
    col = array(typecode)
    col.frombytes(buf)
    return col


def decode(raw: bytes) -> History:
    """The :class:`History` of a record: rows 1..n+1 transposed by one numpy copy, then each
    column copied into its ``array`` (floats as bits: nothing is converted)."""
    h = History.__new__(History)
    fmt, seen_len, h.last_ms, h.max_t, n, nf = _HDR.unpack_from(raw)
    if fmt != HISTORY_FORMAT:
        raise ValueError(f"entity record format {fmt}, expected {HISTORY_FORMAT}")
    end = (2 + n) * ROW
    m8 = 8 * (n + 1)  # bytes per transposed column
    cols = memoryview(
        np.frombuffer(raw, dtype=np.int64, count=end - ROW, offset=8 * ROW)
        .reshape(n + 1, ROW)
        .T.tobytes()
    )
    h.times = _column("q", cols[8:m8])
    h.maxs = _column("d", cols[m8 + 8 : 2 * m8])
    h.cc = _column("d", cols[2 * m8 : 3 * m8])
    h.cs = _column("d", cols[3 * m8 : 4 * m8])
    h.cs_lo = _column("d", cols[4 * m8 : 5 * m8])
    h.cq = _column("d", cols[5 * m8 : 6 * m8])
    h.cq_lo = _column("d", cols[6 * m8 : 7 * m8])
    if nf:
        f = memoryview(raw)[8 * end : 8 * (end + 3 * nf)]
        h.f_time = _column("q", f[: 8 * nf])
        h.f_label_ms = _column("q", f[8 * nf : 16 * nf])
        h.f_delta = _column("q", f[16 * nf :])
        end += 3 * nf + _pad_rows(3 * nf)
    else:
        h.f_time, h.f_label_ms, h.f_delta = array("q"), array("q"), array("q")
    h.seen = orjson.loads(raw[8 * end : 8 * end + seen_len]) if seen_len else {}
    return h


_ROW = struct.Struct("<qd5d")  # a bucket row: time, max, the prefix sums after the bucket
_ROW_BYTES = 8 * ROW
_NO_FRAUD: tuple[int, ...] = ()


class InPlace:
    """A record without fraud entries or seen values, read where it lies: the per-op path's fast
    form for the common op (an event at or after the entity's newest bucket).

    ``times``, the prefix sums and ``maxs`` are strided memoryviews over the record's rows (no
    copy; element access costs what an ``array``'s does), so the window arithmetic
    (:class:`~fraudstream.state.kernel.Kernel`) reads them as it reads a :class:`History`.
    :meth:`add` and :meth:`prune` rebuild the rows with the arithmetic of :meth:`History.add` and
    :meth:`History.prune`, and :meth:`encode` gives the bytes :func:`encode` would give for the
    same history (``tests/state/test_history_codec.py``). Anything else (an older event, fraud
    entries, seen values, the bucket budget) goes through :meth:`history`.
    """

    __slots__ = (
        "cc",
        "cq",
        "cq_lo",
        "cs",
        "cs_lo",
        "last_ms",
        "max_t",
        "maxs",
        "n",
        "rows",
        "times",
    )
    rows: memoryview | bytes
    n: int
    last_ms: int
    max_t: int
    times: memoryview[int]
    maxs: memoryview[float]
    cc: memoryview[float]
    cs: memoryview[float]
    cs_lo: memoryview[float]
    cq: memoryview[float]
    cq_lo: memoryview[float]
    f_time = _NO_FRAUD
    seen: dict[str, dict[str, int]] = {}  # never written: a record with seen values is not InPlace

    @staticmethod
    def open(raw: bytes) -> InPlace | None:
        """The record in place, or None when it holds fraud entries or seen values."""
        fmt, seen_len, last_ms, max_t, n, nf = _HDR.unpack_from(raw)
        if fmt != HISTORY_FORMAT:
            raise ValueError(f"entity record format {fmt}, expected {HISTORY_FORMAT}")
        if seen_len or nf:
            return None
        r = InPlace.__new__(InPlace)
        r.last_ms, r.max_t = last_ms, max_t
        r._set(memoryview(raw)[_ROW_BYTES : _ROW_BYTES * (2 + n)], n)
        return r

    def _set(self, rows: memoryview | bytes, n: int) -> None:
        """Rows 1..n+1 of a record (the base row, then one row per bucket)."""
        self.rows, self.n = rows, n
        q = memoryview(rows).cast("q")
        d = q.cast("B").cast("d")
        self.times = q[ROW::ROW]
        self.maxs = d[ROW + 1 :: ROW]
        self.cc = d[2::ROW]
        self.cs = d[3::ROW]
        self.cs_lo = d[4::ROW]
        self.cq = d[5::ROW]
        self.cq_lo = d[6::ROW]

    def takes(self, t: int, max_buckets: int) -> bool:
        """Whether :meth:`add` can take an event at ``t`` (else use :meth:`history`)."""
        n = self.n
        if not n:
            return True  # max_buckets >= 16 (FeatureSet)
        last = self.times[n - 1]
        return t == last or (t > last and n < max_buckets)

    def add(self, t: int, amount: float) -> None:
        """:meth:`History.add` for an event that :meth:`takes` accepts."""
        n = self.n
        a2 = amount * amount
        cc, cs, cs_lo, cq, cq_lo = self.cc[n], self.cs[n], self.cs_lo[n], self.cq[n], self.cq_lo[n]
        # TwoSum, inlined as in History.add
        hi = cs + amount
        bp = hi - cs
        s_lo = cs_lo + ((cs - (hi - bp)) + (amount - bp))
        q_hi = cq + a2
        bp = q_hi - cq
        q_lo = cq_lo + ((cq - (q_hi - bp)) + (a2 - bp))
        rows = self.rows
        if n and self.times[n - 1] == t:  # the newest bucket grows
            m = self.maxs[n - 1]
            row = _ROW.pack(t, amount if amount > m else m, cc + 1.0, hi, s_lo, q_hi, q_lo)
            self._set(b"".join((rows[: _ROW_BYTES * n], row)), n)
            return
        row = _ROW.pack(t, amount, cc + 1.0, hi, s_lo, q_hi, q_lo)
        self._set(b"".join((rows, row)), n + 1)
        if t > self.max_t:
            self.max_t = t

    def prune(self, cutoff: int, cutoff_ms: int) -> None:
        """:meth:`History.prune` (no fraud entries or seen values to prune)."""
        times = self.times
        if self.n and times[0] <= cutoff:
            k = bisect_right(times, cutoff)
            rows = self.rows
            # the prefix sums before bucket k (row k: after bucket k - 1) become the base row
            base = rows[_ROW_BYTES * k + 16 : _ROW_BYTES * (k + 1)]
            self._set(b"".join((bytes(16), base, rows[_ROW_BYTES * (k + 1) :])), self.n - k)

    def encode(self) -> bytes:
        """The record's bytes (those :func:`encode` gives for the same history)."""
        return b"".join((_head(0, self.last_ms, self.max_t, self.n, 0), self.rows))

    def history(self) -> History:
        """The decoded :class:`History` (for what the in-place form does not do)."""
        return decode(self.encode())


def newest_event_ms(raw: bytes) -> int:
    """The entity's newest event time without decoding the whole record (for expiry sweeps)."""
    return int(_HDR.unpack_from(raw)[2])
