"""Drift detectors: reference, PSI, detection delays, hysteresis, determinism, persistence.

The detection delays asserted here are the ones ``models/drift.py`` documents. Streams are
seeded and synthetic: six features (normal, mostly zero, constant, counts, heavy-tailed, 10 %
missing), champion scores ``Beta(0.5, 15)`` for legitimate events and ``Beta(5, 2)`` for 1.5 %
fraud; labels with scores ``sigmoid(a * (2y - 1) + N(0, 1))`` (``a`` sets error rate and AUC).
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fraudstream.errors import ModelArtifactError
from fraudstream.models.base import sha256_hex
from fraudstream.models.drift import DriftConfig, DriftMonitor, psi, reference_profile
from fraudstream.schema import (
    ALERT_KINDS,
    ALERT_SCHEMA_VERSION,
    ALERT_SEVERITIES,
    ALERT_STATES,
    AlertRecord,
)

NAMES = ("normal", "sparse", "constant", "count", "amount", "gappy")
T0 = 1_700_000_000_000
PERIOD = DriftConfig().period_events
CHANGE = 21_000  # mid-period: a period straddles the change
N_EVENTS = 40_000
N_LABELS = 10_000
LABEL_CHANGE = 5_000
# score margins: a = 0.8416 gives a 20 % error rate at 0.5, a = 0.2533 gives 40 %
A20, A40 = 0.8416, 0.2533


def _features(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> np.ndarray:
    X = np.empty((n, len(NAMES)))
    X[:, 0] = rng.normal(shift, 1.0, n)
    X[:, 1] = np.where(rng.random(n) < 0.95, 0.0, rng.exponential(5.0, n))
    X[:, 2] = 3.0
    X[:, 3] = rng.poisson(1.5, n)
    X[:, 4] = rng.lognormal(3.0, 1.0, n)
    X[:, 5] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(10.0, 2.0, n))
    return X


def _scores(rng: np.random.Generator, n: int, *, beta: float = 15.0) -> np.ndarray:
    legit = rng.beta(0.5, beta, n)
    return np.where(rng.random(n) < 0.015, rng.beta(5.0, 2.0, n), legit)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return reference_profile(
        _features(rng, 20_000),
        _scores(rng, 20_000),
        NAMES,
        thresholds={"review": 0.5, "decline": 0.9},
    )


def _monitor(reference: dict[str, Any], **config: Any) -> DriftMonitor:
    return DriftMonitor(
        DriftConfig(**config), reference, champion_version="v1", challenger_version="c1"
    )


class Stream:
    """Decided events: times, both models' scores, features, both models' actions."""

    def __init__(
        self,
        seed: int,
        n: int = N_EVENTS,
        *,
        score_beta: dict[int, float] | None = None,
        feature_shift: dict[int, float] | None = None,
    ) -> None:
        """``score_beta`` / ``feature_shift``: from event index -> the law from there on."""
        rng = np.random.default_rng(seed)
        self.t = T0 + np.arange(n, dtype=np.int64) * 1_000
        self.s = _scores(rng, n)
        self.X = _features(rng, n)
        for start, beta in sorted((score_beta or {}).items()):
            self.s[start:] = _scores(rng, n - start, beta=beta)
        for start, shift in sorted((feature_shift or {}).items()):
            self.X[start:, 0] = rng.normal(shift, 1.0, n - start)
        self.c = np.clip(self.s + rng.normal(0.0, 0.05, n), 0.0, 1.0)
        self.a = np.where(self.s >= 0.5, "review", "approve").tolist()
        self.ca = np.where(self.c >= 0.45, "review", "approve").tolist()
        self.n = n

    def feed(
        self, monitor: DriftMonitor, bounds: list[int] | None = None, lo: int = 0, hi: int = -1
    ) -> list[tuple[int, AlertRecord]]:
        """Feed events [lo, hi) in batches cut at ``bounds``; (index of last event, alert)."""
        hi = self.n if hi < 0 else hi
        cuts = sorted({lo, hi, *(b for b in (bounds or range(lo, hi, 97)) if lo < b < hi)})
        out = []
        for a, b in itertools.pairwise(cuts):
            for alert in monitor.on_decisions(
                self.t[a:b], self.s[a:b], self.c[a:b], self.X[a:b], self.a[a:b], self.ca[a:b]
            ):
                out.append((int((alert["last_event_ms"] - T0) // 1_000), alert))
        return out


class Labels:
    """Matured labels, balanced, with both models' decision-time scores."""

    def __init__(
        self,
        seed: int,
        n: int = N_LABELS,
        *,
        champion: tuple[float, float] = (A20, A20),
        challenger: tuple[float, float] = (A20, A20),
        change: int | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.y = (rng.random(n) < 0.5).astype(int).tolist()
        sign = 2 * np.array(self.y) - 1
        after = np.arange(n) >= (n if change is None else change)
        a = np.where(after, champion[1], champion[0])
        b = np.where(after, challenger[1], challenger[0])
        self.cs = (1 / (1 + np.exp(-(a * sign + rng.normal(0, 1, n))))).tolist()
        self.hs = (1 / (1 + np.exp(-(b * sign + rng.normal(0, 1, n))))).tolist()
        self.t = (T0 + np.arange(n) * 20_000).tolist()
        self.n = n

    def feed(
        self, monitor: DriftMonitor, lo: int = 0, hi: int = -1
    ) -> list[tuple[int, AlertRecord]]:
        hi = self.n if hi < 0 else hi
        return [
            (i, alert)
            for i in range(lo, hi)
            for alert in monitor.on_label(self.t[i], self.y[i], self.cs[i], self.hs[i])
        ]


def _firings(alerts: list[tuple[int, AlertRecord]]) -> dict[str, int]:
    """First firing index per detector (and feature)."""
    first: dict[str, int] = {}
    for i, a in alerts:
        key = a["detector"] + (f":{a['feature']}" if "feature" in a else "")
        if a["state"] == "firing":
            first.setdefault(key, i)
    return first


def _assert_episodes(alerts: list[tuple[int, AlertRecord]]) -> None:
    """Per detector and key: firing, resolved, firing, ... with one id per episode."""
    open_ids: dict[tuple[str, str | None], str] = {}
    seen: set[str] = set()
    for _, a in alerts:
        key = (a["detector"], a.get("feature"))
        if a["state"] == "firing":
            assert key not in open_ids, f"second firing while open: {a}"
            assert a["id"] not in seen
            open_ids[key] = a["id"]
            seen.add(a["id"])
        else:
            assert open_ids.pop(key) == a["id"], f"resolved without its firing: {a}"


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# --- reference and PSI -------------------------------------------------------------------------


def test_reference_profile_bins_constant_sparse_missing_and_infinite_values() -> None:
    rng = np.random.default_rng(1)
    n = 10_000
    X = np.column_stack(
        [
            np.full(n, 3.0),  # constant
            np.where(rng.random(n) < 0.95, 0.0, rng.exponential(5.0, n)),  # mostly zero
            rng.poisson(1.5, n).astype(float),  # point masses
            np.full(n, np.nan),  # always missing
            np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),  # 30 % missing
            np.where(rng.random(n) < 0.01, np.inf, rng.normal(size=n)),  # some +inf
        ]
    )
    names = ["constant", "sparse", "count", "absent", "gappy", "infinite"]
    ref = reference_profile(X, rng.random(n), names, bins=10)
    json.dumps(ref, allow_nan=False)  # JSON as the manifest stores it
    f = ref["features"]
    assert f["constant"]["edges"] == [3.0, float(np.nextafter(3.0, np.inf))]
    assert f["constant"]["proportions"] == [0.0, 1.0, 0.0, 0.0]  # <3, =3, >3, missing
    assert f["sparse"]["edges"][:2] == [0.0, 5e-324]  # the zeros have their own bin
    assert f["sparse"]["proportions"][1] == pytest.approx(0.95, abs=0.01)
    assert {0.0, 1.0, 2.0, 3.0} <= set(f["count"]["edges"])
    assert f["absent"] == {"edges": [], "proportions": [0.0, 1.0], "mean": None}
    assert f["gappy"]["proportions"][-1] == pytest.approx(0.3, abs=0.02)
    assert len(f["gappy"]["edges"]) == 9  # ten quantile bins of the present values
    assert all(math.isfinite(e) for e in f["infinite"]["edges"])
    for col in [ref["score"], *f.values()]:
        assert sum(col["proportions"]) == pytest.approx(1.0)
        assert len(col["proportions"]) == len(col["edges"]) + 2
        assert all(b > a for a, b in zip(col["edges"], col["edges"][1:], strict=False))
    assert len(ref["score"]["edges"]) == 9


