"""Tests of the seeded transaction simulator (fraudstream.simulate)."""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.cli import main
from fraudstream.schema import Label, Limits, Transaction, parse_label, parse_transaction
from fraudstream.simulate import (
    COUNTRIES,
    DRIFT_KINDS,
    DRIFT_SCENARIOS,
    SCENARIOS,
    SimConfig,
    Simulation,
    generate,
    read_jsonl,
    write_jsonl,
)

DAY_MS = 86_400_000
SMALL = SimConfig(n_customers=300, n_terminals=1000, days=10)
FIELDS = {
    "tx_id": str,
    "event_time_ms": int,
    "account_id": str,
    "amount": float,
    "card_id": str,
    "terminal_id": str,
    "merchant_id": str,
    "mcc": str,
    "currency": str,
    "country": str,
    "device_id": str,
    "ip": str,
    "channel": str,
    "schema_version": int,
}


@pytest.fixture(scope="module")
def default_sim() -> Simulation:
    return generate(SimConfig())


@pytest.fixture(scope="module")
def small_sim() -> Simulation:
    return generate(SMALL)


def _check_invariants(sim: Simulation, config: SimConfig) -> None:
    txs = sim.transactions
    times = [t["event_time_ms"] for t in txs]
    assert times == sorted(times)
    assert [t["tx_id"] for t in txs] == [f"tx{i:010d}" for i in range(len(txs))]
    end_ms = config.start_ms + config.days * DAY_MS
    assert all(config.start_ms <= t < end_ms for t in times)
    by_id = {t["tx_id"]: t for t in txs}
    label_times = [lab["label_time_ms"] for lab in sim.labels]
    assert label_times == sorted(label_times)
    for lab in sim.labels:
        assert lab["label_time_ms"] >= by_id[lab["tx_id"]]["event_time_ms"]
        assert lab["label"] == (1 if lab["tx_id"] in sim.fraud else 0)
    assert set(sim.fraud) <= by_id.keys()
    assert set(sim.fraud.values()) <= set(SCENARIOS)
    for t in txs:
        assert t["amount"] >= 0
        if t["amount"] > config.fraud_amount_threshold:
            assert t["tx_id"] in sim.fraud


# --- determinism -----------------------------------------------------------------------------


def test_same_config_gives_identical_output(small_sim: Simulation) -> None:
    again = generate(SMALL)
    assert again.transactions == small_sim.transactions
    assert again.labels == small_sim.labels
    assert again.fraud == small_sim.fraud


def test_other_seed_gives_other_output(small_sim: Simulation) -> None:
    other = generate(SimConfig(n_customers=300, n_terminals=1000, days=10, seed=7))
    assert other.transactions != small_sim.transactions


def test_scenario_knob_does_not_move_the_legitimate_stream(small_sim: Simulation) -> None:
    without_ato = generate(SimConfig(n_customers=300, n_terminals=1000, days=10, ato_per_day=0))
    assert "ato" not in without_ato.fraud.values()

    def strip(sim: Simulation) -> list[dict]:
        kept = [t for t in sim.transactions if sim.fraud.get(t["tx_id"]) != "ato"]
        return [{k: v for k, v in t.items() if k != "tx_id"} for t in kept]

    assert strip(without_ato) == strip(small_sim)


def test_only_amount_scenario_when_others_are_off() -> None:
    config = SimConfig(
        n_customers=300,
        n_terminals=1000,
        days=10,
        compromised_terminals_per_day=0,
        compromised_customers_per_day=0,
        ato_per_day=0,
    )
    sim = generate(config)
    above = {t["tx_id"] for t in sim.transactions if t["amount"] > 220}
    assert above and set(sim.fraud) == above
    assert set(sim.fraud.values()) == {"amount"}


# --- order, ids, labels ----------------------------------------------------------------------


