"""Replay: point in time (no leakage), deterministic Parquet, CLI."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.cli import main
from fraudstream.replay.api import features_frame, write_features
from fraudstream.replay.features import REPLAY_BATCH, replay_features
from fraudstream.simulate import SimConfig, generate, write_jsonl
from fraudstream.state.features import default_feature_set, handbook_feature_set

SIM = generate(SimConfig(seed=9, n_customers=120, n_terminals=200, days=12))


@settings(max_examples=8, deadline=None)
@given(cut=st.integers(1, len(SIM.transactions) - 1))
def test_future_events_never_change_past_rows(cut):
    fs = handbook_feature_set()
    full = replay_features(SIM.transactions, SIM.labels, fs)
    prefix = replay_features(SIM.transactions[:cut], SIM.labels, fs)
    assert prefix.tx_ids == full.tx_ids[:cut]
    assert np.array_equal(prefix.X, full.X[:cut])


@pytest.mark.parametrize("make_fs", [handbook_feature_set, default_feature_set])
def test_features_do_not_depend_on_the_replay_batch_size(make_fs):
    # a replay takes batches of REPLAY_BATCH records, the live flow takes whatever it polled:
    # the columnar step (many events of an entity in one batch) and the per-op step (one at a
    # time) must agree to the bit
    fs = make_fs()
    ref = replay_features(SIM.transactions, SIM.labels, fs, batch_size=1)
    assert len(SIM.transactions) + len(SIM.labels) < REPLAY_BATCH  # one batch: all columnar
    for batch_size in (7, 250, REPLAY_BATCH):
        got = replay_features(SIM.transactions, SIM.labels, fs, batch_size=batch_size)
        assert got.tx_ids == ref.tx_ids
        assert np.array_equal(got.X, ref.X, equal_nan=True), batch_size


def test_labels_issued_after_a_transaction_never_reach_it():
    fs = handbook_feature_set()
    with_labels = replay_features(SIM.transactions, SIM.labels, fs)
    first_label = min(lab["label_time_ms"] for lab in SIM.labels)
    k = sum(1 for tx in SIM.transactions if tx["event_time_ms"] < first_label)
    without = replay_features(SIM.transactions, [], fs)
    assert 0 < k < len(SIM.transactions)
    assert np.array_equal(with_labels.X[:k], without.X[:k])
    assert not np.array_equal(with_labels.X, without.X)


def test_parquet_is_deterministic_and_ordered(tmp_path):
    tx, lab = tmp_path / "tx.jsonl.gz", tmp_path / "labels.jsonl"
    write_jsonl(tx, SIM.transactions)
    write_jsonl(lab, SIM.labels)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert write_features(tx, lab, "default", a) == len(SIM.transactions)
    write_features(tx, lab, "default", b)
    assert a.read_bytes() == b.read_bytes()
    table = pq.read_table(a)
    assert table.column_names == ["tx_id", *default_feature_set().feature_names]
    assert table.column("tx_id").to_pylist() == [t["tx_id"] for t in SIM.transactions]
    # Parquet input gives the same bytes as JSONL input
    tx_parquet = tmp_path / "tx.parquet"
    pq.write_table(pa.Table.from_pylist(SIM.transactions), tx_parquet)
    write_features(tx_parquet, lab, "default", tmp_path / "c.parquet")
    assert (tmp_path / "c.parquet").read_bytes() == a.read_bytes()
    df = features_frame(tx, lab, "handbook")
    assert list(df.columns[:2]) == ["tx_id", "TX_AMOUNT"]


def test_cli_replay_features(tmp_path, capsys):
    tx, lab = tmp_path / "tx.jsonl", tmp_path / "labels.jsonl"
    write_jsonl(tx, SIM.transactions[:500])
    write_jsonl(lab, SIM.labels)
    out = tmp_path / "f.parquet"
    argv = ["replay", "features", "--transactions", str(tx), "--labels", str(lab)]
    assert main([*argv, "--feature-set", "handbook", "--out", str(out)]) == 0
    assert pq.read_table(out).num_rows == 500
    assert "500 rows" in capsys.readouterr().out