def test_reference_profile_refuses_bad_input() -> None:
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="feature_names"):
        reference_profile(X, np.zeros(5), ["a", "a"])
    with pytest.raises(ValueError, match="X must be"):
        reference_profile(X, np.zeros(5), ["a", "b", "c"])
    with pytest.raises(ValueError, match="scores"):
        reference_profile(X, np.zeros(4), ["a", "b"])
    with pytest.raises(ValueError, match="bins"):
        reference_profile(X, np.zeros(5), ["a", "b"], bins=1)


def test_psi_values_and_smoothing() -> None:
    assert psi([1, 2, 3], [10, 20, 30]) == 0.0  # counts or shares: normalised
    e, a = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    eps = 1e-4
    es, as_ = (e + eps) / (1 + 2 * eps), (a + eps) / (1 + 2 * eps)
    assert psi(e, a) == pytest.approx(float(np.sum((as_ - es) * np.log(as_ / es))), rel=1e-12)
    assert psi(e, a) == pytest.approx(psi(a, e), rel=1e-12)  # symmetric
    empty = psi([0.5, 0.5, 0.0], [0.45, 0.45, 0.1])  # a new region: large but finite
    assert 0.5 < empty < 2.0
    with pytest.raises(ValueError, match="differ"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive sum"):
        psi([0, 0], [1, 2])
    with pytest.raises(ValueError, match="epsilon"):
        psi([1, 2], [1, 2], epsilon=0.0)


def test_period_psi_equals_psi_of_the_reference_binning(reference: dict[str, Any]) -> None:
    """The vectorised per-batch counting gives the bins np.searchsorted gives."""
    stream = Stream(3, n=PERIOD)
    monitor = _monitor(reference)
    stream.feed(monitor)
    stats = monitor.statistics()
    for j, name in enumerate(NAMES):
        col = reference["features"][name]
        values = stream.X[:, j]
        idx = np.searchsorted(np.array(col["edges"]), values, side="right")
        idx[np.isnan(values)] = len(col["edges"]) + 1
        counts = np.bincount(idx, minlength=len(col["proportions"]))
        expected = psi(col["proportions"], counts)
        assert stats[f"feature_psi:{name}"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    idx = np.searchsorted(np.array(reference["score"]["edges"]), stream.s, side="right")
    counts = np.bincount(idx, minlength=len(reference["score"]["proportions"]))
    assert stats["score_psi"] == pytest.approx(psi(reference["score"]["proportions"], counts))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="score_psi_resolve"):
        DriftConfig(score_psi_fire=0.1, score_psi_resolve=0.2)
    with pytest.raises(ValueError, match="period_events"):
        DriftConfig(period_events=0)
    with pytest.raises(ValueError, match="error_detector"):
        DriftConfig(error_detector="kswin")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DriftConfig(0.1)  # type: ignore[misc]  # keyword-only
    assert "period_events=2000" in repr(DriftConfig())


# --- detection delays --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_score_shift_is_detected_and_a_stationary_stream_is_quiet(
    reference: dict[str, Any], seed: int
) -> None:
    shifted = Stream(seed, score_beta={CHANGE: 6.0}).feed(_monitor(reference))
    first = _firings(shifted)
    assert set(first) == {"score_psi", "score_adwin"}
    assert CHANGE <= first["score_psi"] < CHANGE + 2 * PERIOD
    assert CHANGE <= first["score_adwin"] < CHANGE + 1_000
    assert Stream(seed).feed(_monitor(reference)) == []


