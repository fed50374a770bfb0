"""One valid transaction stamped far ahead must not make anything else forget its history.

The stream is January; one transaction in the middle says it happened ten months later (and
another 12 hours later). Pruning, sweeps and expiry follow the maintenance clock, which that
one record moves by one step at most: every other transaction's features equal those of the same
stream without the outliers, sweeps running daily.
"""

from __future__ import annotations

import dataclasses

from fraudstream.schema import Transaction
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.base import EpochStore
from fraudstream.state.engine import InOrderEngine
from fraudstream.state.features import DAY_MS, default_feature_set
from fraudstream.state.memory import MemoryKV

HOUR = 3_600_000
FS = default_feature_set()


def _rows(txs, *, sweep_every_ms=DAY_MS):
    engine = InOrderEngine(
        FS, EpochStore(MemoryKV(), resume_epoch=None), EpochStore(MemoryKV(), resume_epoch=None)
    )
    engine.entities.sweep_every_ms = sweep_every_ms
    out = {}
    for i in range(0, len(txs), 64):
        chunk = txs[i : i + 64]
        for tx, row in zip(chunk, engine.on_transactions(chunk), strict=True):
            out[tx.tx_id] = row
    return out, engine


def test_outlier_timestamps_do_not_erase_history():
    sim = generate(SimConfig(seed=4, n_customers=200, n_terminals=400, days=40))
    txs = [
        Transaction(**{k: v for k, v in t.items() if k != "schema_version"})
        for t in sim.transactions
    ]
    mid = len(txs) // 2
    far = dataclasses.replace(
        txs[mid], tx_id="far", event_time_ms=txs[mid].event_time_ms + 300 * DAY_MS
    )
    soon = dataclasses.replace(
        txs[mid + 1], tx_id="soon", event_time_ms=txs[mid].event_time_ms + 12 * HOUR
    )
    with_outliers = [*txs[:mid], far, soon, *txs[mid:]]
    base, _ = _rows(txs)
    got, engine = _rows(with_outliers)
    assert engine.entities.stats.sweeps >= 30, "sweeps never ran"
    names = FS.feature_names
    touched = {
        v
        for o in (far, soon)
        for v in (o.account_id, o.card_id, o.terminal_id, o.device_id, o.ip, o.merchant_id)
    }
    differ = []
    for tx in txs:
        if got[tx.tx_id] != base[tx.tx_id]:
            differ.append(tx)
    # only transactions sharing an entity with an outlier may see it (a novelty flag, a window
    # that now holds the 12-hour one); nothing else changes, and no history is lost
    strangers = [
        (
            tx.tx_id,
            [n for n, a, b in zip(names, got[tx.tx_id], base[tx.tx_id], strict=True) if a != b],
        )
        for tx in differ
        if not {tx.account_id, tx.card_id, tx.terminal_id, tx.device_id, tx.ip, tx.merchant_id}
        & touched
    ]
    assert strangers == []
    count_30d = names.index("account_count_30d")
    for tx in txs:
        assert got[tx.tx_id][count_30d] >= base[tx.tx_id][count_30d], tx.tx_id
