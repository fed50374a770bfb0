"""The entity record codec: format 4 byte for byte, and decode(encode(h)) == h bit for bit."""

from __future__ import annotations

import struct

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from fraudstream.state.history import HISTORY_FORMAT, ROW, History, decode, encode

_SLOTS = History.__slots__


def _reference(h: History) -> bytes:
    """Format 4 written out row by row from its description (state/history.py), with struct."""
    import orjson

    seen = orjson.dumps(h.seen) if h.seen else b""
    n, nf = len(h.times), len(h.f_time)
    out = [struct.pack("<IIqqII", HISTORY_FORMAT, len(seen), h.last_ms, h.max_t, n, nf)]
    out.append(bytes(8 * (ROW - 4)))
    out.append(bytes(16) + struct.pack("<5d", h.cc[0], h.cs[0], h.cs_lo[0], h.cq[0], h.cq_lo[0]))
    for i in range(n):
        sums = (h.cc[i + 1], h.cs[i + 1], h.cs_lo[i + 1], h.cq[i + 1], h.cq_lo[i + 1])
        out.append(struct.pack("<qd5d", h.times[i], h.maxs[i], *sums))
    if nf:
        words = [*h.f_time, *h.f_label_ms, *h.f_delta]
        words += [0] * (-len(words) % ROW)
        out.append(struct.pack(f"<{len(words)}q", *words))
    if seen:
        out.append(seen + b" " * (-len(seen) % (8 * ROW)))
    return b"".join(out)


def _same(a: History, b: History) -> None:
    for name in _SLOTS:
        x, y = getattr(a, name), getattr(b, name)
        if hasattr(x, "tobytes"):
            assert x.typecode == y.typecode and x.tobytes() == y.tobytes(), name  # bits, NaN too
        else:
            assert x == y, name


_amounts = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@settings(max_examples=300, deadline=None)
@given(
    adds=st.lists(st.tuples(st.integers(0, 5_000), _amounts), max_size=120),
    frauds=st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 10**13)), max_size=9),
    seen=st.dictionaries(
        st.sampled_from(["device_id", "country"]),
        st.dictionaries(st.text(max_size=12), st.integers(0, 10**13), max_size=4),
        max_size=2,
    ),
    prune_at=st.integers(-1, 5_000),
    coarsen=st.booleans(),
)
def test_record_layout_and_round_trip(adds, frauds, seen, prune_at, coarsen):
    h = History()
    for t, amount in adds:  # out of order too: inner buckets shift every later prefix sum
        h.add(t, amount)
        h.last_ms = max(h.last_ms, t * 1000)
    for t, label_ms in frauds:
        h.add_fraud(t, label_ms, 1 if label_ms % 2 else -1)
    h.seen = seen
    if prune_at >= 0:
        h.prune(prune_at, prune_at * 1000)
    if coarsen and len(h.times) > 16:
        h.coarsen(16, 1.0)
    raw = encode(h)
    assert raw == _reference(h)
    assert len(raw) % (8 * ROW) == 0
    back = decode(raw)
    _same(back, h)
    assert encode(back) == raw


def test_empty_history_round_trips():
    h = History()
    raw = encode(h)
    assert raw == _reference(h)
    _same(decode(raw), h)


def test_decode_refuses_another_format():
    raw = bytearray(encode(History()))
    raw[0] = HISTORY_FORMAT + 1
    with pytest.raises(ValueError, match="format"):
        decode(bytes(raw))
