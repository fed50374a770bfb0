"""The CLI end to end on files: simulate -> train, settings from a TOML file."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import orjson
import pytest

from fraudstream.alerts import format_alert
from fraudstream.cli import build_parser, main
from fraudstream.kafka import create_topics, produce
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


def _leaves(parser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
        return
    for name, child in subs[0].choices.items():
        assert (subs[0].choices and child.description) or _help_of(subs[0], name), name
        yield from _leaves(child, (*path, name))


def _help_of(subparsers, name):
    return next(a.help for a in subparsers._choices_actions if a.dest == name)


def test_every_option_of_every_command_has_help():
    leaves = dict(_leaves(build_parser()))
    assert {"run", "simulate", "model promote", "alerts tail", "config show"} <= set(leaves)
    missing = [
        f"fraudstream {command} {action.option_strings or action.dest}"
        for command, leaf in leaves.items()
        for action in leaf._actions
        if not (action.help and action.help.strip())
    ]
    assert not missing, f"options without help: {missing}"


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


def test_config_show_prints_values_and_where_they_came_from(tmp_path, capsys, monkeypatch):
    config = tmp_path / "fraudstream.toml"
    config.write_text("[run]\nbatch_size = 50\n[kafka]\nbootstrap_servers = 'file:9092'\n")
    monkeypatch.setenv("FRAUDSTREAM_CONFIG", str(config))
    monkeypatch.setenv("FRAUDSTREAM_METRICS_PORT", "9400")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_PASSWORD", "do-not-print-me")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_USERNAME", "scorer")
    assert main(["config", "show", "--format", "json", "run", "--state-partitions", "8"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    run, kafka = shown["settings"]["run"], shown["settings"]["kafka"]
    assert (run["state_partitions"]["value"], run["state_partitions"]["source"]) == (8, "flag")
    assert (run["metrics_port"]["value"], run["metrics_port"]["from"]) == (
        9400,
        "FRAUDSTREAM_METRICS_PORT",
    )
    assert (run["batch_size"]["value"], run["batch_size"]["source"]) == (50, "file")
    assert (run["state_dir"]["value"], run["state_dir"]["source"]) == ("var/state", "default")
    assert kafka["bootstrap_servers"]["value"] == "file:9092"
    assert kafka["sasl_password"]["value"] == "***" and "do-not-print-me" not in out

    assert main(["config", "show"]) == 0  # TOML, for run, by default
    out = capsys.readouterr().out
    assert "state_partitions = 16" in out and "# env FRAUDSTREAM_METRICS_PORT" in out
    assert "do-not-print-me" not in out

    # an incomplete connection is shown, then reported
    monkeypatch.delenv("FRAUDSTREAM_KAFKA_SASL_USERNAME")
    assert main(["config", "show", "train", "--transactions", "t", "--labels", "l"]) == 2
    captured = capsys.readouterr()
    assert "[train]" in captured.out and 'security_protocol = "SASL_SSL"' in captured.out
    assert "fraudstream: error: Kafka settings: security_protocol=SASL_SSL needs" in captured.err


def _alert(i: int) -> dict:
    return {
        "schema_version": 1,
        "id": f"score_psi/v0001/{i}",
        "state": "firing",
        "severity": "warning",
        "kind": "score_drift",
        "detector": "score_psi",
        "statistic": 0.25 + i,
        "threshold": 0.1,
        "window": {"events": 2000, "from_ms": 1_700_000_000_000, "to_ms": 1_700_000_600_000},
        "last_event_ms": 1_700_000_600_000,
        "models": {"champion": "v0001"},
        "runbook": "docs/runbook.md#score-drift",
    }


def test_alerts_tail_prints_the_topic_from_flags_or_environment(
    kafka_settings, unique_topic, capsys, monkeypatch
):
    topic = unique_topic("alerts")
    create_topics(kafka_settings, {topic: 2})
    alerts = [_alert(i) for i in range(3)]
    produce(kafka_settings, topic, alerts, key=lambda a: a["id"])
    for key in list(os.environ):
        if key.startswith("FRAUDSTREAM_KAFKA_"):
            monkeypatch.delenv(key)
    servers = ["--bootstrap-servers", kafka_settings.bootstrap_servers]
    argv = ["alerts", "tail", "--alerts-topic", topic, "--from-beginning"]
    assert main([*argv, *servers]) == 0
    captured = capsys.readouterr()
    assert sorted(captured.out.splitlines()) == sorted(format_alert(a) for a in alerts)
    assert "3 alerts" in captured.err

    # the connection and the topic from the environment, as in a container
    for key, value in kafka_settings.to_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRAUDSTREAM_ALERTS_TOPIC", topic)
    assert main(["alerts", "tail", "--from-beginning"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    # without --from-beginning only new alerts: none, and it stops at the end
    assert main(["alerts", "tail"]) == 0
    assert capsys.readouterr().out == ""


def test_alerts_tail_of_a_missing_topic_is_one_line(kafka_settings, unique_topic, capsys):
    argv = ["alerts", "tail", "--bootstrap-servers", kafka_settings.bootstrap_servers]
    argv += ["--alerts-topic", unique_topic("absent"), "--timeout-s", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "fraudstream: error: topic" in err and "not found in cluster metadata" in err
