"""The CLI end to end on files: simulate -> train, settings from a TOML file."""

from __future__ import annotations

import orjson
import pytest

from fraudstream.cli import main
from fraudstream.models.registry import ModelRegistry
from fraudstream.state.features import handbook_feature_set


def test_simulate_then_train_from_files(tmp_path, capsys):
    config = tmp_path / "settings.toml"
    config.write_text("customers = 150\ndays = 12\nseed = 4\nterminals = 300\n")
    assert main(["simulate", "--config", str(config), "--out-dir", str(tmp_path / "data")]) == 0
    lines = (tmp_path / "data" / "transactions.jsonl").read_bytes().splitlines()
    assert 100 < len(lines) < 20_000  # the TOML file, not the defaults (5,000 x 30 days)
    assert orjson.loads(lines[0])["schema_version"] == 1
    registry = tmp_path / "registry"
    rc = main(
        [
            "train",
            "--transactions",
            str(tmp_path / "data" / "transactions.jsonl"),
            "--labels",
            str(tmp_path / "data" / "labels.jsonl"),
            "--feature-set",
            "handbook",
            "--registry",
            str(registry),
            "--n-estimators",
            "10",
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("v0001")
    loaded = ModelRegistry(registry).load("v0001", feature_set=handbook_feature_set())
    assert loaded.manifest["feature_set"]["name"] == "handbook"

    # a training window: the whole input feeds the state, only the window becomes rows
    start = orjson.loads(lines[0])["event_time_ms"] // 86_400_000 * 86_400_000
    lo, hi = start + 3 * 86_400_000, start + 9 * 86_400_000
    window = ["--train-from", str(lo), "--train-to", str(hi)]
    tx_file, label_file = (
        tmp_path / "data" / "transactions.jsonl",
        tmp_path / "data" / "labels.jsonl",
    )
    argv = ["train", "--transactions", str(tx_file), "--labels", str(label_file)]
    argv += ["--feature-set", "handbook", "--registry", str(registry), "--n-estimators", "10"]
    assert main([*argv, *window]) == 0
    trained = ModelRegistry(registry).load("v0002").manifest["training_window"]
    assert lo <= trained["from_ms"] <= trained["to_ms"] < hi


def test_run_without_bootstrap_servers_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["run", "--registry", str(tmp_path)]) == 2
    assert "bootstrap servers" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("simulate", "train", "run", "demo"):
        assert command in out