def test_default_run_invariants(default_sim: Simulation) -> None:
    _check_invariants(default_sim, SimConfig())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n_customers=st.integers(1, 40),
    n_terminals=st.integers(1, 80),
    days=st.integers(1, 6),
    radius=st.floats(1.0, 60.0),
    ato_per_day=st.floats(0.0, 3.0),
)
def test_invariants_hold_for_any_small_config(
    seed: int, n_customers: int, n_terminals: int, days: int, radius: float, ato_per_day: float
) -> None:
    config = SimConfig(
        seed=seed,
        n_customers=n_customers,
        n_terminals=n_terminals,
        days=days,
        radius=radius,
        ato_per_day=ato_per_day,
        compromised_terminals_per_day=min(2, n_terminals),
        compromised_customers_per_day=min(3, n_customers),
    )
    _check_invariants(generate(config), config)


def test_label_delays_duplicates_and_reviews(default_sim: Simulation) -> None:
    config = SimConfig()
    by_id = {t["tx_id"]: t for t in default_sim.transactions}
    per_tx: dict[str, list[dict]] = defaultdict(list)
    for lab in default_sim.labels:
        per_tx[lab["tx_id"]].append(lab)
    assert set(default_sim.fraud) <= per_tx.keys()
    duplicates = 0
    for tx_id, labs in per_tx.items():
        delays = [lab["label_time_ms"] - by_id[tx_id]["event_time_ms"] for lab in labs]
        if tx_id in default_sim.fraud:
            assert {lab["source"] for lab in labs} == {"chargeback"}
            first = min(delays)
            low = config.chargeback_delay_ms
            assert low <= first <= low + config.chargeback_jitter_ms
            assert len(labs) <= 2
            if len(labs) == 2:
                duplicates += 1
                assert max(delays) > first
        else:
            assert [(lab["label"], lab["source"]) for lab in labs] == [(0, "review")]
            assert DAY_MS <= delays[0] <= 3 * DAY_MS
    n_fraud = len(default_sim.fraud)
    assert 0 < duplicates < 0.1 * n_fraud
    n_reviews = len(per_tx) - n_fraud
    assert 0.005 < n_reviews / (len(by_id) - n_fraud) < 0.02


# --- fraud scenarios -------------------------------------------------------------------------


def test_fraud_rate_is_plausible_and_every_scenario_occurs(default_sim: Simulation) -> None:
    n = len(default_sim.transactions)
    assert 250_000 < n < 330_000  # 5000 customers x 30 days x ~2 tx/day, minus out-of-day draws
    assert 0.005 <= len(default_sim.fraud) / n <= 0.03
    counts = Counter(default_sim.fraud.values())
    assert set(counts) == set(SCENARIOS)


def test_time_of_day_centres_on_noon(default_sim: Simulation) -> None:
    start = SimConfig().start_ms
    tods = [(t["event_time_ms"] - start) % DAY_MS for t in default_sim.transactions]
    mean = sum(tods) / len(tods)
    assert abs(mean - DAY_MS / 2) < 0.01 * DAY_MS
    inside = sum(abs(x - DAY_MS / 2) < 20_000_000 for x in tods) / len(tods)
    assert 0.65 < inside < 0.75  # about one normal std (~0.68 after dropping the tails)


