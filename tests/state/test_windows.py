"""Window features equal a brute-force recount from their definition, on random streams.

The streams mix entities, out-of-order events (within the allowed lateness), missing entity fields,
repeated and reversed labels, and span several horizons so pruning is exercised.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import EntityPlan, FeatureSet, Window
from fraudstream.state.memory import MemoryKV

S = 1000
LATENESS_S = 20

FS = FeatureSet(
    name="test",
    version=1,
    plans=(
        EntityPlan(
            entity="account",
            field="account_id",
            prefix="acct",
            windows=(
                Window(length_ms=10 * S, name="10s"),
                Window(length_ms=60 * S, name="60s"),
                Window(length_ms=300 * S, name="300s"),
            ),
            aggs=("count", "sum", "mean", "std", "max"),
            zscore_window=Window(length_ms=300 * S, name="300s"),
            recency=True,
            novelty_fields=("device_id",),
        ),
        EntityPlan(
            entity="terminal",
            field="terminal_id",
            prefix="term",
            windows=(Window(length_ms=30 * S, name="30s"),),
            aggs=("count", "sum"),
            include_current=False,
            delay_ms=30 * S,
            delayed_windows=(
                Window(length_ms=20 * S, name="20s"),
                Window(length_ms=60 * S, name="60s"),
            ),
        ),
    ),
    allowed_lateness_ms=LATENESS_S * S,
)
H_S = FS.horizon_ms() // S


def _engine() -> InOrderEngine:
    return InOrderEngine(
        FS, EpochStore(MemoryKV(), resume_epoch=None), EpochStore(MemoryKV(), resume_epoch=None)
    )


@st.composite
def streams(draw):
    n = draw(st.integers(1, 120))
    events = []
    clock = 0
    max_seen = 0
    for i in range(n):
        clock += draw(st.integers(0, 40)) * S + draw(st.sampled_from([0, 0, 1, 500, 999]))
        # out of order, but never later than the allowed lateness behind the newest event
        late = draw(st.integers(0, LATENESS_S * S))
        t = max(clock - late, max_seen - LATENESS_S * S, 0)
        max_seen = max(max_seen, t)
        tx = Transaction(
            tx_id=f"t{i}",
            event_time_ms=t,
            account_id=draw(st.sampled_from(["a", "b", "c"])),
            amount=draw(st.floats(0, 1000, allow_nan=False).map(lambda x: round(x, 2))),
            terminal_id=draw(st.sampled_from(["T1", "T2", None])),
            device_id=draw(st.sampled_from(["d1", "d2", "d3", None])),
        )
        events.append(tx)
        if draw(st.booleans()) and i > 0:
            target = draw(st.integers(0, i))
            # half the labels land exactly on a transaction time: the "<=" boundary matters
            if draw(st.booleans()):
                label_t = t + draw(st.integers(-5, 40)) * S
            else:
                label_t = t + draw(st.integers(-5 * S, 40 * S))
            events.append(Label(f"t{target}", draw(st.sampled_from([1, 1, 0])), label_t))
    return events


def _brute_force(events, idx):
    """Features of the transaction at ``events[idx]`` from the definitions alone."""
    tx = events[idx]
    ts = tx.event_time_ms // S
    earlier = [e for e in events[:idx] if isinstance(e, Transaction)]
    row: dict[str, float] = {}
    # account plan
    mine = [e for e in earlier if e.account_id == tx.account_id]
    ref = max([ts] + [e.event_time_ms // S for e in mine])
    for w in (10, 60, 300):
        inw = [e.amount for e in mine if ts - w < e.event_time_ms // S <= ts] + [tx.amount]
        c = len(inw)
        mean = sum(inw) / c
        row[f"acct_count_{w}s"] = c
        row[f"acct_sum_{w}s"] = sum(inw)
        row[f"acct_mean_{w}s"] = mean
        row[f"acct_std_{w}s"] = math.sqrt(sum((a - mean) ** 2 for a in inw) / c) if c >= 2 else 0.0
        row[f"acct_max_{w}s"] = max(inw)
    prior = [e.amount for e in mine if ts - 300 < e.event_time_ms // S <= ts]
    if len(prior) >= 2:
        mean = sum(prior) / len(prior)
        sd = math.sqrt(sum((a - mean) ** 2 for a in prior) / len(prior))
        row["acct_amount_zscore_300s"] = (tx.amount - mean) / sd if sd > 1e-9 else 0.0
    else:
        row["acct_amount_zscore_300s"] = 0.0
    prev = [e.event_time_ms // S for e in mine if ref - H_S < e.event_time_ms // S <= ts]
    row["acct_seconds_since_prev"] = float(ts - max(prev)) if prev else -1.0
    if tx.device_id is None:
        row["acct_new_device_id"] = 0.0
    else:
        cutoff_ms = ref * S - FS.horizon_ms()
        seen = any(e.device_id == tx.device_id and e.event_time_ms > cutoff_ms for e in mine)
        row["acct_new_device_id"] = 0.0 if seen else 1.0
    # terminal plan
    names = FS.feature_names[FS.plan_slices[1][0] : FS.plan_slices[1][1]]
    if tx.terminal_id is None:
        row.update(dict(zip(names, FS.imputed(1), strict=True)))
        return row
    term = [e for e in earlier if e.terminal_id == tx.terminal_id]
    inw = [e.amount for e in term if ts - 30 < e.event_time_ms // S <= ts]
    row["term_count_30s"] = len(inw)
    row["term_sum_30s"] = sum(inw)
    hi = ts - 30
    for w in (20, 60):
        txs = [e for e in term if hi - w < e.event_time_ms // S <= hi]
        frauds = 0
        for e in txs:
            pos = events.index(e)
            state = 0
            for lab in events[pos + 1 : idx]:
                if isinstance(lab, Label) and lab.tx_id == e.tx_id and lab.label != state:
                    if lab.label_time_ms <= tx.event_time_ms:
                        frauds += 1 if lab.label == 1 else -1
                    state = lab.label
        row[f"term_NB_TX_{w}s"] = len(txs)
        row[f"term_risk_{w}s"] = frauds / len(txs) if txs else 0.0
    return row


@settings(max_examples=150, deadline=None)
@given(streams())
def test_features_equal_brute_force_recount(events):
    engine = _engine()
    for idx, event in enumerate(events):
        if isinstance(event, Label):
            engine.on_label(event)
            continue
        got = dict(zip(FS.feature_names, engine.on_transaction(event), strict=True))
        want = _brute_force(events, idx)
        for name, value in want.items():
            key = name.replace("term_NB_TX", "term_delayed_count")
            tol = 1e-3 if "std" in key or "zscore" in key else 1e-9
            assert got[key] == pytest.approx(value, rel=1e-9, abs=tol), (name, idx)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_write_back_cache_size_never_changes_results(events):
    """Evicting (and re-reading) histories at every step, decoded or encoded in the cache, gives
    the same rows and the same stored state."""
    variants = [(1, True), (65_536, True), (1, False), (65_536, False)]
    stores = {v: (MemoryKV(), MemoryKV()) for v in variants}
    engines = {
        v: InOrderEngine(
            FS,
            EpochStore(ent, resume_epoch=None),
            EpochStore(idx, resume_epoch=None),
            cache_entries=v[0],
            keep_decoded=v[1],
        )
        for v, (ent, idx) in stores.items()
    }
    for event in events:
        if isinstance(event, Label):
            for engine in engines.values():
                engine.on_label(event)
        else:
            rows = [engines[v].on_transaction(event) for v in variants]
            assert all(row == rows[0] for row in rows)
    for engine in engines.values():
        engine.flush()
    assert all(stores[v][0].data == stores[variants[0]][0].data for v in variants)
