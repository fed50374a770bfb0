"""The ``handbook`` preset on a small hand-checked stream.

2026-01-01 is a Thursday. Customer C1 and terminal T1; t1 is labelled fraud on day 1.
"""

from __future__ import annotations

from fraudstream.schema import Label, Transaction
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import handbook_feature_set
from fraudstream.state.memory import MemoryKV

D = 86_400_000
H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, Thursday


def test_handbook_values_on_hand_checked_stream():
    fs = handbook_feature_set()
    assert len(fs.feature_names) == 15
    e = InOrderEngine(
        fs, EpochStore(MemoryKV(), resume_epoch=None), EpochStore(MemoryKV(), resume_epoch=None)
    )

    def tx(tx_id, t, amount, customer="C1", terminal="T1"):
        return dict(
            zip(
                fs.feature_names,
                e.on_transaction(Transaction(tx_id, t, customer, amount, terminal_id=terminal)),
                strict=True,
            )
        )

    r1 = tx("t1", T0 + 10 * H, 10.0)
    assert (r1["TX_AMOUNT"], r1["TX_DURING_WEEKEND"], r1["TX_DURING_NIGHT"]) == (10.0, 0.0, 0.0)
    assert r1["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    assert r1["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 10.0
    assert r1["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 0
    assert r1["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0

    r2 = tx("t2", T0 + 20 * H, 20.0)
    assert r2["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2
    assert r2["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 15.0

    e.on_label(Label("t1", 1, T0 + D))
    # Saturday 03:00: weekend and night; t1 (day 0, 10:00) left the 1-day window at day 1 10:00.
    r3 = tx("t3", T0 + 2 * D + 3 * H, 30.0)
    assert (r3["TX_DURING_WEEKEND"], r3["TX_DURING_NIGHT"]) == (1.0, 1.0)
    assert r3["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    assert r3["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 3
    assert r3["CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"] == 20.0
    # the terminal's delayed window (t - 8d, t - 7d] is still before any transaction
    assert r3["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 0

    # Day 8 05:00: delayed 1-day window (day 0 05:00, day 1 05:00] holds t1 and t2, t1 is fraud.
    r4 = tx("t4", T0 + 8 * D + 5 * H, 40.0, customer="C2")
    assert r4["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 1
    assert r4["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 2
    assert r4["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.5
    # the 7-day delayed window (day -6 05:00, day 1 05:00] does not reach t3 (day 2)
    assert r4["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 2
    assert r4["TERMINAL_ID_RISK_7DAY_WINDOW"] == 0.5

    # A label issued after the transaction's time never counts (point in time).
    e.on_label(Label("t2", 1, T0 + 30 * D))
    r5 = tx("t5", T0 + 8 * D + 6 * H, 1.0, customer="C3")
    assert r5["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.5

    # Exactly at the label time the label counts (label_time_ms <= t); t3 sits on the boundary
    # t - 7d of the delayed window and is inside it ((lo, hi] is closed on the right).
    e.on_label(Label("t3", 1, T0 + 9 * D + 3 * H))
    r6 = tx("t6", T0 + 9 * D + 3 * H, 1.0, customer="C4")
    assert r6["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 3
    assert r6["TERMINAL_ID_RISK_7DAY_WINDOW"] == 2 / 3
