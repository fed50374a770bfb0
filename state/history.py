"""One entity's bounded event-time history and the window arithmetic over it.

A :class:`History` holds time buckets (sorted by time, in units of the feature set's resolution)
with count, sum, sum of squares and max of the amounts, plus the entity's fraud-label entries for
delayed windows and small "seen values" sets for novelty flags. It is encoded to compact bytes
(fixed header + packed arrays) for the key-value store.

Bounds
    * Buckets older than the feature set's horizon (longest look-back + allowed lateness) relative
      to the entity's newest event are dropped before every computation, so stored state never
      influences a result it could not influence in a fresh replay.
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

import orjson

__all__ = ["History", "decode", "encode"]

_HDR = struct.Struct("<qqII")  # newest event ms, newest bucket time, n buckets, n fraud entries
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
    """Mutable, decoded state of one entity. Times are integers in resolution units."""

    __slots__ = (
        "counts",
        "f_delta",
        "f_label_ms",
        "f_time",
        "last_ms",
        "max_t",
        "maxs",
        "seen",
        "sums",
        "sumsqs",
        "times",
    )

    def __init__(self) -> None:
        self.last_ms = -1
        self.max_t = -(2**62)
        self.times: array[int] = array("q")
        self.counts: array[float] = array("d")
        self.sums: array[float] = array("d")
        self.sumsqs: array[float] = array("d")
        self.maxs: array[float] = array("d")
        self.f_time: array[int] = array("q")
        self.f_label_ms: array[int] = array("q")
        self.f_delta: array[int] = array("q")
        self.seen: dict[str, dict[str, int]] = {}

    # ----------------------------------------------------------------------------- mutation
    def add(self, t: int, amount: float) -> None:
        """Add one event at time ``t`` (resolution units)."""
        times = self.times
        n = len(times)
        if n and times[-1] == t:
            i = n - 1
        elif not n or times[-1] < t:
            times.append(t)
            self.counts.append(0.0)
            self.sums.append(0.0)
            self.sumsqs.append(0.0)
            self.maxs.append(-math.inf)
            i = n
        else:
            i = bisect_right(times, t) - 1
            if i < 0 or times[i] != t:
                i += 1
                times.insert(i, t)
                self.counts.insert(i, 0.0)
                self.sums.insert(i, 0.0)
                self.sumsqs.insert(i, 0.0)
                self.maxs.insert(i, -math.inf)
        self.counts[i] += 1.0
        self.sums[i] += amount
        self.sumsqs[i] += amount * amount
        if amount > self.maxs[i]:
            self.maxs[i] = amount
        if t > self.max_t:
            self.max_t = t

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
            del self.counts[:k]
            del self.sums[:k]
            del self.sumsqs[:k]
            del self.maxs[:k]
        if self.f_time and min(self.f_time) <= cutoff:
            keep = [i for i, ft in enumerate(self.f_time) if ft > cutoff]
            self.f_time = array("q", (self.f_time[i] for i in keep))
            self.f_label_ms = array("q", (self.f_label_ms[i] for i in keep))
            self.f_delta = array("q", (self.f_delta[i] for i in keep))
        for values in self.seen.values():
            stale = [v for v, ms in values.items() if ms <= cutoff_ms]
            for v in stale:
                del values[v]

    def coarsen(self, max_buckets: int, units_per_s: float) -> None:
        """Merge old buckets tier by tier until at most 3/4 of ``max_buckets`` remain."""
        target = max_buckets * 3 // 4
        for age_s, gran_s in _TIER_SPECS_S:
            if len(self.times) <= target:
                return
            age = int(age_s * units_per_s)
            gran = max(1, int(gran_s * units_per_s))
            self._merge_older_than(self.max_t - age, gran)

    def _merge_older_than(self, boundary: int, gran: int) -> None:
        times, counts, sums, sumsqs, maxs = (
            self.times,
            self.counts,
            self.sums,
            self.sumsqs,
            self.maxs,
        )
        k = bisect_right(times, boundary)
        if k < 2:
            return
        nt: array[int] = array("q")
        nc: array[float] = array("d")
        ns: array[float] = array("d")
        nq: array[float] = array("d")
        nm: array[float] = array("d")
        group = None
        for i in range(k):
            g = times[i] // gran
            if g == group:
                nt[-1] = times[i]
                nc[-1] += counts[i]
                ns[-1] += sums[i]
                nq[-1] += sumsqs[i]
                if maxs[i] > nm[-1]:
                    nm[-1] = maxs[i]
            else:
                group = g
                nt.append(times[i])
                nc.append(counts[i])
                ns.append(sums[i])
                nq.append(sumsqs[i])
                nm.append(maxs[i])
        self.times = nt + times[k:]
        self.counts = nc + counts[k:]
        self.sums = ns + sums[k:]
        self.sumsqs = nq + sumsqs[k:]
        self.maxs = nm + maxs[k:]

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
    def windows(self, hi: int, los: list[int]) -> list[tuple[float, float, float, float]]:
        """Aggregate buckets in ``(lo, hi]`` for each ``lo`` (``los`` must be decreasing).

        Returns ``(count, sum, sumsq, max)`` per window; max is ``-inf`` on an empty window.
        """
        times, counts, sums, sumsqs, maxs = (
            self.times,
            self.counts,
            self.sums,
            self.sumsqs,
            self.maxs,
        )
        i = bisect_right(times, hi) - 1
        c = s = q = 0.0
        m = -math.inf
        out = []
        for lo in los:
            while i >= 0 and times[i] > lo:
                c += counts[i]
                s += sums[i]
                q += sumsqs[i]
                if maxs[i] > m:
                    m = maxs[i]
                i -= 1
            out.append((c, s, q, m))
        return out

    def fraud_count(self, lo: int, hi: int, known_at_ms: int) -> float:
        """Net fraud labels for transactions in ``(lo, hi]`` known by ``known_at_ms``."""
        total = 0
        for ft, lm, d in zip(self.f_time, self.f_label_ms, self.f_delta, strict=True):
            if lo < ft <= hi and lm <= known_at_ms:
                total += d
        return float(total)

    def previous_time(self, t: int) -> int | None:
        """Time of the newest bucket at or before ``t``."""
        i = bisect_right(self.times, t) - 1
        return self.times[i] if i >= 0 else None


def encode(h: History) -> bytes:
    parts = [
        _HDR.pack(h.last_ms, h.max_t, len(h.times), len(h.f_time)),
        h.times.tobytes(),
        h.counts.tobytes(),
        h.sums.tobytes(),
        h.sumsqs.tobytes(),
        h.maxs.tobytes(),
    ]
    if h.f_time:
        parts += [h.f_time.tobytes(), h.f_label_ms.tobytes(), h.f_delta.tobytes()]
    if h.seen:
        parts.append(orjson.dumps(h.seen))
    return b"".join(parts)


def decode(raw: bytes) -> History:
    h = History.__new__(History)
    h.last_ms, h.max_t, n, nf = _HDR.unpack_from(raw)
    buf = memoryview(raw)
    off = _HDR.size
    step = 8 * n
    h.times = array("q")
    h.times.frombytes(buf[off : off + step])
    off += step
    floats = []
    for _ in range(4):
        a = array("d")
        a.frombytes(buf[off : off + step])
        floats.append(a)
        off += step
    h.counts, h.sums, h.sumsqs, h.maxs = floats
    if nf:
        step = 8 * nf
        ints = []
        for _ in range(3):
            b = array("q")
            b.frombytes(buf[off : off + step])
            ints.append(b)
            off += step
        h.f_time, h.f_label_ms, h.f_delta = ints
    else:
        h.f_time, h.f_label_ms, h.f_delta = array("q"), array("q"), array("q")
    h.seen = orjson.loads(buf[off:]) if off < len(raw) else {}
    return h


def newest_event_ms(raw: bytes) -> int:
    """The entity's newest event time without decoding the whole record (for expiry sweeps)."""
    return int(_HDR.unpack_from(raw)[0])