def test_compromised_customers_spend_five_times_more(default_sim: Simulation) -> None:
    legit: dict[str, list[float]] = defaultdict(list)
    stolen: dict[str, list[float]] = defaultdict(list)
    for t in default_sim.transactions:
        scenario = default_sim.fraud.get(t["tx_id"])
        if scenario is None:
            legit[t["account_id"]].append(t["amount"])
        elif scenario == "customer":
            stolen[t["account_id"]].append(t["amount"])
    ratios = sorted(
        (sum(v) / len(v)) / (sum(legit[a]) / len(legit[a]))
        for a, v in stolen.items()
        if len(v) >= 5 and legit[a]
    )
    assert ratios and 3.5 < ratios[len(ratios) // 2] < 7


def test_compromised_terminal_frauds_are_card_present(default_sim: Simulation) -> None:
    terminal_frauds = [
        t for t in default_sim.transactions if default_sim.fraud.get(t["tx_id"]) == "terminal"
    ]
    assert terminal_frauds and all(t["channel"] == "pos" for t in terminal_frauds)
    # compromises last 28 days: a terminal's frauds come in long runs, not isolated hits
    per_terminal = Counter(t["terminal_id"] for t in terminal_frauds)
    assert sum(per_terminal.values()) / len(per_terminal) > 3


def test_ato_bursts_use_a_new_device_abroad(default_sim: Simulation) -> None:
    home: dict[str, set[str]] = defaultdict(set)
    devices: dict[str, set[str]] = defaultdict(set)
    bursts: dict[str, list[dict]] = defaultdict(list)
    ato = 0
    for t in default_sim.transactions:
        account = t["account_id"]
        if default_sim.fraud.get(t["tx_id"]) == "ato":
            ato += 1
            if not bursts[t["device_id"]]:  # first use: never seen before for this account
                assert t["device_id"] not in devices[account]
            bursts[t["device_id"]].append(t)
            continue
        home[account].add(t["country"])
        devices[account].add(t["device_id"])
    assert ato and len(bursts) >= 15
    for device, txs in bursts.items():
        account = txs[0]["account_id"]
        assert {t["account_id"] for t in txs} == {account}
        assert device not in devices[account]  # nor used later by the real customer
        assert 5 <= len(txs) <= 15
        assert txs[-1]["event_time_ms"] - txs[0]["event_time_ms"] < 30 * 60_000
        assert {t["channel"] for t in txs} == {"ecom"}
        assert len({t["ip"] for t in txs}) == 1
        countries = {t["country"] for t in txs}
        assert len(countries) == 1 and not countries & home[account]


# --- records ---------------------------------------------------------------------------------


def test_records_have_schema_v1_fields_and_types(small_sim: Simulation) -> None:
    assert small_sim.transactions
    for t in small_sim.transactions:
        assert t.keys() == FIELDS.keys()
        for name, kind in FIELDS.items():
            assert type(t[name]) is kind, name
        assert t["schema_version"] == 1
        assert round(t["amount"], 2) == t["amount"]
        assert t["channel"] in ("pos", "ecom")
        assert t["currency"] == COUNTRIES[t["country"]][0]
        assert str(ipaddress.IPv4Address(t["ip"])) == t["ip"]
        assert all(t[name] for name in FIELDS if name != "amount")


def test_records_pass_the_ingest_schema(small_sim: Simulation) -> None:
    # a history loaded into Kafka stamps each record with its own time (its "now")
    limits = Limits()
    for t in small_sim.transactions:
        parsed = parse_transaction(orjson.dumps(t), now_ms=t["event_time_ms"], limits=limits)
        assert isinstance(parsed, Transaction), parsed
    for lab in small_sim.labels:
        now_ms = lab["label_time_ms"]
        assert isinstance(parse_label(orjson.dumps(lab), now_ms=now_ms, limits=limits), Label)


def test_entities_are_consistent(default_sim: Simulation) -> None:
    merchant_of: dict[str, set[str]] = defaultdict(set)
    mcc_of: dict[str, set[str]] = defaultdict(set)
    cards: dict[str, set[str]] = defaultdict(set)
    owner: dict[str, set[str]] = defaultdict(set)
    own_devices: dict[str, set[str]] = defaultdict(set)
    for t in default_sim.transactions:
        merchant_of[t["terminal_id"]].add(t["merchant_id"])
        mcc_of[t["merchant_id"]].add(t["mcc"])
        cards[t["account_id"]].add(t["card_id"])
        owner[t["card_id"]].add(t["account_id"])
        if default_sim.fraud.get(t["tx_id"]) != "ato":
            own_devices[t["account_id"]].add(t["device_id"])
    assert all(len(m) == 1 for m in merchant_of.values())
    assert all(len(m) == 1 for m in mcc_of.values())
    terminals_per_merchant = Counter(next(iter(m)) for m in merchant_of.values())
    assert max(terminals_per_merchant.values()) > 1
    assert all(len(c) <= 2 for c in cards.values()) and any(len(c) == 2 for c in cards.values())
    assert all(len(a) == 1 for a in owner.values())
    assert max(len(d) for d in own_devices.values()) == 2
    channels = Counter(t["channel"] for t in default_sim.transactions)
    assert 0.1 < channels["ecom"] / len(default_sim.transactions) < 0.2
    countries = Counter(t["country"] for t in default_sim.transactions)
    assert countries.most_common(1)[0][0] == "FR" and len(countries) > 3


# --- JSONL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tx.jsonl", "tx.jsonl.gz"])
def test_jsonl_round_trip(tmp_path: Path, small_sim: Simulation, name: str) -> None:
    path = tmp_path / name
    assert write_jsonl(path, iter(small_sim.transactions)) == len(small_sim.transactions)
    assert list(read_jsonl(path)) == small_sim.transactions
    assert list(read_jsonl(str(path))) == small_sim.transactions
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).count(b"\n") == len(small_sim.transactions)


