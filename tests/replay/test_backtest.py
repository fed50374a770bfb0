"""Backtest: the handbook and strict protocols by hand, report files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.cli import main
from fraudstream.errors import ConfigError
from fraudstream.models.registry import ModelRegistry
from fraudstream.replay.backtest import (
    HandbookProtocol,
    StrictProtocol,
    card_precision_at_k,
    period_rows,
)
from fraudstream.replay.features import to_label, to_transaction
from fraudstream.replay.training import train_challenger_from_streams, train_from_streams
from fraudstream.simulate import SimConfig, generate, write_jsonl
from fraudstream.state.features import handbook_feature_set

DAY = 86_400_000
HOUR = 3_600_000


def test_card_precision_at_k_by_hand():
    days = np.array([0, 0, 0, 1, 1])
    cards = ["a", "a", "b", "a", "c"]
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8])
    y = np.array([0, 1, 0, 0, 1])
    # day 0: top-1 card is "a" (max 0.9), fraudulent that day; day 1: top-1 is "c", fraud
    assert card_precision_at_k(days, cards, scores, y, 1).daily == {0: 1.0, 1: 1.0}
    # day 0 top-2: a (fraud), b (legit) -> 0.5; day 1: c, a -> 0.5
    assert card_precision_at_k(days, cards, scores, y, 2).daily == {0: 0.5, 1: 0.5}
    # "a" detected on day 0 and blocked: day 1 ranks "c" alone, still divided by k
    blocked = card_precision_at_k(days, cards, scores, y, 2, remove_detected=True)
    assert blocked.daily == {0: 0.5, 1: 0.5}
    assert blocked.detected == {0: {"a"}, 1: {"c"}}
    assert blocked.removed == {0: frozenset(), 1: {"a"}}


def test_card_precision_ties_go_to_the_smaller_card_id():
    days, scores = np.zeros(3, dtype=int), np.array([0.5, 0.5, 0.5])
    cp = card_precision_at_k(days, ["c", "b", "a"], scores, np.array([1, 0, 0]), 2)
    assert cp.daily == {0: 0.0} and cp.detected == {0: frozenset()}  # a and b, not c


# A hand-checked example. Days are counted from T0; training window days 1-2, feedback delay
# 1 day (day 3 is the delay period), test days 4-6, k = 2.
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, day number 20454
D = T0 // DAY
TRAIN = {"train_from_ms": T0 + 1 * DAY, "train_to_ms": T0 + 3 * DAY, "delay_days": 1}
# tx id: (card, day, hour, fraud?, fraud label issue times in (day, hour), test score)
EXAMPLE = {
    "f0": ("F", 0, 10, 1, [(0, 20)], None),  # fraud before the training window
    "a1": ("A", 1, 10, 1, [(9, 0)], None),  # training window; its chargeback comes late
    "h2": ("H", 2, 10, 0, [(2, 11)], None),  # fraud label issued, then reversed (below)
    "b3": ("B", 3, 10, 1, [(3, 20)], None),  # delay period
    "a4": ("A", 4, 1, 0, [], 0.95),
    "b4": ("B", 4, 1, 1, [(8, 0)], 0.90),
    "c4": ("C", 4, 1, 1, [(5, 12)], 0.80),
    "d4": ("D", 4, 1, 0, [], 0.50),
    "h4": ("H", 4, 1, 0, [], 0.45),
    "f4": ("F", 4, 1, 0, [], 0.40),
    "b5": ("B", 5, 0, 0, [], 0.30),
    "c5": ("C", 5, 0, 1, [(8, 0)], 0.90),
    "d5": ("D", 5, 0, 0, [], 0.60),
    "e5": ("E", 5, 0, 1, [(5, 1)], 0.70),  # labelled the same day
    "f5": ("F", 5, 0, 0, [], 0.85),
    "a6": ("A", 6, 0, 0, [], 0.60),
    "c6": ("C", 6, 0, 1, [(8, 0)], 0.90),
    "d6": ("D", 6, 0, 0, [], 0.40),
    "e6": ("E", 6, 0, 0, [], 0.80),
    "f6": ("F", 6, 0, 0, [], 0.20),
    "g6": ("G", 6, 0, 1, [(8, 0)], 0.30),
}


def _example():
    txs, labels = [], []
    for tx_id, (card, day, hour, _, issued, _) in EXAMPLE.items():
        t = T0 + day * DAY + hour * HOUR
        txs.append(
            {"tx_id": tx_id, "event_time_ms": t, "account_id": card, "card_id": card, "amount": 1.0}
        )
        labels += [
            {"tx_id": tx_id, "label": 1, "label_time_ms": T0 + d * DAY + h * HOUR}
            for d, h in issued
        ]
    labels.append({"tx_id": "h2", "label": 0, "label_time_ms": T0 + 3 * DAY})  # the reversal
    return [to_transaction(t) for t in txs], [to_label(lab) for lab in labels]


def _assess(protocol):
    txs, labels = _example()
    rows = period_rows(txs, labels, protocol, from_ms=T0 + 4 * DAY, to_ms=T0 + 7 * DAY)
    scores = np.array([EXAMPLE[txs[i].tx_id][5] for i in rows.index])
    assert rows.y.tolist() == [EXAMPLE[txs[i].tx_id][3] for i in rows.index]
    cp = card_precision_at_k(
        rows.days, rows.cards, scores, rows.y, 2, remove_detected=protocol.removes_detected_cards
    )
    return rows, cp


def test_handbook_protocol_by_hand():
    rows, cp = _assess(HandbookProtocol(**TRAIN))
    # Known compromised on day d: frauds from the start of the training window up to day d - 2.
    #   day 4: A (day 1). Not F (day 0, before the window), not H (label reversed: no fraud),
    #          not B (day 3 is after day 4 - 2).
    #   day 5: A, B (day 3).   day 6: A, B, C (day 4); not E (day 5).
    assert rows.excluded == {D + 4: {"A"}, D + 5: {"B"}, D + 6: {"A", "C"}}
    assert rows.excluded_transactions == 4
    # day 4 ranks B .90*, C .80*, D .50, H .45, F .40: top 2 both fraudulent, B and C blocked
    # day 5 ranks F .85, E .70*, D .60 (C removed as detected): 1 of 2, E blocked
    # day 6 ranks D .40, G .30*, F .20 (E removed as detected): 1 of 2
    assert cp.daily == {D + 4: 1.0, D + 5: 0.5, D + 6: 0.5}
    assert cp.detected == {D + 4: {"B", "C"}, D + 5: {"E"}, D + 6: {"G"}}
    assert cp.removed == {D + 4: frozenset(), D + 5: {"C"}, D + 6: {"E"}}
    assert cp.compromised == {D + 4: 2, D + 5: 1, D + 6: 1}
    assert cp.mean == pytest.approx(2 / 3)


def test_strict_protocol_by_hand():
    rows, cp = _assess(StrictProtocol())
    # Known compromised on day d: a fraud label issued before day d starts, whatever the window.
    #   day 4: F (day 0), H (day 2, reversal ignored), B (day 3).   day 5: the same (C's label
    #   comes at noon, E's during the day).   day 6: F, H, B, C, E. A's label comes on day 9.
    assert rows.excluded == {D + 4: {"B", "F", "H"}, D + 5: {"B", "F"}, D + 6: {"C", "E", "F"}}
    assert rows.excluded_transactions == 8
    # day 4: A .95, C .80*, D .50 -> 0.5; day 5: C .90*, E .70*, D .60 -> 1.0 (nothing blocked)
    # day 6: A .60, D .40, G .30* -> 0.0
    assert cp.daily == {D + 4: 0.5, D + 5: 1.0, D + 6: 0.0}
    assert cp.removed == {D + 4: frozenset(), D + 5: frozenset(), D + 6: frozenset()}
    assert cp.mean == pytest.approx(0.5)


def test_handbook_known_cards_move_with_the_delay():
    txs, labels = _example()
    since = HandbookProtocol(**TRAIN).compromised_since(txs, labels, {"b3": 1, "a1": 1})
    assert since == {"A": T0 + DAY + 10 * HOUR, "B": T0 + 3 * DAY + 10 * HOUR}
    # B's fraud on day 3 is known from day 3 + delay + 1
    for delay, first_known_day in ((0, 4), (1, 5), (2, 6)):
        protocol = HandbookProtocol(**{**TRAIN, "delay_days": delay})
        known = [day for day in range(D + 3, D + 8) if since["B"] < protocol.cutoff_ms(day)]
        assert known[0] == D + first_known_day
    # a test period closer to the training window than the delay still excludes its frauds
    short_gap = HandbookProtocol(**{**TRAIN, "delay_days": 5})
    assert short_gap.cutoff_ms(D + 3) == TRAIN["train_to_ms"] > since["A"]


@settings(max_examples=40, deadline=None)
@given(
    txs=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 15), st.integers(0, 23), st.booleans()),
        min_size=1,
        max_size=60,
    ),
    train_start=st.integers(0, 3),
    train_days=st.integers(1, 4),
    delay=st.integers(0, 4),
    test_days=st.integers(1, 6),
)
def test_handbook_exclusion_equals_its_day_by_day_statement(
    txs, train_start, train_days, delay, test_days
):
    """The cutoff rule is the handbook's split, which adds one day of frauds per test day."""
    records = [
        {
            "tx_id": str(i),
            "event_time_ms": T0 + day * DAY + hour * HOUR,
            "account_id": f"c{card}",
            "amount": 1.0,
        }
        for i, (card, day, hour, _) in enumerate(txs)
    ]
    labels = [
        {"tx_id": str(i), "label": 1, "label_time_ms": T0 + 30 * DAY}
        for i, (*_, fraud) in enumerate(txs)
        if fraud
    ]

    def fraud_cards(day):
        return {f"c{card}" for card, d, _, fraud in txs if fraud and d == day}

    test_start = train_start + train_days + delay
    known = set().union(*(fraud_cards(d) for d in range(train_start, train_start + train_days)))
    expected = []
    for i in range(test_days):
        known |= fraud_cards(train_start + train_days + i - 1)
        expected += [
            str(j)
            for j, (card, day, _, _) in enumerate(txs)
            if day == test_start + i and f"c{card}" not in known
        ]
    protocol = HandbookProtocol(
        train_from_ms=T0 + train_start * DAY,
        train_to_ms=T0 + (train_start + train_days) * DAY,
        delay_days=delay,
    )
    parsed = [to_transaction(r) for r in records]
    rows = period_rows(
        parsed,
        [to_label(lab) for lab in labels],
        protocol,
        from_ms=T0 + test_start * DAY,
        to_ms=T0 + (test_start + test_days) * DAY,
    )
    assert sorted(parsed[i].tx_id for i in rows.index) == sorted(expected)


