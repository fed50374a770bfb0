"""The CLI end to end on files: simulate -> train, settings from a TOML file."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from fraudstream.cli import build_parser, main
from fraudstream.models import train_champion
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
    assert loaded.stage == "production"  # the first model of an empty registry

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
    assert ModelRegistry(registry).stage_of("v0002") == "shadow"  # later ones: shadow

    # straight to production only with --force and a reason, written to the stage log
    assert main([*argv, "--stage", "production"]) == 2
    assert "promote through the gate" in capsys.readouterr().err
    assert main([*argv, "--stage", "production", "--force", "--reason", "drill"]) == 0
    assert ModelRegistry(registry).history("v0003")[0].reason == "forced at training: drill"

    # the online challenger: its own kind, folder and thresholds, in shadow
    assert main([*argv, "--challenger", *window]) == 0
    challenger = ModelRegistry(registry).load("v0004")
    assert (challenger.kind, challenger.stage) == ("river-logistic", "shadow")
    assert challenger.manifest["metrics"]["validation"] == "prequential"
    assert challenger.thresholds != trained_thresholds(registry)
    assert (registry / "river-logistic" / "v0004" / "model.json").is_file()


def trained_thresholds(registry):
    return ModelRegistry(registry).manifest("v0002")["thresholds"]


def _small_registry(path):
    rng = np.random.default_rng(0)
    fs = handbook_feature_set()
    X = rng.normal(size=(500, len(fs.feature_names)))
    result = train_champion(X, X[:, 0] > 1, fs.feature_names, n_estimators=3)
    registry = ModelRegistry(path)
    registry.register(result, fs, stage="production", actor="ci", reason="first")
    registry.register(result, fs, actor="ci", reason="second")
    return registry


def test_model_commands(tmp_path, capsys):
    registry = _small_registry(tmp_path / "registry")
    reg = ["--registry", str(registry.root)]
    assert main(["model", "list", *reg]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["VERSION", "KIND", "STAGE"]
    assert out[1].split()[:3] == ["v0001", "xgboost", "production"]
    assert out[2].split()[:3] == ["v0002", "xgboost", "shadow"]

    # the gate needs evidence, or --force with a reason
    assert main(["model", "promote", "v2", "--to", "production", *reg]) == 2
    assert "give --transactions and --labels" in capsys.readouterr().err
    assert main(["model", "promote", "v2", "--to", "production", "--force", *reg]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    force = ["--force", "--reason", "hotfix", "--actor", "alice"]
    assert main(["model", "promote", "2", "--to", "production", *force, *reg]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "v0002: shadow -> production",
        "v0001: production -> archived",
    ]
    assert main(["model", "rollback", "--reason", "alerts doubled", *reg]) == 0
    assert registry.stages() == {"v0001": "production", "v0002": "archived"}
    capsys.readouterr()
    assert main(["model", "demote", "v1", "--to", "shadow", "--reason", "halt", *reg]) == 0
    assert registry.versions("production") == []
    capsys.readouterr()

    assert main(["model", "history", *reg, "--version", "v2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[2] for line in lines] == [
        "registered -> shadow",
        "shadow -> production",
        "production -> archived",
    ]
    assert lines[1].endswith("by alice: forced without evaluation: hotfix")
    assert main(["model", "list", *reg, "--stage", "canary"]) == 0
    assert "no models" in capsys.readouterr().out
    assert main(["model", "rollback", "--reason", "x", "--registry", str(tmp_path / "none")]) == 2
    assert "no previous production" in capsys.readouterr().err


def test_every_lifecycle_option_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    leaves = [commands["train"], commands["backtest"], commands["retrain"]]
    leaves += commands["model"]._subparsers._group_actions[0].choices.values()
    for leaf in leaves:
        for action in leaf._actions:
            assert action.help, f"{leaf.prog} {action.option_strings or action.dest}: no help"


def test_run_without_bootstrap_servers_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["run", "--registry", str(tmp_path)]) == 2
    assert "bootstrap servers" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("simulate", "train", "run", "demo", "model", "retrain", "backtest"):
        assert command in out
