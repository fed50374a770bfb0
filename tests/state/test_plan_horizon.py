"""Each plan keeps the buckets its own windows can see; a recency plan keeps the set's horizon.

The set below has a 1 h plan (merchant), a 1 h plan with a recency feature (account) and a 7 d
plan (card) that sets the feature set's horizon. After a two-day gap the merchant's record holds
no bucket older than its own horizon, and the account's recency still sees the event before the
gap. Both the per-op path and the columnar kernel (one batch) must agree on that.
"""

from __future__ import annotations

import pytest

from fraudstream.schema import Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import DAY_MS, HOUR_MS, EntityPlan, FeatureSet, Window
from fraudstream.state.history import decode
from fraudstream.state.memory import MemoryKV

LATE_MS = 60_000
FS = FeatureSet(
    name="plan-horizon",
    version=1,
    plans=(
        EntityPlan(
            entity="merchant",
            field="merchant_id",
            prefix="m",
            windows=(Window(length_ms=HOUR_MS, name="1h"),),
            aggs=("count",),
        ),
        EntityPlan(
            entity="account",
            field="account_id",
            prefix="a",
            windows=(Window(length_ms=HOUR_MS, name="1h"),),
            aggs=("count",),
            recency=True,
        ),
        EntityPlan(
            entity="card",
            field="card_id",
            prefix="c",
            windows=(Window(length_ms=7 * DAY_MS, name="7d"),),
            aggs=("count",),
        ),
    ),
    amount_feature=None,
    weekend_feature=None,
    night_feature=None,
    allowed_lateness_ms=LATE_MS,
)


def _stream() -> list[Transaction]:
    # 40 events a minute apart, then 40 more two days later
    times = [i * 60_000 for i in range(40)] + [2 * DAY_MS + i * 60_000 for i in range(40)]
    return [
        Transaction(f"t{i}", t, "A", 1.0, merchant_id="M", card_id="C") for i, t in enumerate(times)
    ]


@pytest.mark.parametrize("columnar", [False, True], ids=["per-op", "columnar"])
def test_each_plan_prunes_at_its_own_horizon_and_recency_at_the_sets(columnar: bool) -> None:
    kv = MemoryKV()
    engine = InOrderEngine(
        FS,
        EpochStore(kv, resume_epoch=None),
        EpochStore(MemoryKV(), resume_epoch=None),
        keep_decoded=not columnar,
    )
    txs = _stream()
    if columnar:
        before_gap = engine.on_transactions(txs[:40])
        after_gap = engine.on_transactions(txs[40:])
        assert engine.entities.stats.columnar_ops == 3 * len(txs)
    else:
        before_gap = [engine.on_transaction(tx) for tx in txs[:40]]
        after_gap = [engine.on_transaction(tx) for tx in txs[40:]]
    first = after_gap[0]
    assert first is not None and before_gap[-1] is not None
    merchant_1h, account_1h, account_recency, card_7d = first
    assert (merchant_1h, account_1h, card_7d) == (1.0, 1.0, 41.0)
    gap_s = (txs[40].event_time_ms - txs[39].event_time_ms) / 1000
    assert account_recency == gap_s  # the 1 h plan's record kept the event before the gap
    engine.flush()
    newest = txs[-1].event_time_ms // 1000
    stored = {key: decode(raw) for key, raw in kv.data.items() if key.startswith(b"e\x00")}

    def record(entity: str):
        return next(
            h for key, h in stored.items() if key.startswith(b"e\x00%s\x00" % entity.encode())
        )

    merchant, account, card = record("merchant"), record("account"), record("card")
    assert min(merchant.times) > newest - (HOUR_MS + LATE_MS) // 1000
    assert len(merchant.times) == 40
    assert len(account.times) == 80  # recency: the set's horizon
    assert len(card.times) == 80
