"""Window arithmetic: one entity plan's features from a :class:`~fraudstream.state.history.History`.

A window of length ``w`` at time ``t`` is a difference of two prefix sums found by bisection
(see :mod:`fraudstream.state.history`); delayed windows count fraud entries known at the event's
time. The per-op path is inlined on purpose: it runs once per entity of every transaction.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from fraudstream.state.features import FeatureSet
from fraudstream.state.history import History

__all__ = ["ENTITY_PREFIX", "Kernel"]

ENTITY_PREFIX = b"e\x00"


class Kernel:
    """One plan's precomputed constants and its feature arithmetic over a :class:`History`."""

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
        self.key_prefix = ENTITY_PREFIX + p.entity.encode() + b"\x00"
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
