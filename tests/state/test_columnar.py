"""The columnar kernel gives bit for bit the per-op path's features and stored bytes.

Random streams (out-of-order events, several events in one second, gaps past the horizon, labels
before and after their transactions, missing entity fields, novelty values) are applied in random
micro-batches by an engine that takes the columnar path wherever a group qualifies, and by one
that never does; every row and every stored record must be equal.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import (
    EntityPlan,
    FeatureSet,
    Window,
    default_feature_set,
    handbook_feature_set,
)
from fraudstream.state.memory import MemoryKV

S = 1000
SMALL = FeatureSet(
    name="small",
    version=1,
    plans=(
        EntityPlan(
            entity="account",
            field="account_id",
            prefix="acct",
            windows=(Window(length_ms=10 * S, name="10s"), Window(length_ms=60 * S, name="60s")),
            aggs=("count", "sum", "mean", "std"),
            zscore_window=Window(length_ms=60 * S, name="60s"),
            recency=True,
            novelty_fields=("device_id", "country"),
        ),
        EntityPlan(
            entity="terminal",
            field="terminal_id",
            prefix="term",
            windows=(Window(length_ms=30 * S, name="30s"),),
            include_current=False,
            delay_ms=20 * S,
            delayed_windows=(Window(length_ms=20 * S, name="20s"),),
        ),
        EntityPlan(
            entity="device",
            field="device_id",
            prefix="dev",
            windows=(Window(length_ms=5 * S, name="5s"),),
            aggs=("count", "sum", "max"),
        ),
    ),
    allowed_lateness_ms=15 * S,
    max_buckets=48,
)


@st.composite
def streams(draw):
    n = draw(st.integers(1, 150))
    events, clock = [], 10**9
    for i in range(n):
        clock += draw(
            st.sampled_from([0, 0, 300, 999, 1000, 2000, 5000, 5000, 40_000] * 3 + [200_000])
        )
        t = clock - draw(st.sampled_from([0] * 12 + [2000, 9000]))
        events.append(
            Transaction(
                tx_id=f"t{i}",
                event_time_ms=t,
                account_id=draw(st.sampled_from(["a", "b", "c", "d"])),
                amount=draw(st.sampled_from([0.0, 1.0, 2.5, 10.0, 123.45, 0.1])),
                terminal_id=draw(st.sampled_from(["T1", "T2", None])),
                device_id=draw(st.sampled_from(["d1", "d2", "d3", None])),
                country=draw(st.sampled_from(["FR", "DE", None])),
            )
        )
        if i and draw(st.integers(0, 9)) == 0:
            target = f"t{draw(st.integers(0, i + 3))}"  # sometimes a label before its tx
            events.append(
                Label(
                    target, draw(st.sampled_from([1, 1, 0])), t + draw(st.integers(-5000, 30_000))
                )
            )
    cuts = draw(st.lists(st.integers(0, len(events)), max_size=8))
    return events, sorted(set(cuts))


def _run(fs, events, cuts, *, columnar: bool, in_place: bool = False):
    """``columnar``: the columnar path wherever a group qualifies; else the per-op path, on
    decoded histories, or with ``in_place`` on the encoded cache (records read in place)."""
    kv = MemoryKV()
    engine = InOrderEngine(
        fs,
        EpochStore(kv, resume_epoch=None),
        EpochStore(MemoryKV(), resume_epoch=None),
        keep_decoded=not (columnar or in_place),
        cache_entries=3,  # evictions and re-reads too
    )
    engine.entities.columnar_min_ops = 10**9 if in_place else 1
    rows = {}
    bounds = [0, *cuts, len(events)]
    for lo, hi in itertools.pairwise(bounds):
        chunk = events[lo:hi]
        if not chunk:
            continue
        result = engine.process(chunk)
        for i, row in result.rows:
            rows[chunk[i].tx_id] = row
    engine.flush()
    return rows, dict(kv.data), engine


COVERAGE = [0, 0, 0]


@settings(max_examples=250, deadline=None)
@given(streams())
def test_columnar_equals_per_op_bit_for_bit(stream):
    events, cuts = stream
    for fs in (SMALL,):
        want_rows, want_state, _ = _run(fs, events, cuts, columnar=False)
        got_rows, got_state, engine = _run(fs, events, cuts, columnar=True)
        assert got_rows == want_rows
        assert got_state == want_state
        assert engine.entities.stats.columnar_fallbacks == 0
        COVERAGE[0] += engine.entities.stats.columnar_ops
        COVERAGE[1] += engine.entities.stats.tx_ops
        COVERAGE[2] += engine.entities.stats.label_cuts


IN_PLACE = [0, 0]


@settings(max_examples=250, deadline=None)
@given(streams())
def test_per_op_in_place_equals_per_op_decoded_bit_for_bit(stream):
    """The per-op path on the encoded cache reads most records in place (no decode, rows
    appended to the bytes): the same rows and stored bytes as on decoded histories."""
    events, cuts = stream
    want_rows, want_state, _ = _run(SMALL, events, cuts, columnar=False)
    got_rows, got_state, engine = _run(SMALL, events, cuts, columnar=False, in_place=True)
    assert got_rows == want_rows
    assert got_state == want_state
    IN_PLACE[0] += engine.entities.stats.in_place_ops
    IN_PLACE[1] += engine.entities.stats.tx_ops


def test_columnar_equals_per_op_on_the_presets():
    from fraudstream.replay.features import file_order
    from fraudstream.simulate import SimConfig, generate

    sim = generate(SimConfig(seed=5, n_customers=150, n_terminals=300, days=40))
    for fs in (default_feature_set(), handbook_feature_set()):
        events = list(file_order(sim.transactions, sim.labels, fs))
        cuts = list(range(0, len(events), 97))
        want_rows, want_state, _ = _run(fs, events, cuts, columnar=False)
        got_rows, got_state, engine = _run(fs, events, cuts, columnar=True)
        assert got_rows == want_rows, fs.name
        assert got_state == want_state, fs.name
        stats = engine.entities.stats
        assert stats.columnar_fallbacks == 0
        assert stats.columnar_ops > 0.9 * stats.tx_ops, (stats.columnar_ops, stats.tx_ops)
        if fs.name == "default":  # terminals with labels in a batch: cut at the fraud op
            assert stats.label_cuts > 10, stats


def test_a_hot_entity_past_its_bucket_budget_stays_columnar_and_exact():
    """Batches that take an entity past ``max_buckets`` many times: each is cut where the per-op
    path coarsens, that op is applied per op, and the columnar kernel takes the rest."""
    import random

    from fraudstream.state.features import DAY_MS, HOUR_MS

    fs = FeatureSet(
        name="budget",
        version=1,
        plans=(
            EntityPlan(
                entity="terminal",
                field="terminal_id",
                prefix="t",
                windows=(
                    Window(length_ms=HOUR_MS, name="1h"),
                    Window(length_ms=DAY_MS, name="1d"),
                    Window(length_ms=7 * DAY_MS, name="7d"),
                ),
                aggs=("count", "sum"),
            ),
        ),
        max_buckets=64,
    )
    rng = random.Random(3)
    times = sorted(rng.randrange(0, 10 * DAY_MS) for _ in range(3000))
    events = [
        Transaction(f"t{i}", t, "a", float(i % 7), terminal_id=rng.choice(["T", "T", "U"]))
        for i, t in enumerate(times)
    ]
    cuts = list(range(0, len(events), 500))
    want_rows, want_state, _ = _run(fs, events, cuts, columnar=False)
    got_rows, got_state, engine = _run(fs, events, cuts, columnar=True)
    assert got_rows == want_rows
    assert got_state == want_state
    stats = engine.entities.stats
    assert stats.budget_cuts > 20, stats
    assert stats.columnar_ops > 0.8 * stats.tx_ops, stats  # 89%; every op per op before


def test_the_random_streams_exercised_the_columnar_path():
    # runs after the property test (file order). The random streams are built to hit the per-op
    # path's corner cases (late events, batches spanning the tiny horizon, labels), so only part
    # of their ops qualify; thousands still take the columnar path and are compared bit for bit.
    assert COVERAGE[0] > 1000 and COVERAGE[0] > 0.05 * COVERAGE[1], COVERAGE
    assert COVERAGE[2] > 50, COVERAGE  # groups cut at a fraud op, the rest in a later round


def test_the_random_streams_exercised_records_in_place():
    # runs after the property test above (file order): a good part of the ops (those without
    # novelty values, fraud entries or late events) were applied in place and compared
    assert IN_PLACE[0] > 1000 and IN_PLACE[0] > 0.1 * IN_PLACE[1], IN_PLACE
