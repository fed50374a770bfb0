"""Training sets honour as-of, label maturity and repeated labels."""

from __future__ import annotations

import pytest

from fraudstream.errors import FraudstreamError
from fraudstream.replay.training_set import training_set
from fraudstream.state.features import handbook_feature_set

DAY = 86_400_000
FS = handbook_feature_set()


def _decision(tx_id: str, t: int) -> dict:
    return {
        "tx_id": tx_id,
        "event_time_ms": t,
        "decided_at_ms": t + 5,
        "feature_set": {"name": FS.name, "version": FS.version, "fingerprint": FS.fingerprint},
        "features": [float(i) for i in range(len(FS.feature_names))],
    }


def _label(tx_id: str, label: int, t: int) -> dict:
    return {"tx_id": tx_id, "label": label, "label_time_ms": t}


def test_as_of_maturity_and_latest_label_rules():
    decisions = [
        _decision("fraud_known", 1 * DAY),
        _decision("fraud_later", 2 * DAY),  # chargeback after as-of: unknown, mature -> 0
        _decision("reversed", 3 * DAY),  # 1 then 0, both known -> 0
        _decision("young", 38 * DAY),  # no label, younger than maturity -> left out
        _decision("young_fraud", 39 * DAY),  # known fraud counts even when young
        _decision("fraud_known", 1 * DAY),  # re-emitted after a recovery
    ]
    labels = [
        _label("fraud_known", 1, 9 * DAY),
        _label("fraud_later", 1, 45 * DAY),
        _label("reversed", 1, 10 * DAY),
        _label("reversed", 0, 12 * DAY),
        _label("young_fraud", 1, 39 * DAY + 1),
    ]
    table = training_set(decisions, labels, as_of_ms=40 * DAY, maturity_ms=30 * DAY)
    rows = dict(
        zip(table.column("tx_id").to_pylist(), table.column("label").to_pylist(), strict=True)
    )
    assert rows == {"fraud_known": 1, "fraud_later": 0, "reversed": 0, "young_fraud": 1}
    assert table.column_names == ["tx_id", "event_time_ms", *FS.feature_names, "label"]


def test_a_label_unknown_at_as_of_is_never_used():
    decisions = [_decision("t", 1 * DAY)]
    labels = [_label("t", 1, 50 * DAY)]
    before = training_set(decisions, labels, as_of_ms=49 * DAY, maturity_ms=30 * DAY)
    after = training_set(decisions, labels, as_of_ms=50 * DAY, maturity_ms=30 * DAY)
    assert before.column("label").to_pylist() == [0]
    assert after.column("label").to_pylist() == [1]


def test_other_feature_set_fingerprint_is_refused():
    d = _decision("t", 1 * DAY)
    d["feature_set"] = {**d["feature_set"], "fingerprint": "0" * 16}
    with pytest.raises(FraudstreamError, match="fingerprint"):
        training_set([d], [], as_of_ms=40 * DAY)


def test_cli_training_set(tmp_path, capsys):
    import pyarrow.parquet as pq

    from fraudstream.cli import main
    from fraudstream.simulate import write_jsonl

    write_jsonl(tmp_path / "d.jsonl", [_decision("a", 1 * DAY), _decision("b", 2 * DAY)])
    write_jsonl(tmp_path / "l.jsonl", [_label("a", 1, 9 * DAY)])
    out = tmp_path / "ts.parquet"
    argv = ["replay", "training-set", "--decisions", str(tmp_path / "d.jsonl")]
    argv += ["--labels", str(tmp_path / "l.jsonl"), "--as-of", "1970-02-10", "--out", str(out)]
    assert main(argv) == 0
    assert pq.read_table(out).column("label").to_pylist() == [1, 0]
    assert "2 rows (1 fraud)" in capsys.readouterr().out


def test_training_set_frame_for_notebooks(tmp_path):
    from fraudstream.replay import training_set_frame
    from fraudstream.simulate import write_jsonl

    write_jsonl(tmp_path / "d.jsonl", [_decision("a", 1 * DAY), _decision("b", 35 * DAY)])
    write_jsonl(tmp_path / "l.jsonl", [_label("a", 1, 9 * DAY)])
    df = training_set_frame(tmp_path / "d.jsonl", tmp_path / "l.jsonl", as_of_ms=40 * DAY)
    assert df["tx_id"].tolist() == ["a"]  # "b" is younger than the 30-day maturity
    assert df["label"].tolist() == [1]