@pytest.mark.parametrize("seed", [21, 22])
def test_one_feature_shift_alerts_for_that_feature_only(
    reference: dict[str, Any], seed: int
) -> None:
    alerts = Stream(seed, feature_shift={CHANGE: 1.0}).feed(_monitor(reference))
    first = _firings(alerts)
    assert set(first) == {"feature_psi:normal"}
    assert CHANGE <= first["feature_psi:normal"] < CHANGE + 2 * PERIOD
    (_, alert) = next(a for a in alerts if a[1]["state"] == "firing")
    assert alert["kind"] == "feature_drift" and alert["feature"] == "normal"
    assert alert["runbook"] == "docs/runbook.md#feature-drift"
    assert Stream(seed).feed(_monitor(reference)) == []


@pytest.mark.parametrize(("detector", "delay"), [("adwin", 500), ("ddm", 1_000)])
@pytest.mark.parametrize("seed", [31, 32])
def test_error_rate_rise_on_matured_labels_is_detected(
    reference: dict[str, Any], seed: int, detector: str, delay: int
) -> None:
    worse = Labels(seed, champion=(A20, A40), challenger=(A20, A40), change=LABEL_CHANGE)
    alerts = worse.feed(_monitor(reference, error_detector=detector))
    first = _firings(alerts)
    assert set(first) == {f"error_{detector}"}
    assert LABEL_CHANGE <= first[f"error_{detector}"] < LABEL_CHANGE + delay
    firing = next(a for _, a in alerts if a["state"] == "firing")
    assert (firing["kind"], firing["severity"]) == ("performance", "critical")
    assert firing["statistic"] > firing["threshold"]  # the error rate after vs before
    assert Labels(seed).feed(_monitor(reference, error_detector=detector)) == []