def test_handbook_training_window_from_the_model():
    asked = {"from_ms": 5, "to_ms": 90, "requested_from_ms": 0, "requested_to_ms": 100}
    manifest = {"version": "v0007", "training_window": asked}
    p = HandbookProtocol.for_model(manifest)
    assert (p.train_from_ms, p.train_to_ms, p.delay_days) == (0, 100, 7)
    assert p.train_window_source == "model v0007"
    # an older manifest: first to last training row, the last one included
    older = {"version": "v0001", "training_window": {"from_ms": 5, "to_ms": 90}}
    p = HandbookProtocol.for_model(older, train_from_ms=1, delay_days=3)
    assert (p.train_from_ms, p.train_to_ms, p.delay_days) == (1, 91, 3)
    assert p.train_window_source == "given and model v0001"
    assert HandbookProtocol.for_model({}, train_from_ms=1, train_to_ms=2).train_window_source == (
        "given"
    )
    with pytest.raises(ConfigError, match="no training window"):
        HandbookProtocol.for_model({"version": "v0002", "training_window": None})
    with pytest.raises(ValueError, match="empty training window"):
        HandbookProtocol(train_from_ms=10, train_to_ms=10)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """40 days of streams; a model trained on the first 20 (labels known a week later), and a
    challenger on the same 20 days."""
    out = tmp_path_factory.mktemp("recorded")
    cfg = SimConfig(seed=13, n_customers=300, n_terminals=600, days=40)
    sim = generate(cfg)
    train_end = cfg.start_ms + 20 * DAY
    history = (
        [t for t in sim.transactions if t["event_time_ms"] < train_end],
        [lab for lab in sim.labels if lab["label_time_ms"] < train_end + 7 * DAY],
    )
    train_from_streams(*history, handbook_feature_set(), out / "registry", n_estimators=30)
    # v0002: the online challenger on the same days, learning the labels known by their end
    train_challenger_from_streams(
        *history, handbook_feature_set(), out / "registry", train_to_ms=train_end
    )
    write_jsonl(out / "tx.jsonl", sim.transactions)
    write_jsonl(out / "labels.jsonl", sim.labels)
    argv = ["backtest", "--transactions", str(out / "tx.jsonl")]
    argv += ["--labels", str(out / "labels.jsonl"), "--model", f"{out / 'registry'}:v0001"]
    return out, sim, train_end, argv


