"""The merge order is a function of the records alone: fetch timing, batching and resumes don't
change it (property tests against an offline reference)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.order import Input, Merger

# A record: (ts_ms, time_ms); partitions are lists of records in offset order.
records = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 60)), max_size=25)
partitions = st.lists(records, min_size=1, max_size=4)


def _inputs(parts):
    # topic "a" (rank 1) for all but the last partition, which plays the labels topic (rank 0,
    # shifted by 3)
    specs = [Input("a", i, rank=1) for i in range(len(parts) - 1)]
    specs.append(Input("b", 0, rank=0, shift_ms=3))
    return specs


def _reference(parts):
    out = []
    for spec, recs in zip(_inputs(parts), parts, strict=True):
        floor = -(2**63)
        for offset, (ts, t) in enumerate(recs):
            floor = max(floor, ts + spec.shift_ms)
            out.append((floor, t + spec.shift_ms, spec.rank, spec.partition, offset))
    return sorted(out)


def _feed(merger, parts, schedule, start=None):
    """Push records following ``schedule`` (a list of input indices), releasing at random."""
    pos = list(start or [0] * len(parts))
    out = []
    for step, q in enumerate(schedule):
        q %= len(parts)
        if pos[q] < len(parts[q]):
            ts, t = parts[q][pos[q]]
            merger.push(q, pos[q], ts, t, (q, pos[q]))
            pos[q] += 1
        if step % 3 == 0:
            out += [k for k, _ in merger.ready()]
    return pos, out


def _drain(merger, parts, pos):
    out = []
    for q, recs in enumerate(parts):
        while pos[q] < len(recs):
            ts, t = recs[pos[q]]
            merger.push(q, pos[q], ts, t, (q, pos[q]))
            pos[q] += 1
            out += [k for k, _ in merger.ready()]
        merger.finish(q)
    out += [k for k, _ in merger.ready()]
    return out


@settings(max_examples=200, deadline=None)
@given(parts=partitions, schedule=st.lists(st.integers(0, 3), max_size=120))
def test_any_interleaving_releases_the_reference_order(parts, schedule):
    m = Merger(_inputs(parts))
    pos, out = _feed(m, parts, schedule)
    out += _drain(m, parts, pos)
    assert out == _reference(parts)
    assert m.exhausted()


@settings(max_examples=200, deadline=None)
@given(
    parts=partitions,
    before=st.lists(st.integers(0, 3), max_size=80),
    after=st.lists(st.integers(0, 3), max_size=80),
)
def test_resume_from_a_snapshot_continues_the_same_order(parts, before, after):
    m = Merger(_inputs(parts))
    pos, out = _feed(m, parts, before)
    snap = m.snapshot()
    # a crash here: everything unreleased is lost, the input is re-read from the snapshot
    resumed = Merger(_inputs(parts), resume=snap)
    start = [
        resumed.resume_offset(q) if resumed.resume_offset(q) is not None else 0
        for q in range(len(parts))
    ]
    pos, more = _feed(resumed, parts, after, start=start)
    out += more + _drain(resumed, parts, pos)
    assert out == _reference(parts)


def test_nothing_is_released_while_an_input_may_still_deliver_an_earlier_record():
    m = Merger([Input("t", 0), Input("t", 1)])
    m.push(0, 0, 100, 100, "a")
    m.push(0, 1, 200, 200, "b")
    assert m.ready() == []  # input 1 has said nothing yet
    m.push(1, 0, 150, 150, "c")
    assert [item for _, item in m.ready()] == ["a"]  # 150 is input 1's floor: 150 itself waits
    m.idle(1, 1000)  # caught up; the grace period has passed up to 1000
    assert [item for _, item in m.ready()] == ["c"]  # input 0 may still deliver more at 200
    m.idle(0, 1000)
    assert [item for _, item in m.ready()] == ["b"]


def test_a_record_behind_an_idle_floor_is_late_and_takes_the_floor():
    m = Merger([Input("t", 0), Input("t", 1)])
    m.idle(1, 500)
    m.push(0, 0, 100, 100, "a")
    assert m.ready() == []  # input 0 may still deliver more records stamped 100
    m.push(0, 1, 600, 600, "b")
    assert [item for _, item in m.ready()] == ["a"]
    assert m.push(1, 0, 90, 90, "late") is True
    assert (m.late, m.late_idle) == (1, 1)  # behind an idle bound: its place depends on timing
    assert m.push(0, 2, 550, 550, "behind b") is True  # behind b, read before it
    assert (m.late, m.late_idle) == (2, 1)  # placed by the log alone
    m.finish(0)
    m.finish(1)
    [(key, item), (_, second), (_, third)] = m.ready()
    assert item == "late" and key[0] == 500
    assert (second, third) == ("behind b", "b")  # b's floor, then its own earlier time


def test_labels_are_shifted_by_their_visibility_delay():
    m = Merger([Input("tx", 0, rank=1), Input("labels", 0, rank=0, shift_ms=1000)])
    m.push(1, 0, 100, 100, "label@100")
    m.push(0, 0, 600, 600, "tx@600")
    m.push(0, 1, 1100, 1100, "tx@1100")
    m.push(0, 2, 1200, 1200, "tx@1200")
    m.finish(0)
    m.finish(1)
    assert [item for _, item in m.ready()] == ["tx@600", "label@100", "tx@1100", "tx@1200"]


def test_an_idle_labels_input_does_not_hold_back_recent_transactions():
    m = Merger([Input("tx", 0, rank=1), Input("labels", 0, rank=0, shift_ms=1000)])
    m.idle(1, 10_000 - 200)  # "now" is 10 000, grace 200
    m.push(0, 0, 9_990, 9_990, "tx")
    m.idle(0, 10_000 - 200)
    m.push(0, 1, 9_995, 9_995, "tx2")
    assert [item for _, item in m.ready()] == ["tx"]  # tx2 waits for input 0's next record


def test_the_input_holding_the_watermark_is_never_paused():
    m = Merger([Input("t", 0), Input("t", 1)], max_buffered=2)
    for i in range(5):
        m.push(0, i, 100, 100, i)  # five records at the same ts: all must be read to go on
    m.idle(1, 1000)
    assert not m.should_pause(0)
    for i in range(5):
        m.push(1, i, 2000 + i, 2000 + i, i)
    assert m.should_pause(1)  # ahead of the watermark and over its budget
    assert not m.should_pause(0)