def test_gzip_output_is_reproducible(tmp_path: Path, small_sim: Simulation) -> None:
    write_jsonl(tmp_path / "a.jsonl.gz", small_sim.labels)
    write_jsonl(tmp_path / "b.jsonl.gz", small_sim.labels)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_empty_jsonl(tmp_path: Path) -> None:
    assert write_jsonl(tmp_path / "e.jsonl", []) == 0
    assert list(read_jsonl(tmp_path / "e.jsonl")) == []


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: invalid JSON"):
        list(read_jsonl(path))


# --- drift -----------------------------------------------------------------------------------

DRIFT_BASE = SimConfig(n_customers=1000, n_terminals=2000, days=12)
DRIFT_DAY = 6


def _drifted(*kinds: str, **knobs: Any) -> tuple[SimConfig, Simulation]:
    config = replace(DRIFT_BASE, drift_at_day=DRIFT_DAY, drift_kinds=kinds, **knobs)
    return config, generate(config)


@pytest.fixture(scope="module")
def no_drift() -> Simulation:
    return generate(DRIFT_BASE)


def _before(sim: Simulation, start_ms: int) -> tuple[bytes, bytes, bytes]:
    """Serialized transactions before ``start_ms``, their labels and ground truth."""
    txs = [t for t in sim.transactions if t["event_time_ms"] < start_ms]
    ids = {t["tx_id"] for t in txs}
    labels = [lab for lab in sim.labels if lab["tx_id"] in ids]
    truth = {k: v for k, v in sim.fraud.items() if k in ids}
    return orjson.dumps(txs), orjson.dumps(labels), orjson.dumps(truth)


def _without_id(txs: list[dict]) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "tx_id"} for t in txs]


def _rename(sim: Simulation, reference: Simulation, drop: set[str]) -> dict[str, str]:
    """Ids of ``sim`` to those of ``reference``, pairing the transactions not in ``drop``."""
    kept = [t["tx_id"] for t in sim.transactions if t["tx_id"] not in drop]
    assert len(kept) == len(reference.transactions)
    return dict(zip(kept, (t["tx_id"] for t in reference.transactions), strict=True))


def _in_cents(amount: float, exact: float) -> bool:
    """``amount`` is ``exact`` rounded to cents (either way on a float's half-cent tie)."""
    return round(amount, 2) == amount and abs(amount - exact) <= 0.005 + 1e-9


def test_no_drift_output_is_pinned(small_sim: Simulation) -> None:
    # The digest of SMALL's output before the drift switches existed (numpy is pinned): the
    # switches' random stream must not move any other component's.
    digest = hashlib.sha256()
    for part in (small_sim.transactions, small_sim.labels, small_sim.fraud):
        digest.update(orjson.dumps(part))
    assert digest.hexdigest() == (
        "5613025e699a00276e756fa495e5fab36efe66a6fd4517b6c94b19fb51968577"
    )


def test_drift_config_defaults_to_none() -> None:
    config = SimConfig()
    assert config.drift_kinds == () and config.drift_at_day is None
    assert config.drift_start_ms is None
    assert DRIFT_KINDS == ("amount", "new-pattern", "label")