def test_backtest_cli_writes_metrics_and_report(recorded, tmp_path, capsys):
    out, sim, train_end, argv = recorded
    start, end = str(train_end + 7 * DAY), str(train_end + 14 * DAY)
    argv = [*argv, "--from", start, "--to", end, "--k", "20", "--report", str(tmp_path / "report")]
    # a "logged champion" that scored everything 0.5: the comparison must show it as useless
    logged = [
        {
            "tx_id": t["tx_id"],
            "champion": {"score": 0.5, "version": "v-old"},
            "thresholds": {"review": 0.9},
        }
        for t in sim.transactions
    ]
    write_jsonl(tmp_path / "decisions.jsonl", logged)
    argv += ["--compare-decisions", str(tmp_path / "decisions.jsonl")]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for key in (
        "auc_roc",
        "average_precision",
        "card_precision_at_20",
        "recall_at_threshold",
        "fpr_at_threshold",
        "alert_volume",
    ):
        assert key in metrics
    assert 0.5 < metrics["auc_roc"] <= 1.0
    assert 0.0 <= metrics["card_precision_at_20"] <= 1.0
    # the default protocol is the handbook's, with the training window recorded with the model
    recorded_window = ModelRegistry(out / "registry").manifest("v0001")["training_window"]
    protocol = metrics["protocol"]
    assert protocol["name"] == "handbook" and protocol["removes_detected_cards"] is True
    assert (protocol["delay_days"], protocol["k"]) == (7, 20)
    assert protocol["train_from_ms"] == recorded_window["from_ms"]
    assert protocol["train_to_ms"] == recorded_window["to_ms"] + 1
    assert protocol["train_window_source"] == "model v0001"
    in_period = [t for t in sim.transactions if int(start) <= t["event_time_ms"] < int(end)]
    excluded = metrics["excluded_known_compromised"]["transactions"]
    assert 0 < excluded and metrics["transactions"] + excluded == len(in_period)
    daily = metrics["daily"]
    assert list(daily) == [f"2026-01-{d}" for d in range(28, 32)] + [
        "2026-02-01",
        "2026-02-02",
        "2026-02-03",
    ]
    assert sum(d["transactions"] for d in daily.values()) == metrics["transactions"]
    assert sum(d["detected_cards_removed"] for d in daily.values()) > 0
    mean = sum(d["card_precision"] for d in daily.values()) / len(daily)
    assert metrics["card_precision_at_20"] == pytest.approx(mean)
    comparison = metrics["comparison"]
    assert comparison["transactions_with_logged_decision"] == metrics["transactions"]
    assert comparison["champion_logged"]["auc_roc"] == 0.5
    assert comparison["champion_logged"]["alert_volume"] == 0
    assert comparison["candidate_same_transactions"]["auc_roc"] == metrics["auc_roc"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    captured = capsys.readouterr()
    assert "v0001 (handbook protocol)" in captured.out
    assert "test window [2026-01-28T00:00:00Z, 2026-02-04T00:00:00Z)" in captured.err
    assert "handbook protocol: training window [2026-01-01" in captured.err


def test_backtest_cli_strict_protocol_and_date_only_window(recorded, tmp_path, capsys):
    _, _, train_end, argv = recorded
    # date-only bounds: --to 2026-02-03 includes that day, the same 7 days as above
    argv = [*argv, "--from", "2026-01-28", "--to", "2026-02-03", "--k", "20"]
    assert main([*argv, "--protocol", "strict", "--report", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["protocol"] == {"name": "strict", "k": 20, "removes_detected_cards": False}
    assert (metrics["from_ms"], metrics["to_ms"]) == (train_end + 7 * DAY, train_end + 14 * DAY)
    assert metrics["test_window"] == "[2026-01-28T00:00:00Z, 2026-02-04T00:00:00Z)"
    assert len(metrics["daily"]) == 7
    assert all(d["detected_cards_removed"] == 0 for d in metrics["daily"].values())
    assert metrics["excluded_known_compromised"]["transactions"] > 0
    assert "strict protocol" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--protocol", "strict", "--delay-days", "3"],
            "--delay-days: only for --protocol handbook",
        ),
        (["--train-from", "2026-01-01", "--train-to", "2026-01-28"], "overlaps the test period"),
        (["--delay-days", "-1"], "--delay-days: must be >= 0"),
        (["--k", "0"], "--k: must be >= 1"),
        (["--train-from", "2026-01-10", "--train-to", "2026-01-09T12:00"], "empty window"),
    ],
)
def test_backtest_cli_refuses_inconsistent_flags(recorded, tmp_path, capsys, flags, message):
    _, _, _, argv = recorded
    argv = [*argv, "--from", "2026-01-28", "--to", "2026-02-03", "--report", str(tmp_path / "r")]
    assert main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_backtest_cli_challenger_beside_the_model(recorded, tmp_path, capsys):
    out, *_, argv = recorded
    assert ModelRegistry(out / "registry").stages() == {"v0001": "production", "v0002": "shadow"}
    argv = [*argv, "--challenger", "v2", "--k", "20"]
    # handbook: the test period starts after the challenger's state: it continues from there
    period = ["--from", "2026-01-28", "--to", "2026-02-03"]
    assert main([*argv, *period, "--report", str(tmp_path / "handbook")]) == 0
    metrics = json.loads((tmp_path / "handbook" / "metrics.json").read_text())
    challenger = metrics["challenger"]
    assert challenger["version"] == "v0002" and challenger["scoring"] == "prequential"
    assert challenger["start"].startswith("registered state")
    assert challenger["labels_learned"] > 0
    assert challenger["transactions"] == metrics["transactions"]  # the same transactions
    assert challenger["frauds"] == metrics["frauds"]
    assert list(challenger["daily_card_precision"]) == list(metrics["daily"])
    manifest = ModelRegistry(out / "registry").manifest("v0002")
    assert challenger["review_threshold"] == manifest["thresholds"]["review"]  # its own
    assert challenger["review_threshold"] != metrics["review_threshold"]
    page = (tmp_path / "handbook" / "report.html").read_text()
    assert "Model and challenger on the same transactions" in page
    assert "challenger v0002 (prequential" in capsys.readouterr().out

    # strict, over the days the challenger trained on: a fresh replay, never its learned state
    period = ["--from", "2026-01-15", "--to", "2026-01-20"]
    assert main([*argv, *period, "--protocol", "strict", "--report", str(tmp_path / "s")]) == 0
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["challenger"]["start"].startswith("fresh")
    assert metrics["challenger"]["transactions"] == metrics["transactions"]
