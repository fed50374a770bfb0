"""train: a date-only --train-to includes its day; the window is printed and recorded."""

from __future__ import annotations

import pytest

from fraudstream.cli import main
from fraudstream.models.registry import ModelRegistry
from fraudstream.simulate import SimConfig, generate, write_jsonl

DAY = 86_400_000
JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the simulator's default start


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    out = tmp_path_factory.mktemp("streams")
    sim = generate(SimConfig(seed=3, n_customers=80, n_terminals=160, days=5, start_ms=JAN1))
    write_jsonl(out / "tx.jsonl", sim.transactions)
    write_jsonl(out / "labels.jsonl", sim.labels)
    return out, sim.transactions


def _train(out, registry, *window: str) -> int:
    argv = ["train", "--transactions", str(out / "tx.jsonl"), "--labels", str(out / "labels.jsonl")]
    argv += ["--feature-set", "handbook", "--registry", str(registry), "--n-estimators", "5"]
    return main([*argv, *window])


def test_date_only_train_to_includes_the_whole_day(streams, tmp_path, capsys):
    out, transactions = streams
    registry = tmp_path / "registry"
    assert _train(out, registry, "--train-from", "2026-01-02", "--train-to", "2026-01-03") == 0
    assert "training window [2026-01-02T00:00:00Z, 2026-01-04T00:00:00Z)" in capsys.readouterr().err
    window = ModelRegistry(registry).manifest("v0001")["training_window"]
    assert window["requested_from_ms"] == JAN1 + DAY
    assert window["requested_to_ms"] == JAN1 + 3 * DAY
    in_window = [t["event_time_ms"] for t in transactions if JAN1 + DAY <= t["event_time_ms"]]
    in_window = [t for t in in_window if t < JAN1 + 3 * DAY]
    # two days of rows: the last one is late on 2026-01-03, which "exclusive" would have dropped
    assert window["from_ms"] == min(in_window)
    assert window["to_ms"] == max(in_window) >= JAN1 + 2 * DAY


def test_a_timestamp_train_to_stays_exclusive(streams, tmp_path, capsys):
    out, _ = streams
    registry = tmp_path / "registry"
    window = ["--train-from", "2026-01-02T00:00", "--train-to", "2026-01-03T00:00:00Z"]
    assert _train(out, registry, *window) == 0
    assert "[2026-01-02T00:00:00Z, 2026-01-03T00:00:00Z)" in capsys.readouterr().err
    recorded = ModelRegistry(registry).manifest("v0001")["training_window"]
    assert recorded["to_ms"] < JAN1 + 2 * DAY == recorded["requested_to_ms"]


def test_an_inverted_training_window_is_a_clear_error(streams, tmp_path, capsys):
    out, _ = streams
    window = ["--train-from", "2026-01-03", "--train-to", "2026-01-02"]
    assert _train(out, tmp_path / "registry", *window) == 2
    err = capsys.readouterr().err
    assert "--train-from/--train-to: empty window" in err
    assert not (tmp_path / "registry").exists()