@pytest.mark.parametrize("seed", [41, 42])
def test_challenger_clearly_better_gives_a_retraining_hint(
    reference: dict[str, Any], seed: int
) -> None:
    better = Labels(seed, champion=(0.6, 0.6), challenger=(0.6, 1.3), change=LABEL_CHANGE)
    monitor = _monitor(reference)
    alerts = better.feed(monitor)
    first = _firings(alerts)
    assert set(first) == {"auc_gap"}
    assert LABEL_CHANGE <= first["auc_gap"] < LABEL_CHANGE + 3_000
    firing = alerts[0][1]
    assert (firing["kind"], firing["severity"]) == ("challenger_better", "info")
    assert firing["statistic"] > 0.03 and firing["threshold"] == 0.03
    assert firing["id"].startswith("auc_gap/v1/c1/")
    stats = monitor.statistics()
    assert stats["challenger_auc"] > stats["champion_auc"] + 0.1
    equal = Labels(seed, champion=(0.6, 0.6), challenger=(0.6, 0.6))
    assert equal.feed(_monitor(reference)) == []


# --- hysteresis --------------------------------------------------------------------------------


def test_one_firing_and_one_resolved_record_per_episode(reference: dict[str, Any]) -> None:
    stream = Stream(51, n=60_000, score_beta={20_000: 6.0, 40_000: 15.0})
    alerts = stream.feed(_monitor(reference))
    _assert_episodes(alerts)
    psi_records = [(i, a) for i, a in alerts if a["detector"] == "score_psi"]
    assert [a["state"] for _, a in psi_records] == ["firing", "resolved"]
    (fired_at, firing), (resolved_at, resolved) = psi_records
    assert firing["id"] == resolved["id"] == f"score_psi/v1/{firing['first_event_ms']}"
    assert resolved["first_event_ms"] == firing["first_event_ms"]
    assert 20_000 <= fired_at < 20_000 + 2 * PERIOD
    assert 40_000 <= resolved_at < 40_000 + 2 * PERIOD
    assert resolved["statistic"] < resolved["threshold"] == 0.05
    adwin = [a["state"] for _, a in alerts if a["detector"] == "score_adwin"]
    assert adwin and adwin[0] == "firing" and adwin[-1] == "resolved"