@pytest.mark.parametrize("kinds", [(k,) for k in DRIFT_KINDS] + [DRIFT_KINDS])
def test_drift_changes_nothing_before_its_instant(
    no_drift: Simulation, kinds: tuple[str, ...]
) -> None:
    config, sim = _drifted(*kinds)
    start = config.drift_start_ms
    assert start == DRIFT_BASE.start_ms + DRIFT_DAY * DAY_MS
    assert _before(sim, start) == _before(no_drift, start)
    issued = [lab for lab in sim.labels if lab["label_time_ms"] < start]
    assert issued == [lab for lab in no_drift.labels if lab["label_time_ms"] < start]
    assert issued  # the comparison covers some labels
    assert (sim.transactions, sim.labels) != (no_drift.transactions, no_drift.labels)
    assert generate(config) == sim  # seeded: the same config, the same drifted output


def test_amount_drift_scales_legitimate_amounts_only(no_drift: Simulation) -> None:
    config, sim = _drifted("amount")
    start = config.drift_start_ms
    assert sim.fraud == no_drift.fraud
    assert sim.labels == no_drift.labels
    scaled = []
    for t, ref in zip(sim.transactions, no_drift.transactions, strict=True):
        assert {**t, "amount": 0} == {**ref, "amount": 0}
        if ref["event_time_ms"] < start or t["tx_id"] in sim.fraud:
            assert t["amount"] == ref["amount"]
        else:
            assert _in_cents(t["amount"], ref["amount"] * 2.5)
            scaled.append(t["amount"])
    assert len(scaled) > 5000
    # legitimate payments above the amount rule's threshold now exist, and are not fraud
    assert any(a > config.fraud_amount_threshold for a in scaled)
    _, other = _drifted("amount", drift_amount_factor=0.5)
    after = [t for t in other.transactions if t["event_time_ms"] >= start]
    before = [t for t in no_drift.transactions if t["event_time_ms"] >= start]
    legit = [(a, b) for a, b in zip(after, before, strict=True) if a["tx_id"] not in other.fraud]
    assert all(_in_cents(a["amount"], b["amount"] * 0.5) for a, b in legit)