def test_a_statistic_between_the_thresholds_neither_fires_nor_resolves(
    reference: dict[str, Any],
) -> None:
    # per period: none, strong, mild, strong, mild, none, none (feature "normal" mean shift)
    shifts = [0.0, 1.0, 0.4, 1.0, 0.4, 0.0, 0.0]
    stream = Stream(
        52,
        n=len(shifts) * PERIOD,
        feature_shift=dict((k * PERIOD, s) for k, s in enumerate(shifts)),
    )
    monitor = _monitor(reference)
    values, alerts = [], []
    for k in range(len(shifts)):
        alerts += stream.feed(monitor, lo=k * PERIOD, hi=(k + 1) * PERIOD)
        values.append(monitor.statistics()["feature_psi:normal"])
    fire, resolve = DriftConfig().feature_psi_fire, DriftConfig().feature_psi_resolve
    assert values[1] >= fire and values[3] >= fire and values[5] < resolve
    assert resolve <= values[2] < fire and resolve <= values[4] < fire  # the band is exercised
    assert [(i // PERIOD, a["state"]) for i, a in alerts] == [(1, "firing"), (5, "resolved")]


def test_a_change_detector_resolves_after_its_quiet_period(reference: dict[str, Any]) -> None:
    worse = Labels(33, champion=(A20, A40), challenger=(A20, A40), change=LABEL_CHANGE)
    alerts = worse.feed(_monitor(reference))
    assert [a["state"] for _, a in alerts] == ["firing", "resolved"]
    (fired_at, firing), (resolved_at, resolved) = alerts
    assert resolved["id"] == firing["id"]
    quiet = DriftConfig().error_quiet_labels
    assert resolved_at - fired_at >= quiet
    assert resolved["statistic"] == resolved["threshold"] == quiet
    assert resolved["window"]["labels"] == quiet


# --- determinism and persistence ---------------------------------------------------------------


def _mixed_run(
    reference: dict[str, Any],
    stream: Stream,
    labels: Labels,
    bounds: list[int],
    monitor: DriftMonitor | None = None,
    lo: int = 0,
    hi: int = -1,
) -> tuple[DriftMonitor, list[AlertRecord], list[dict[str, float]]]:
    """Events with a label after every 4th event; statistics sampled at every bound."""
    monitor = monitor or _monitor(reference)
    hi = stream.n if hi < 0 else hi
    alerts: list[AlertRecord] = []
    samples = []
    cuts = sorted({lo, hi, *(b for b in bounds if lo < b < hi)})
    for a, b in itertools.pairwise(cuts):
        alerts += [al for _, al in stream.feed(monitor, [a, b], a, b)]
        alerts += [al for _, al in labels.feed(monitor, a // 4, b // 4)]
        if b % 1_000 == 0:
            samples.append((b, monitor.statistics()))
    return monitor, alerts, samples


def _bounds(seed: int, n: int) -> Iterator[int]:
    rng = np.random.default_rng(seed)
    at = 0
    while at < n:
        at += int(rng.choice([1, 2, 7, 64, 500, 1_999, 3_001]))
        yield at


@pytest.fixture(scope="module")
def mixed() -> tuple[Stream, Labels]:
    n = 16_000
    stream = Stream(61, n=n, score_beta={5_000: 5.0}, feature_shift={6_000: 1.0})
    labels = Labels(62, n=n // 4, champion=(A20, A40), challenger=(A20, 1.3), change=1_500)
    return stream, labels


def test_batch_splits_give_identical_alerts_and_statistics(
    reference: dict[str, Any], mixed: tuple[Stream, Labels]
) -> None:
    stream, labels = mixed
    n = stream.n
    every_1000 = list(range(0, n + 1, 1_000))
    runs = [
        _mixed_run(reference, stream, labels, sorted({*every_1000, *_bounds(seed, n)}))
        for seed in (1, 2)
    ]
    runs.append(_mixed_run(reference, stream, labels, every_1000))
    _, alerts, samples = runs[0]
    assert {a["kind"] for a in alerts} >= {"score_drift", "feature_drift", "performance"}
    for other in runs[1:]:
        assert other[1] == alerts
        assert _same(other[2], samples)
    assert _same(runs[1][0].statistics(), runs[0][0].statistics())
    assert runs[1][0].to_bytes() == runs[0][0].to_bytes()


@pytest.mark.parametrize(
    ("error_detector", "cut"),
    [("adwin", 4_777), ("adwin", 9_777), ("ddm", 9_777)],  # before the changes; episodes open
)
def test_restore_mid_stream_continues_exactly(
    reference: dict[str, Any], mixed: tuple[Stream, Labels], error_detector: str, cut: int
) -> None:
    stream, labels = mixed
    n = stream.n  # the cut lies inside a period, label windows partial
    bounds = list(range(0, n + 1, 1_000))
    config = DriftConfig(error_detector=error_detector)  # type: ignore[arg-type]

    def fresh() -> DriftMonitor:
        return DriftMonitor(config, reference, champion_version="v1", challenger_version="c1")

    whole, alerts, samples = _mixed_run(reference, stream, labels, bounds, fresh())
    first, head, head_samples = _mixed_run(reference, stream, labels, bounds, fresh(), hi=cut)
    if cut > 9_000:
        assert first._score_episode is not None and first._error_episode is not None
    data = first.to_bytes()
    restored = DriftMonitor.from_bytes(data, expected_sha256=sha256_hex(data))
    assert restored.to_bytes() == data
    assert _same(restored.statistics(), first.statistics())
    _, tail, tail_samples = _mixed_run(reference, stream, labels, bounds, restored, lo=cut)
    assert tail and head + tail == alerts
    assert _same(head_samples + tail_samples, samples)
    assert restored.to_bytes() == whole.to_bytes()


def test_from_bytes_refuses_tampered_foreign_and_other_river_state(
    reference: dict[str, Any],
) -> None:
    monitor = _monitor(reference)
    Stream(71, n=3_000).feed(monitor)
    data = monitor.to_bytes()
    with pytest.raises(ModelArtifactError, match="sha256"):
        DriftMonitor.from_bytes(data[:-1] + b" ", expected_sha256=sha256_hex(data))
    payload = pickle.dumps({"format": "fraudstream.drift-monitor"})
    with pytest.raises(ModelArtifactError, match="not JSON"):
        DriftMonitor.from_bytes(payload, expected_sha256=sha256_hex(payload))
    state = json.loads(data)
    garbage = {"window": "AAAA", "detected": False}
    for change, match in [
        ({"river": "0.0.1"}, "river 0.0.1"),
        ({"format": "other"}, "unknown format"),
        ({"events": "many"}, "invalid content"),
        ({"score_change": {}}, "invalid content"),
        ({"score_change": {**state["score_change"], "adwin": garbage}}, "ADWIN state unreadable"),
        ({"config": {**state["config"], "score_change_delta": 0.01}}, "another delta"),
    ]:
        altered = json.dumps({**state, **change}).encode()
        with pytest.raises(ModelArtifactError, match=match):
            DriftMonitor.from_bytes(altered, expected_sha256=sha256_hex(altered))


# --- records and inputs ------------------------------------------------------------------------


def test_alert_records_follow_the_schema(
    reference: dict[str, Any], mixed: tuple[Stream, Labels]
) -> None:
    stream, labels = mixed
    _, alerts, _ = _mixed_run(reference, stream, labels, list(range(0, stream.n + 1, 500)))
    required = AlertRecord.__required_keys__
    by_kind: dict[str, set[str]] = defaultdict(set)
    for a in alerts:
        assert required <= a.keys() <= required | AlertRecord.__optional_keys__
        json.dumps(a, allow_nan=False)
        assert a["schema_version"] == ALERT_SCHEMA_VERSION
        assert a["kind"] in ALERT_KINDS and a["severity"] in ALERT_SEVERITIES
        assert a["state"] in ALERT_STATES
        assert a["models"] == {"champion": "v1", "challenger": "c1"}
        assert a["first_event_ms"] <= a["last_event_ms"]
        assert a["runbook"].startswith("docs/runbook.md#")
        assert ("feature" in a) == (a["kind"] == "feature_drift")
        assert a["window"] and set(a["window"]) <= {"events", "labels", "from_ms", "to_ms"}
        by_kind[a["kind"]].add(a["detector"])
    assert by_kind["score_drift"] == {"score_psi", "score_adwin"}


def test_statistics_have_a_fixed_key_set(reference: dict[str, Any]) -> None:
    monitor = _monitor(reference)
    before = monitor.statistics()
    assert math.isnan(before["score_psi"]) and before["events"] == 0.0
    Stream(72, n=2_500).feed(monitor)
    Labels(73, n=300).feed(monitor)
    after = monitor.statistics()
    assert list(after) == list(before)
    assert {f"feature_psi:{n}" for n in NAMES} <= after.keys()
    assert after["events"] == 2_500.0 and after["labels"] == 300.0
    assert 0.0 <= after["disagreement_rate"] <= 1.0
    assert 0.0 < after["recall"] < 1.0 and 0.0 < after["champion_auc"] < 1.0
    assert all(isinstance(v, float) for v in after.values())


def test_inputs_are_checked(reference: dict[str, Any]) -> None:
    monitor = _monitor(reference)
    t, s, X = np.array([T0]), np.array([0.1]), np.zeros((1, len(NAMES)))
    with pytest.raises(ValueError, match="X must be"):
        monitor.on_decisions(t, s, None, np.zeros((1, 2)), ["approve"], None)
    with pytest.raises(ValueError, match="go together"):
        monitor.on_decisions(t, s, s, X, ["approve"], None)
    with pytest.raises(ValueError, match=r"champion_scores must lie in \[0, 1\]"):
        monitor.on_decisions(t, np.array([1.5]), None, X, ["approve"], None)
    with pytest.raises(ValueError, match="champion_actions"):
        monitor.on_decisions(t, s, None, X, [], None)
    with pytest.raises(ValueError, match="y must be"):
        monitor.on_label(T0, 2, 0.5, None)
    with pytest.raises(ValueError, match="champion_score"):
        monitor.on_label(T0, 1, 1.5, None)
    alone = DriftMonitor(DriftConfig(), reference, champion_version="v1", challenger_version=None)
    with pytest.raises(ValueError, match="no challenger"):
        alone.on_label(T0, 1, 0.5, 0.5)
    with pytest.raises(ValueError, match="review_threshold"):
        DriftMonitor(
            DriftConfig(),
            {k: v for k, v in reference.items() if k != "thresholds"},
            champion_version="v1",
            challenger_version=None,
        )
    assert monitor.on_decisions(t[:0], s[:0], None, X[:0], [], None) == []
    assert monitor.on_decisions(t, np.array([np.nan]), None, X, ["approve"], None) == []
    assert monitor.statistics()["events"] == 1.0  # a missing score is counted, not learned
    assert alone.on_decisions(t, s, None, X, ["approve"], None) == []


# --- event-time periods and ignored features ---------------------------------------------------


def _windows(alerts: list[tuple[int, AlertRecord]]) -> list[dict[str, Any]]:
    return [dict(a["window"]) for _, a in alerts if a["detector"] == "feature_psi"]


def test_time_periods_span_period_ms_and_hold_period_events(reference: dict[str, Any]) -> None:
    # events 1 s apart; a shift from the start makes every period fire or stay open, and the
    # firing window shows where the first period closed
    config = {"period_events": 500, "period_ms": 1_500_000}
    stream = Stream(71, n=6_000, feature_shift={0: 1.0})
    alerts = stream.feed(_monitor(reference, **config))
    (window,) = _windows(alerts)
    assert window == {"events": 1_500, "from_ms": T0, "to_ms": T0 + 1_499_000}
    # a gap in event time does not close a period before it holds period_events
    gap = Stream(71, n=6_000, feature_shift={0: 1.0})
    gap.t[100:] += 10 * 86_400_000
    (window,) = _windows(gap.feed(_monitor(reference, **config)))
    assert window["events"] == 500 and window["from_ms"] == T0


def test_time_periods_are_independent_of_batches_and_restores(
    reference: dict[str, Any], mixed: tuple[Stream, Labels]
) -> None:
    stream, labels = mixed
    config = DriftConfig(period_events=700, period_ms=1_800_000)

    def fresh() -> DriftMonitor:
        return DriftMonitor(config, reference, champion_version="v1", challenger_version="c1")

    n = stream.n
    every_1000 = list(range(0, n + 1, 1_000))
    whole, alerts, _ = _mixed_run(reference, stream, labels, every_1000, fresh())
    assert {a["kind"] for a in alerts} >= {"score_drift", "feature_drift"}
    assert {a["window"]["events"] for a in alerts if a["detector"] == "feature_psi"} == {1_800}
    split, other, _ = _mixed_run(
        reference, stream, labels, sorted({*every_1000, *_bounds(5, n)}), fresh()
    )
    assert other == alerts and split.to_bytes() == whole.to_bytes()
    cut = 7_777  # inside a period
    first, head, _ = _mixed_run(reference, stream, labels, every_1000, fresh(), hi=cut)
    data = first.to_bytes()
    restored = DriftMonitor.from_bytes(data, expected_sha256=sha256_hex(data))
    _, tail, _ = _mixed_run(reference, stream, labels, every_1000, restored, lo=cut)
    assert head + tail == alerts and restored.to_bytes() == whole.to_bytes()


def test_ignored_features_are_measured_but_never_alert(reference: dict[str, Any]) -> None:
    monitor = _monitor(reference, ignore_features=("normal",))
    assert Stream(72, feature_shift={0: 1.0}).feed(monitor) == []
    assert monitor.statistics()["feature_psi:normal"] > 0.5
    data = monitor.to_bytes()
    restored = DriftMonitor.from_bytes(data, expected_sha256=sha256_hex(data))
    assert restored.config.ignore_features == ("normal",)


def test_period_settings_are_validated() -> None:
    for bad in ({"period_ms": 0}, {"period_ms": 1.5}, {"ignore_features": "normal"}):
        with pytest.raises(ValueError):
            DriftConfig(**bad)  # type: ignore[arg-type]