def test_new_pattern_drift_adds_card_testing_bursts(no_drift: Simulation) -> None:
    config, sim = _drifted("new-pattern")
    start = config.drift_start_ms
    assert DRIFT_SCENARIOS == ("card_testing",)
    new = {k for k, v in sim.fraud.items() if v == "card_testing"}
    assert "card_testing" not in no_drift.fraud.values()
    # the rest of the stream is the undrifted one, ids aside
    rest = [t for t in sim.transactions if t["tx_id"] not in new]
    assert _without_id(rest) == _without_id(no_drift.transactions)
    rename = _rename(sim, no_drift, new)
    assert {rename[k]: v for k, v in sim.fraud.items() if k not in new} == no_drift.fraud
    old_labels = [
        {**lab, "tx_id": rename[lab["tx_id"]]} for lab in sim.labels if lab["tx_id"] not in new
    ]
    assert old_labels == no_drift.labels

    seen_devices = {t["device_id"] for t in no_drift.transactions}
    bursts: dict[str, list[dict]] = defaultdict(list)
    for t in sim.transactions:
        if t["tx_id"] in new:
            bursts[t["device_id"]].append(t)
    days = {(txs[0]["event_time_ms"] - config.start_ms) // DAY_MS for txs in bursts.values()}
    assert min(days) == DRIFT_DAY and len(bursts) >= 6
    for device, txs in bursts.items():
        assert device not in seen_devices
        assert 20 <= len(txs) <= 60
        assert start <= txs[0]["event_time_ms"]
        assert txs[-1]["event_time_ms"] - txs[0]["event_time_ms"] < 10 * 60_000
        assert {t["channel"] for t in txs} == {"ecom"}
        assert len({t["ip"] for t in txs}) == 1 and len({t["merchant_id"] for t in txs}) == 1
        assert len({t["card_id"] for t in txs}) > len(txs) // 2  # many cards, one device
        assert all(0.5 <= t["amount"] <= 2.0 for t in txs)

    by_id = {t["tx_id"]: t for t in sim.transactions}
    charged = defaultdict(list)
    for lab in sim.labels:
        if lab["tx_id"] in new:
            assert (lab["label"], lab["source"]) == (1, "chargeback")
            charged[lab["tx_id"]].append(
                lab["label_time_ms"] - by_id[lab["tx_id"]]["event_time_ms"]
            )
    assert charged.keys() == new
    low = config.chargeback_delay_ms
    assert all(low <= min(d) <= low + config.chargeback_jitter_ms for d in charged.values())


def test_label_drift_loses_chargebacks_and_flips_reviews(no_drift: Simulation) -> None:
    config, sim = _drifted("label")
    start = config.drift_start_ms
    assert sim.transactions == no_drift.transactions
    assert sim.fraud == no_drift.fraud
    time_of = {t["tx_id"]: t["event_time_ms"] for t in sim.transactions}

    def after(sim: Simulation) -> dict[str, list[tuple[int, int, str]]]:
        labels = defaultdict(list)
        for lab in sim.labels:
            if time_of[lab["tx_id"]] >= start:
                labels[lab["tx_id"]].append((lab["label"], lab["label_time_ms"], lab["source"]))
        return labels

    drifted, reference = after(sim), after(no_drift)
    frauds = [k for k in reference if k in sim.fraud]
    lost = [k for k in frauds if k not in drifted]
    assert all(drifted[k] == reference[k] for k in frauds if k not in lost)
    assert 0.35 < len(lost) / len(frauds) < 0.65  # drift_chargeback_loss_rate 0.5
    reviews = [k for k in reference if k not in sim.fraud]
    flipped = [k for k in reviews if drifted[k][0][0] == 1]
    assert all(drifted[k] == [(1, *reference[k][0][1:])] for k in flipped)
    assert all(drifted[k] == reference[k] for k in reviews if k not in flipped)
    assert 0.08 < len(flipped) / len(reviews) < 0.35  # drift_review_flip_rate 0.2


def test_label_drift_at_full_strength(no_drift: Simulation) -> None:
    config, sim = _drifted("label", drift_chargeback_loss_rate=1.0, drift_review_flip_rate=1.0)
    time_of = {t["tx_id"]: t["event_time_ms"] for t in sim.transactions}
    late = [lab for lab in sim.labels if time_of[lab["tx_id"]] >= config.drift_start_ms]
    assert late and all((lab["label"], lab["source"]) == (1, "review") for lab in late)
    config, sim = _drifted("label", drift_chargeback_loss_rate=0.0, drift_review_flip_rate=0.0)
    assert sim.labels == no_drift.labels


def test_drift_kinds_compose_without_changing_each_other() -> None:
    _, both = _drifted("label", "new-pattern", "amount")
    _, amount = _drifted("amount")
    _, pattern = _drifted("new-pattern")
    _, label = _drifted("label")
    new = {k for k, v in both.fraud.items() if v == "card_testing"}
    assert [t for t in both.transactions if t["tx_id"] in new] == [
        t for t in pattern.transactions if pattern.fraud.get(t["tx_id"]) == "card_testing"
    ]
    rest = [t for t in both.transactions if t["tx_id"] not in new]
    assert _without_id(rest) == _without_id(amount.transactions)
    rename = _rename(both, label, new)
    assert [
        {**lab, "tx_id": rename[lab["tx_id"]]} for lab in both.labels if lab["tx_id"] not in new
    ] == label.labels
    assert SimConfig(drift_at_day=1, drift_kinds=("label", "amount")) == SimConfig(
        drift_at_day=1, drift_kinds=("amount", "label")
    )


def test_drift_streams_pass_the_ingest_schema() -> None:
    _, sim = _drifted(*DRIFT_KINDS)
    limits = Limits()
    for t in sim.transactions:
        parsed = parse_transaction(orjson.dumps(t), now_ms=t["event_time_ms"], limits=limits)
        assert isinstance(parsed, Transaction), parsed
    for lab in sim.labels:
        now_ms = lab["label_time_ms"]
        assert isinstance(parse_label(orjson.dumps(lab), now_ms=now_ms, limits=limits), Label)


def test_cli_simulate_drift_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--seed", "3", "--customers", "80", "--terminals", "200", "--days", "4"]
    out = tmp_path / "out"
    drift = ["--drift-at", "2", "--drift", "label,new-pattern", "--drift", "amount,label"]
    assert main([*argv, *drift, "--out-dir", str(out)]) == 0
    config = SimConfig(
        seed=3, n_customers=80, n_terminals=200, days=4, drift_at_day=2, drift_kinds=DRIFT_KINDS
    )
    sim = generate(config)
    assert list(read_jsonl(out / "transactions.jsonl")) == sim.transactions
    assert list(read_jsonl(out / "labels.jsonl")) == sim.labels
    truth = {r["tx_id"]: r["scenario"] for r in read_jsonl(out / "truth.jsonl")}
    assert truth == sim.fraud and "card_testing" in truth.values()
    capsys.readouterr()
    assert main([*argv, "--drift-at", "4", "--drift", "amount", "--out-dir", str(out)]) == 2
    assert "beyond the stream" in capsys.readouterr().err
    assert main([*argv, "--drift-at", "1", "--drift", "volume", "--out-dir", str(out)]) == 2
    assert "unknown kind 'volume'" in capsys.readouterr().err


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"seed": -1},
        {"n_customers": 0},
        {"n_terminals": 0},
        {"days": 0},
        {"days": 1.5},
        {"start_ms": -1},
        {"radius": 0.0},
        {"chargeback_delay_ms": -1},
        {"duplicate_label_rate": 1.5},
        {"review_rate": -0.1},
        {"review_delay_ms": (3, 1)},
        {"review_delay_ms": (-1, 1)},
        {"ecom_share": True},
        {"terminals_per_merchant": 0.5},
        {"compromised_terminals_per_day": 20_000},
        {"compromised_customers_per_day": -1},
        {"ato_per_day": -1.0},
        {"ato_burst_size": (0, 3)},
        {"ato_burst_ms": DAY_MS},
        {"home_countries": ()},
        {"home_countries": (("XX", 1.0),)},
        {"home_countries": (("FR", 0.0),)},
        {"home_countries": (("FR", 0.5), ("FR", 0.5))},
        {"drift_at_day": -1, "drift_kinds": ("amount",)},
        {"drift_at_day": 30, "drift_kinds": ("amount",)},
        {"drift_at_day": 1.0, "drift_kinds": ("amount",)},
        {"drift_at_day": 1, "drift_kinds": ("volume",)},
        {"drift_at_day": 1, "drift_kinds": "amount"},
        {"drift_at_day": 1, "drift_kinds": ("amount", "amount")},
        {"drift_at_day": 1},
        {"drift_kinds": ("label",)},
        {"drift_amount_factor": 0.0},
        {"drift_amount_factor": float("inf")},
        {"drift_amount_factor": float("nan")},
        {"drift_card_testing_per_day": -1.0},
        {"drift_card_testing_burst_size": (0, 3)},
        {"drift_card_testing_burst_size": (2.0, 3)},
        {"drift_card_testing_burst_ms": DAY_MS},
        {"drift_card_testing_amount": (2.0, 1.0)},
        {"drift_chargeback_loss_rate": 1.5},
        {"drift_review_flip_rate": -0.1},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="SimConfig"):
        SimConfig(**bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"drift_at_day": -1}, "drift_at_day must be an int >= 0"),
        ({"drift_at_day": 10}, "day 10 is beyond the stream"),
        ({"drift_kinds": ("amount", "volume")}, "unknown kind 'volume'"),
    ],
)
def test_drift_config_errors_say_what_is_wrong(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimConfig(**{"days": 10, "drift_at_day": 3, "drift_kinds": ("amount",), **bad})


def test_generate_needs_a_config() -> None:
    with pytest.raises(TypeError):
        generate({"seed": 1})  # type: ignore[arg-type]


def test_config_is_frozen_and_keyword_only() -> None:
    config = SimConfig()
    with pytest.raises(AttributeError):
        config.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        SimConfig(1)  # type: ignore[call-arg]
