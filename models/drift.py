"""Drift detection: the detectors on-call engineers are paged by, as pure, deterministic code.

The decision step feeds a :class:`DriftMonitor` in the input's order, batch by batch
(:meth:`DriftMonitor.on_decisions`), and each label as it matures (:meth:`DriftMonitor.on_label`);
it publishes the :class:`~fraudstream.schema.AlertRecord` dicts they return to the ``alerts``
topic and :meth:`DriftMonitor.statistics` as gauges. Nothing here reads a clock, a thread or a
batch boundary: every window is counted in events (or labels), every detector is updated event by
event in feed order, so the same sequence of events gives the same alerts and statistics however
it is split into batches, and after a restore from :meth:`DriftMonitor.to_bytes`.

Reference (:func:`reference_profile`), taken at training time on validation rows and kept in the
model's manifest: per column (the champion's score and every feature), bin edges and the share of
rows in each bin, plus the share of missing values. Edges are the column's quantiles; a value
that holds at least ``1/bins`` of the rows (a constant feature, the zeros of a mostly-zero count)
gets a bin of its own, ``[v, nextafter(v))``, and the remaining values are cut at their own
quantiles, so a mostly-constant feature still shows a change in its rare values. A value ``x``
falls in bin ``i`` = the number of edges ``<= x`` (``+-inf`` in the outer bins); ``nan`` counts
as missing, the last bin.

Detectors (defaults in :class:`DriftConfig`; severities fixed per detector):

================  ==================  ==========  ================================================
detector          kind                severity    fires / resolves
================  ==================  ==========  ================================================
``score_psi``     score_drift         warning     PSI of the champion's scores over a period of
                                                  ``period_events`` (2,000) events against the
                                                  reference: fires at >= 0.1, resolves below 0.05
``score_adwin``   score_drift         info        River ADWIN (delta 0.002) on the score stream
                                                  detects a change of the mean score (either
                                                  way); resolves after 10,000 events without one
``feature_psi``   feature_drift       warning     PSI per feature per period, one episode per
                                                  feature: fires at >= 0.2, resolves below 0.1
``error_adwin``   performance         critical    River ADWIN (delta 0.002) on the champion's
                                                  0/1 errors at its review threshold, on matured
                                                  labels: fires on a rise only; resolves after
                                                  2,000 labels without another. ``error_ddm``:
                                                  River's ``drift.binary.DDM`` instead (option)
``auc_gap``       challenger_better   info        rolling ROC AUC of the challenger above the
                                                  champion's by more than 0.03 at 10 consecutive
                                                  evaluations (every 200 labels, windows of 2,000
                                                  labels holding >= 1,000, >= 50 of each class):
                                                  a retraining hint; resolves below a gap of 0
================  ==================  ==========  ================================================

Why ADWIN on the errors by default: on a Bernoulli error stream (0.25 -> 0.35, 6 seeds) ADWIN
raised no false alarm and detected in 330-680 labels; DDM raised false alarms with River's
``warm_start`` of 30, and with 1,000 (the default here) still in 4 of the 80 stationary label
streams of the tests' kind where ADWIN raised none; its delay also grows with the history since
its last reset (it compares a cumulative mean). River's FHDDM fires on a *drop* of its input's
mean and raised false alarms with its window of 100; HDDM_A, HDDM_W and EDDM raised false
alarms on most stationary runs.

Statistics only: the period's disagreement rate between the champion's and the challenger's
actions (each applies its own thresholds) and both models' mean scores; on the last
``label_window`` labels, the champion's recall, precision, false-positive rate and error rate at
its review threshold, and ROC AUC and log loss of both models (River's ``RollingROCAUC`` and
``Rolling(LogLoss)``: prequential, each label scored with the scores its transaction had at
decision time). Labelled transactions are not a random sample (chargebacks and reviews): these
rates describe the labelled population. Period statistics hold the last complete period.

Documented detection delays, with the defaults (``tests/models/test_drift.py`` checks each on
seeded synthetic streams, and that a stationary stream of the same length raises no alert at
all; the ranges in brackets were measured on 10-20 seeds):

* score shift, legitimate scores ``Beta(0.5, 15)`` -> ``Beta(0.5, 6)`` (mean 0.032 -> 0.077,
  PSI ~0.29 over a full period): ``score_psi`` within 2 periods (4,000 events) of the change
  [at the end of the period straddling it, or of the next], ``score_adwin`` within 1,000 events
  [183-407];
* one feature's mean shifted by one standard deviation (PSI ~0.95): ``feature_psi`` for that
  feature only, within 2 periods (4,000 events) [the period straddling the change];
* the champion's error rate on labels 0.20 -> 0.40: ``error_adwin`` within 500 labels [87-215];
  ``error_ddm`` within 1,000 [166-496];
* challenger AUC ~0.97 against the champion's ~0.80 from the change on: ``auc_gap`` within
  3,000 labels [1,999-2,399]; with equal AUCs (0.80 or 0.88), no alert in 80 runs of 10,000
  labels.

A smaller change takes longer, or never fires: PSI is insensitive to a small rescaling of the
scores (all legitimate scores x1.5 gives a PSI of ~0.06), which ADWIN on the mean does see.

Periods in the flow: ``period_events`` alone cuts a period every 2,000 events whatever their
time; on a live stream such a period covers a part of the day, and the daily cycle (night-time
traffic, amounts by hour) reads as drift against a reference that covers whole days. The sidecar
therefore sets ``period_ms`` to a day (``FlowConfig.drift_config``): a period closes at the first
event, once it holds ``period_events``, that lies a day of event time after the period's first
event. It also lists the calendar flags (weekend, night) in ``ignore_features``: a period's share
of weekend transactions follows the week by design. On a simulated 80-day stream (300
customers, a champion trained on warm days 38-60) this removed every false feature alarm that
2,000-event periods raised (``terminal_delayed_count_30d``, ``is_weekend``,
``terminal_risk_30d``), and amount drift and a new fraud pattern are still reported within the
period that straddles the change (``tests/flows/test_drift_alerts.py``). The decision step also
skips the champion's in-sample events (up to the end of its training window): its scores and
errors on rows it was trained on are not comparable with its validation rows.

Hysteresis: each detector and key (a feature) has at most one open episode; it writes one
``firing`` record when the episode opens and one ``resolved`` record when it closes, with the same
``id``, and nothing in between (a statistic between the two thresholds, or a change detected
while the episode is open, extends it).

Order within a call: records come out in event order; at one event, the change detector's
record comes before the period's (score, then features in reference order). Decisions and labels
touch disjoint state, so how the caller interleaves the two calls does not matter either.

Persistence: :meth:`DriftMonitor.to_bytes` is JSON (floats written with ``repr``, read back
exactly): configuration, reference, versions, counters, open episodes and every detector's
state. River's ADWIN keeps its window in Rust; its own serialisation (bytes from the
``AdaptiveWindowing`` state, a plain data format, never pickle) goes in the JSON as base64;
River's rolling AUC is rebuilt from its window (the AUC is a function of the window) and its
rolling log loss gets its window and its exact running mean back; DDM's state is plain numbers.
Nothing is pickled or unpickled.
:meth:`DriftMonitor.from_bytes` checks the sha256 before it parses anything, and refuses state
written by another River version (ADWIN's format is River's): start a fresh monitor then.

Cost (``benchmarks/drift_cost.py``, 76 features): see ``docs/models.md``, section "Drift
detection".
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import river
from river import drift, metrics, utils

from fraudstream.errors import ModelArtifactError
from fraudstream.models.base import verify_sha256
from fraudstream.schema import ALERT_SCHEMA_VERSION, AlertRecord, AlertWindow

__all__ = ["PSI_EPSILON", "RUNBOOK", "DriftConfig", "DriftMonitor", "psi", "reference_profile"]

#: Additive smoothing of bin shares in :func:`psi` (an empty bin counts as ``epsilon``).
PSI_EPSILON = 1e-4
#: Where the alerts' runbook links point.
RUNBOOK = "docs/runbook.md"

_REFERENCE_FORMAT = "fraudstream.drift-reference"
_REFERENCE_VERSION = 1
_STATE_FORMAT = "fraudstream.drift-monitor"
_STATE_VERSION = 2
_FIXED_POINT = float(1 << 40)  # scores summed as integers: sums independent of batch splits

_ANCHORS = {
    "score_drift": "score-drift",
    "feature_drift": "feature-drift",
    "performance": "performance-drift",
    "challenger_better": "challenger-better",
}


# --- reference profile and PSI ---------------------------------------------------------------


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Quantile edges with point masses in bins of their own (see the module docstring)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0, dtype=np.float64)
    uniq, counts = np.unique(finite, return_counts=True)
    masses = uniq[counts * bins >= finite.size]
    rest = finite[~np.isin(finite, masses)] if masses.size else finite
    parts = [masses, np.nextafter(masses, np.inf)]
    if rest.size:
        k = max(1, math.ceil(bins * rest.size / finite.size))
        if k > 1:
            parts.append(np.quantile(rest, np.arange(1, k) / k))
    edges = np.unique(np.concatenate(parts))
    return edges[np.isfinite(edges)]


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin: ``len(edges) + 1`` value bins, then missing (nan)."""
    idx = np.searchsorted(edges, values, side="right")
    idx[np.isnan(values)] = edges.size + 1
    return np.bincount(idx, minlength=edges.size + 2)


def _column_profile(values: np.ndarray, bins: int) -> dict[str, Any]:
    edges = _edges(values, bins)
    counts = _bin_counts(values, edges)
    finite = values[np.isfinite(values)]
    return {
        "edges": edges.tolist(),
        "proportions": (counts / values.size).tolist(),
        "mean": float(finite.mean()) if finite.size else None,
    }


def reference_profile(
    X: np.ndarray,
    scores: np.ndarray,
    feature_names: Sequence[str],
    *,
    bins: int = 10,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The reference a :class:`DriftMonitor` compares live events with (JSON-serialisable).

    ``X`` holds validation rows (columns in ``feature_names`` order, ``nan`` = missing),
    ``scores`` the champion's scores for them. Per column: ``edges`` (sorted, finite),
    ``proportions`` (``len(edges) + 1`` value bins, then the missing share; they sum to 1) and
    ``mean`` (of the finite values; None when there are none). ``thresholds`` (the champion's
    ``review``/``decline``) are kept for the monitor's default review threshold.
    """
    names = tuple(feature_names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ValueError("feature_names must be distinct strings, at least one")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2, got {bins!r}")
    X = np.asarray(X, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names) or X.shape[0] == 0:
        raise ValueError(f"X must be (rows >= 1, {len(names)}), got {X.shape}")
    if scores.shape != (X.shape[0],):
        raise ValueError(f"scores must have shape ({X.shape[0]},), got {scores.shape}")
    profile: dict[str, Any] = {
        "format": _REFERENCE_FORMAT,
        "version": _REFERENCE_VERSION,
        "bins": bins,
        "rows": int(X.shape[0]),
        "feature_names": list(names),
        "score": _column_profile(scores, bins),
        "features": {name: _column_profile(X[:, j], bins) for j, name in enumerate(names)},
    }
    if thresholds is not None:
        profile["thresholds"] = {str(k): float(v) for k, v in thresholds.items()}
    return profile


def _psi_rows(
    expected: np.ndarray, actual: np.ndarray, mask: np.ndarray, epsilon: float
) -> np.ndarray:
    """PSI per row of (rows, bins) counts or shares; ``mask`` marks each row's real bins."""
    k = mask.sum(axis=1, keepdims=True)
    e = expected / expected.sum(axis=1, keepdims=True)
    a = actual / actual.sum(axis=1, keepdims=True)
    e = (e + epsilon) / (1.0 + k * epsilon)
    a = (a + epsilon) / (1.0 + k * epsilon)
    terms = np.where(mask, (a - e) * np.log(a / e), 0.0)
    result: np.ndarray = terms.sum(axis=1)
    return result


def _distribution(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{what}: expected a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError(f"{what}: counts or shares must be finite, >= 0, with a positive sum")
    return arr


def psi(expected: Any, actual: Any, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over bins.

    ``expected`` and ``actual`` are counts or shares over the same bins (each is normalised to
    sum 1). Each share ``p`` is smoothed to ``(p + epsilon) / (1 + k * epsilon)`` (``k`` bins), so
    an empty bin contributes a large but finite term. Common reading: < 0.1 stable, 0.1-0.25 a
    moderate shift, > 0.25 a major one. Sampling noise alone gives about ``(k - 1) / n`` for
    ``n`` events.
    """
    e = _distribution(expected, "expected")
    a = _distribution(actual, "actual")
    if e.shape != a.shape:
        raise ValueError(f"expected and actual differ in bins: {e.size} vs {a.size}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return float(_psi_rows(e[None, :], a[None, :], np.ones((1, e.size), dtype=bool), epsilon)[0])


def _check_reference(reference: Mapping[str, Any]) -> tuple[str, ...]:
    """The feature names of a valid reference; ValueError otherwise."""
    if not isinstance(reference, Mapping):
        raise TypeError(f"reference must be a mapping, got {type(reference).__name__}")
    if (
        reference.get("format") != _REFERENCE_FORMAT
        or reference.get("version") != _REFERENCE_VERSION
    ):
        raise ValueError("not a drift reference (format/version); build it with reference_profile")
    names = reference.get("feature_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError("reference: feature_names must be a non-empty list of strings")
    features = reference.get("features")
    # a manifest written with sorted keys loses the order: ``feature_names`` keeps it
    if not isinstance(features, Mapping) or sorted(features) != sorted(names):
        raise ValueError("reference: features must hold every feature name")
    for name, col in [("score", reference.get("score")), *features.items()]:
        if not isinstance(col, Mapping):
            raise ValueError(f"reference: column {name!r} is not a mapping")
        edges = np.asarray(col.get("edges"), dtype=np.float64)
        props = np.asarray(col.get("proportions"), dtype=np.float64)
        if edges.ndim != 1 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise ValueError(f"reference: {name!r} edges must be finite and increasing")
        if props.shape != (edges.size + 2,) or not np.isfinite(props).all() or (props < 0).any():
            raise ValueError(f"reference: {name!r} needs len(edges) + 2 shares >= 0")
        if not props.sum() > 0:
            raise ValueError(f"reference: {name!r} shares sum to 0")
    return tuple(names)


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftConfig:
    """Every detector's settings (see the module docstring for what each detector does).

    Parameters
    ----------
    period_events
        Events per PSI period (score and features) and per disagreement rate; with
        ``period_ms``, the fewest events a period holds.
    period_ms
        None: a period is ``period_events`` events. Otherwise a period also spans this much
        event time: it closes before the first event, once it holds ``period_events``, whose
        time is at least the period's first event's time plus ``period_ms`` (that event opens
        the next). A day removes the daily cycle (night, amounts by hour) from the comparison
        with the reference, which covers whole days.
    ignore_features
        Features ``feature_psi`` does not alert on (their PSI is still reported): calendar
        flags (weekend, night) change with the period's place in the week by design.
    psi_epsilon
        Smoothing of bin shares in PSI (:func:`psi`).
    score_psi_fire, score_psi_resolve
        ``score_psi`` opens an episode at PSI >= fire, closes it at PSI < resolve.
    feature_psi_fire, feature_psi_resolve
        The same per feature (``feature_psi``).
    score_change_delta
        ADWIN's confidence ``delta`` on the score stream (smaller: fewer false alarms, slower).
    score_change_quiet_events
        A ``score_adwin`` episode closes after this many events without a new change.
    label_window
        Labels in the rolling window of recall, precision, FPR, AUC and log loss.
    error_detector
        ``"adwin"`` (River ADWIN on the 0/1 error stream, rises only) or ``"ddm"`` (River's
        ``drift.binary.DDM``).
    error_change_delta
        ADWIN's ``delta`` on the error stream.
    ddm_warm_start
        DDM's ``warm_start`` (labels before it may fire; River's default 30 gave false alarms
        on stationary streams).
    error_quiet_labels
        A performance episode closes after this many labels without a new rise.
    compare_every_labels
        The challenger is compared with the champion every this many labels...
    compare_min_labels, compare_min_per_class
        ...once each model's window holds this many labels, and this many of each class.
    challenger_auc_margin
        ``auc_gap`` counts an evaluation when challenger AUC - champion AUC > this margin...
    challenger_consecutive
        ...and fires after this many consecutive such evaluations.
    challenger_auc_resolve
        The episode closes at an evaluation whose gap is below this.
    """

    period_events: int = 2_000
    period_ms: int | None = None
    ignore_features: tuple[str, ...] = ()
    psi_epsilon: float = PSI_EPSILON
    score_psi_fire: float = 0.1
    score_psi_resolve: float = 0.05
    feature_psi_fire: float = 0.2
    feature_psi_resolve: float = 0.1
    score_change_delta: float = 0.002
    score_change_quiet_events: int = 10_000
    label_window: int = 2_000
    error_detector: Literal["adwin", "ddm"] = "adwin"
    error_change_delta: float = 0.002
    ddm_warm_start: int = 1_000
    error_quiet_labels: int = 2_000
    compare_every_labels: int = 200
    compare_min_labels: int = 1_000
    compare_min_per_class: int = 50
    challenger_auc_margin: float = 0.03
    challenger_consecutive: int = 10
    challenger_auc_resolve: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "period_events",
            "score_change_quiet_events",
            "label_window",
            "ddm_warm_start",
            "error_quiet_labels",
            "compare_every_labels",
            "compare_min_labels",
            "compare_min_per_class",
            "challenger_consecutive",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for fire, resolve in (
            ("score_psi_fire", "score_psi_resolve"),
            ("feature_psi_fire", "feature_psi_resolve"),
        ):
            if not 0 < getattr(self, resolve) < getattr(self, fire):
                raise ValueError(f"need 0 < {resolve} < {fire}: {self!r}")
        if not 0 < self.psi_epsilon < 0.01:
            raise ValueError(f"psi_epsilon must be in (0, 0.01), got {self.psi_epsilon}")
        for name in ("score_change_delta", "error_change_delta"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.error_detector not in ("adwin", "ddm"):
            raise ValueError(
                f"error_detector must be 'adwin' or 'ddm', got {self.error_detector!r}"
            )
        if self.period_ms is not None and (
            isinstance(self.period_ms, bool)
            or not isinstance(self.period_ms, int)
            or self.period_ms < 1
        ):
            raise ValueError(f"period_ms must be None or an int >= 1, got {self.period_ms!r}")
        if isinstance(self.ignore_features, str) or not all(
            isinstance(f, str) for f in self.ignore_features
        ):
            raise ValueError("ignore_features must be a sequence of feature names")
        object.__setattr__(self, "ignore_features", tuple(self.ignore_features))
        if self.compare_min_labels > self.label_window:
            raise ValueError("compare_min_labels cannot exceed label_window")
        if not self.challenger_auc_resolve < self.challenger_auc_margin:
            raise ValueError("need challenger_auc_resolve < challenger_auc_margin")


# --- pieces of state --------------------------------------------------------------------------


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


class _ModelMetrics:
    """Rolling ROC AUC and log loss of one model's scores on labels (River), and class counts."""

    def __init__(self, window: int) -> None:
        self.window_size = window
        self.pairs: deque[tuple[int, float]] = deque()
        self.positives = 0
        self.auc = metrics.RollingROCAUC(window_size=window)
        self.log_loss = utils.Rolling(metrics.LogLoss, window_size=window)

    def update(self, y: int, p: float) -> None:
        if len(self.pairs) == self.window_size:
            self.positives -= self.pairs.popleft()[0]
        self.pairs.append((y, p))
        self.positives += y
        self.auc.update(y, p)
        self.log_loss.update(y, p)

    def ready(self, min_labels: int, min_per_class: int) -> bool:
        n = len(self.pairs)
        return n >= min_labels and min(self.positives, n - self.positives) >= min_per_class

    def values(self) -> tuple[float, float]:
        """(AUC, log loss); nan without both classes (AUC) or without labels."""
        n = len(self.pairs)
        auc = float(self.auc.get()) if 0 < self.positives < n else math.nan
        return auc, float(self.log_loss.obj.get()) if n else math.nan

    def state(self, *, pairs: bool) -> dict[str, Any]:
        """Log loss's running mean (exact), and the window unless the caller keeps it."""
        mean = self.log_loss.obj._mean
        state: dict[str, Any] = {"n": mean.n, "mean": mean._mean}
        if pairs:
            state["pairs"] = [list(p) for p in self.pairs]
        return state

    @classmethod
    def restore(
        cls, window: int, state: Mapping[str, Any], pairs: Sequence[Sequence[Any]]
    ) -> _ModelMetrics:
        self = cls(window)
        for y, p in pairs:
            pair = (int(y), float(p))
            self.pairs.append(pair)
            self.positives += pair[0]
            self.auc.update(*pair)  # the AUC is a function of the window's contents
            self.log_loss.window.append((pair, {}))
        if len(self.pairs) > window:
            raise ValueError("metrics window longer than label_window")
        mean = self.log_loss.obj._mean
        mean.n, mean._mean = float(state["n"]), float(state["mean"])
        return self


def _adwin_state(det: drift.ADWIN) -> dict[str, Any]:
    raw: bytes = det._helper.__getstate__()
    return {"window": base64.b64encode(raw).decode("ascii"), "detected": det.drift_detected}


def _adwin_restore(delta: float, state: Mapping[str, Any]) -> drift.ADWIN:
    det = drift.ADWIN(delta=delta)
    raw = base64.b64decode(state["window"], validate=True)
    try:
        det._helper.__setstate__(raw)
    except Exception as exc:
        raise ValueError(f"ADWIN state unreadable: {exc}") from exc
    except BaseException as exc:  # pyo3 turns a Rust panic into PanicException (BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        raise ValueError(f"ADWIN state unreadable: {exc}") from exc
    if det._helper.__getnewargs__()[0] != delta:
        raise ValueError("ADWIN state has another delta than the configuration")
    det._drift_detected = bool(state["detected"])
    return det


def _ddm_state(det: drift.binary.DDM) -> dict[str, Any]:
    return {
        "n": det._p.n,
        "mean": det._p._mean,
        "p_min": det._p_min,
        "s_min": det._s_min,
        "ps_min": None if math.isinf(det._ps_min) else det._ps_min,
        "warning": det._warning_detected,
        "detected": det._drift_detected,
    }


def _ddm_restore(warm_start: int, state: Mapping[str, Any]) -> drift.binary.DDM:
    det = drift.binary.DDM(warm_start=warm_start)
    det._p.n, det._p._mean = float(state["n"]), float(state["mean"])
    det._p_min = None if state["p_min"] is None else float(state["p_min"])
    det._s_min = None if state["s_min"] is None else float(state["s_min"])
    det._ps_min = math.inf if state["ps_min"] is None else float(state["ps_min"])
    det._warning_detected = bool(state["warning"])
    det._drift_detected = bool(state["detected"])
    return det


# --- the monitor ------------------------------------------------------------------------------


class DriftMonitor:
    """Every drift detector over one champion (and challenger); see the module docstring.

    Parameters
    ----------
    config
        The detectors' settings.
    reference
        :func:`reference_profile` of the champion's validation rows; ``X`` passed to
        :meth:`on_decisions` has its columns in the reference's ``feature_names`` order.
    champion_version, challenger_version
        Written into every alert (``challenger_version`` None: no challenger runs, and
        challenger scores and actions must be None).
    review_threshold
        The champion's review threshold (errors, recall, precision and FPR are taken at it);
        defaults to the reference's ``thresholds["review"]``.
    """

    def __init__(
        self,
        config: DriftConfig,
        reference: Mapping[str, Any],
        *,
        champion_version: str,
        challenger_version: str | None,
        review_threshold: float | None = None,
    ) -> None:
        if not isinstance(config, DriftConfig):
            raise TypeError(f"config must be a DriftConfig, got {type(config).__name__}")
        names = _check_reference(reference)
        if not isinstance(champion_version, str) or not champion_version:
            raise ValueError("champion_version must be a non-empty string")
        if challenger_version is not None and (
            not isinstance(challenger_version, str) or not challenger_version
        ):
            raise ValueError("challenger_version must be a non-empty string or None")
        if review_threshold is None:
            review_threshold = reference.get("thresholds", {}).get("review")
            if review_threshold is None:
                raise ValueError("no review_threshold given and none in the reference")
        review_threshold = float(review_threshold)
        if not 0.0 <= review_threshold <= 1.0:
            raise ValueError(f"review_threshold must be in [0, 1], got {review_threshold}")
        self.config = config
        self.reference: dict[str, Any] = json.loads(json.dumps(reference))  # a private copy
        self.champion_version = champion_version
        self.challenger_version = challenger_version
        self.review_threshold = review_threshold
        self.feature_names = names
        self._models = {"champion": champion_version, "challenger": challenger_version}
        self._setup_layout()
        self._reset_state()

    def __repr__(self) -> str:
        return (
            f"DriftMonitor(champion={self.champion_version!r}, "
            f"challenger={self.challenger_version!r}, features={len(self.feature_names)}, "
            f"events={self._events}, labels={self._labels})"
        )

    # -- layout of the counters (derived from the reference) ---------------------------------------

    def _setup_layout(self) -> None:
        ref = self.reference
        eps = self.config.psi_epsilon
        self._score_edges = np.asarray(ref["score"]["edges"], dtype=np.float64)
        self._score_ref = np.asarray(ref["score"]["proportions"], dtype=np.float64)
        cols = [ref["features"][n] for n in self.feature_names]
        nedges = np.array([len(c["edges"]) for c in cols], dtype=np.intp)
        kmax = int(nedges.max()) if nedges.size else 0
        n_features = len(cols)
        # edges as (kmax, features), padded with nan: x >= nan is False
        edges_t = np.full((kmax, n_features), np.nan)
        for j, c in enumerate(cols):
            edges_t[: nedges[j], j] = c["edges"]
        self._edges_t = edges_t
        self._missing_bin = (nedges + 1).astype(np.int16)
        self._bin_dtype = np.int8 if kmax < 126 else np.int16
        sizes = nedges + 2
        self._offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
        self._n_cells = int(sizes.sum())
        width = kmax + 2
        self._mask = np.arange(width)[None, :] < sizes[:, None]
        # gather flat counts into a (features, width) matrix; padding reads a trailing zero
        self._gather = np.where(self._mask, self._offsets[:, None] + np.arange(width), -1)
        self._feature_ref = np.zeros((n_features, width))
        for j, c in enumerate(cols):
            self._feature_ref[j, : sizes[j]] = c["proportions"]
        self._score_mask = np.ones((1, self._score_ref.size), dtype=bool)
        self._eps = eps

    def _reset_state(self) -> None:
        cfg = self.config
        self._events = 0
        self._labels = 0
        # the open period
        self._in_period = 0
        self._period_start: int | None = None  # the period's first event's time (period_ms)
        self._period_from: int | None = None
        self._period_to: int | None = None
        self._score_counts = np.zeros(self._score_ref.size, dtype=np.int64)
        self._feature_counts = np.zeros(self._n_cells, dtype=np.int64)
        self._disagree = 0
        self._paired = 0
        self._sums = [0, 0, 0, 0]  # champion fixed-point sum, count; challenger sum, count
        # the last closed period
        self._last: dict[str, Any] = {
            "score_psi": None,
            "feature_psi": None,
            "disagreement_rate": None,
            "champion_score_mean": None,
            "challenger_score_mean": None,
        }
        # PSI episodes: key "score" or a feature name -> {"id", "first_ms"}
        self._psi_episodes: dict[str, dict[str, Any]] = {}
        # score change detector
        self._score_det = drift.ADWIN(delta=cfg.score_change_delta)
        self._score_acc = 0.0
        self._score_cnt = 0
        self._score_episode: dict[str, Any] | None = None
        # labels
        self._window: deque[tuple[int, int, float, bool]] = deque()
        self._confusion = [0, 0, 0, 0]  # tp, fp, fn, tn
        self._error_det: drift.ADWIN | drift.binary.DDM = self._new_error_detector()
        self._error_acc = 0
        self._error_cnt = 0
        self._error_episode: dict[str, Any] | None = None
        self._champion_metrics = _ModelMetrics(cfg.label_window)
        self._challenger_metrics = _ModelMetrics(cfg.label_window)
        self._gap_run = 0
        self._last_gap: float | None = None
        self._gap_episode: dict[str, Any] | None = None

    def _new_error_detector(self) -> drift.ADWIN | drift.binary.DDM:
        cfg = self.config
        if cfg.error_detector == "adwin":
            return drift.ADWIN(delta=cfg.error_change_delta)
        return drift.binary.DDM(warm_start=cfg.ddm_warm_start)

    # -- alerts ------------------------------------------------------------------------------------

    def _episode_id(self, detector: str, first_ms: int, feature: str | None = None) -> str:
        parts = [detector, self.champion_version]
        if detector == "auc_gap" and self.challenger_version is not None:
            parts.append(self.challenger_version)
        if feature is not None:
            parts.append(feature)
        parts.append(str(first_ms))
        return "/".join(parts)

    def _alert(
        self,
        *,
        episode: Mapping[str, Any],
        kind: str,
        severity: str,
        detector: str,
        statistic: float,
        threshold: float,
        window: AlertWindow,
        last_ms: int,
        state: str,
        feature: str | None = None,
        detail: str | None = None,
    ) -> AlertRecord:
        record: AlertRecord = {
            "schema_version": ALERT_SCHEMA_VERSION,
            "id": episode["id"],
            "kind": kind,
            "severity": severity,
            "detector": detector,
            "statistic": float(statistic),
            "threshold": float(threshold),
            "window": window,
            "models": {"champion": self.champion_version, "challenger": self.challenger_version},
            "first_event_ms": episode["first_ms"],
            "last_event_ms": last_ms,
            "state": state,
            "runbook": f"{RUNBOOK}#{_ANCHORS[kind]}",
        }
        if feature is not None:
            record["feature"] = feature
        if detail is not None:
            record["detail"] = detail
        return record

    # -- decisions ---------------------------------------------------------------------------------

    def on_decisions(
        self,
        event_times_ms: Any,
        champion_scores: Any,
        challenger_scores: Any | None,
        X: Any,
        champion_actions: Sequence[str],
        challenger_actions: Sequence[str] | None,
    ) -> list[AlertRecord]:
        """Feed a batch of decided transactions, in the input's order; returns new alerts.

        ``X`` is (n, features) in the reference's feature order (``nan`` = missing);
        ``challenger_scores`` and ``challenger_actions`` are None when no challenger scored the
        batch. Batches may have any size, 0 included: only the sequence of events matters.
        """
        times = np.asarray(event_times_ms, dtype=np.int64)
        n = times.shape[0] if times.ndim == 1 else -1
        if n < 0:
            raise ValueError(f"event_times_ms must be 1-D, got shape {times.shape}")
        scores = self._scores(champion_scores, n, "champion_scores")
        rows = np.asarray(X, dtype=np.float64)
        if rows.shape != (n, len(self.feature_names)):
            raise ValueError(f"X must be ({n}, {len(self.feature_names)}), got {rows.shape}")
        if len(champion_actions) != n:
            raise ValueError(f"champion_actions has {len(champion_actions)} items, expected {n}")
        if (challenger_scores is None) != (challenger_actions is None):
            raise ValueError("challenger_scores and challenger_actions go together (or both None)")
        other: np.ndarray | None = None
        if challenger_scores is not None:
            if self.challenger_version is None:
                raise ValueError("challenger results given but the monitor has no challenger")
            other = self._scores(challenger_scores, n, "challenger_scores")
            assert challenger_actions is not None
            if len(challenger_actions) != n:
                raise ValueError(
                    f"challenger_actions has {len(challenger_actions)} items, expected {n}"
                )
        alerts: list[AlertRecord] = []
        period = self.config.period_events
        period_ms = self.config.period_ms
        start = 0
        while start < n:
            if period_ms is None:
                end = start + min(n - start, period - self._in_period)
                closes = self._in_period + end - start == period
            else:
                if self._in_period == 0:
                    self._period_start = int(times[start])
                assert self._period_start is not None
                lo = start + max(0, period - self._in_period)
                due = np.flatnonzero(times[lo:] >= self._period_start + period_ms)
                end = lo + int(due[0]) if due.size else n
                closes = end < n
                if end == start:  # this event opens the next period
                    self._close_period(alerts)
                    continue
            self._count(
                times[start:end],
                scores[start:end],
                None if other is None else other[start:end],
                rows[start:end],
                champion_actions[start:end],
                None if challenger_actions is None else challenger_actions[start:end],
            )
            self._score_changes(times[start:end], scores[start:end], alerts)
            self._events += end - start
            if closes:
                self._close_period(alerts)
            start = end
        return alerts

    @staticmethod
    def _scores(values: Any, n: int, what: str) -> np.ndarray:
        """Scores in [0, 1] (the model protocol's); nan counts as missing."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
        if ((arr < 0.0) | (arr > 1.0) | np.isinf(arr)).any():
            raise ValueError(f"{what} must lie in [0, 1] (nan for missing)")
        return arr

    def _count(
        self,
        times: np.ndarray,
        scores: np.ndarray,
        other: np.ndarray | None,
        rows: np.ndarray,
        actions: Sequence[str],
        other_actions: Sequence[str] | None,
    ) -> None:
        """Add a chunk that lies within the open period to its counters (integers only)."""
        lo, hi = int(times.min()), int(times.max())
        self._period_from = lo if self._period_from is None else min(self._period_from, lo)
        self._period_to = hi if self._period_to is None else max(self._period_to, hi)
        self._in_period += times.shape[0]
        # scores
        idx = np.searchsorted(self._score_edges, scores, side="right")
        missing = np.isnan(scores)
        idx[missing] = self._score_edges.size + 1
        self._score_counts += np.bincount(idx, minlength=self._score_ref.size)
        sums = self._sums
        sums[0] += int(np.rint(scores[~missing] * _FIXED_POINT).astype(np.int64).sum())
        sums[1] += int((~missing).sum())
        # features: bin = number of edges <= x, one comparison per edge rank for all columns
        bins = np.zeros(rows.shape, dtype=self._bin_dtype)
        above = np.empty(rows.shape, dtype=bool)
        for edge_row in self._edges_t:
            np.greater_equal(rows, edge_row, out=above)
            bins += above
        flat = bins.astype(np.intp)
        np.copyto(flat, self._missing_bin, where=np.isnan(rows), casting="unsafe")
        flat += self._offsets
        self._feature_counts += np.bincount(flat.ravel(), minlength=self._n_cells)
        # the challenger
        if other is not None and other_actions is not None:
            self._disagree += sum(a != b for a, b in zip(actions, other_actions, strict=True))
            self._paired += len(actions)
            finite = ~np.isnan(other)
            sums[2] += int(np.rint(other[finite] * _FIXED_POINT).astype(np.int64).sum())
            sums[3] += int(finite.sum())

    def _score_changes(
        self, times: np.ndarray, scores: np.ndarray, alerts: list[AlertRecord]
    ) -> None:
        """ADWIN on the score stream, event by event (the per-event part of the cost)."""
        det = self._score_det
        update = det.update
        quiet = self.config.score_change_quiet_events
        acc, cnt = self._score_acc, self._score_cnt
        episode = self._score_episode
        first = self._events
        time_list = times.tolist()
        for i, x in enumerate(scores.tolist()):
            if x == x:
                update(x)
                acc += x
                cnt += 1
                if det.drift_detected:
                    width = int(det.width)
                    after = float(det.estimation)
                    before = (acc - float(det.total)) / (cnt - width) if cnt > width else after
                    acc, cnt = 0.0, 0  # River's ADWIN starts a new window at the next update
                    if episode is None:
                        t = time_list[i]
                        episode = {"id": self._episode_id("score_adwin", t), "first_ms": t}
                        word = "rose" if after > before else "fell"
                        alerts.append(
                            self._alert(
                                episode=episode,
                                kind="score_drift",
                                severity="info",
                                detector="score_adwin",
                                statistic=after,
                                threshold=before,
                                window={"events": width, "to_ms": t},
                                last_ms=t,
                                state="firing",
                                detail=(
                                    f"mean champion score {word} from {before:.4g} to "
                                    f"{after:.4g} (ADWIN, delta {self.config.score_change_delta})"
                                ),
                            )
                        )
                    episode["last"] = first + i
                    continue
            if episode is not None and first + i - episode["last"] >= quiet:
                t = time_list[i]
                alerts.append(
                    self._alert(
                        episode=episode,
                        kind="score_drift",
                        severity="info",
                        detector="score_adwin",
                        statistic=first + i - episode["last"],
                        threshold=quiet,
                        window={"events": quiet, "to_ms": t},
                        last_ms=t,
                        state="resolved",
                        detail=f"no change of the mean score in {quiet} events",
                    )
                )
                episode = None
        self._score_acc, self._score_cnt = acc, cnt
        self._score_episode = episode

    def _close_period(self, alerts: list[AlertRecord]) -> None:
        cfg = self.config
        assert self._period_from is not None and self._period_to is not None
        window: AlertWindow = {
            "events": self._in_period,
            "from_ms": self._period_from,
            "to_ms": self._period_to,
        }
        score_psi = float(
            _psi_rows(
                self._score_ref[None, :],
                self._score_counts[None, :].astype(np.float64),
                self._score_mask,
                self._eps,
            )[0]
        )
        counts = np.append(self._feature_counts, 0)[self._gather].astype(np.float64)
        feature_psi = _psi_rows(self._feature_ref, counts, self._mask, self._eps)
        sums = self._sums
        self._last = {
            "score_psi": score_psi,
            "feature_psi": feature_psi.tolist(),
            "disagreement_rate": self._disagree / self._paired if self._paired else None,
            "champion_score_mean": sums[0] / _FIXED_POINT / sums[1] if sums[1] else None,
            "challenger_score_mean": sums[2] / _FIXED_POINT / sums[3] if sums[3] else None,
        }
        self._psi_step(
            "score",
            score_psi,
            cfg.score_psi_fire,
            cfg.score_psi_resolve,
            window,
            alerts,
            lambda: self._shift_detail(
                self._score_edges, self._score_ref, self._score_counts, "champion score"
            ),
        )
        ignored = set(cfg.ignore_features)
        for j, name in enumerate(self.feature_names):
            if name in ignored:
                continue
            size = int(self._mask[j].sum())
            self._psi_step(
                name,
                float(feature_psi[j]),
                cfg.feature_psi_fire,
                cfg.feature_psi_resolve,
                window,
                alerts,
                lambda j=j, size=size, name=name: self._shift_detail(
                    self._edges_t[: size - 2, j],
                    self._feature_ref[j, :size],
                    counts[j, :size],
                    name,
                ),
            )
        self._in_period = 0
        self._period_start = self._period_from = self._period_to = None
        self._score_counts[:] = 0
        self._feature_counts[:] = 0
        self._disagree = self._paired = 0
        self._sums = [0, 0, 0, 0]

    def _psi_step(
        self,
        key: str,
        value: float,
        fire: float,
        resolve: float,
        window: AlertWindow,
        alerts: list[AlertRecord],
        detail: Any,
    ) -> None:
        """Hysteresis of one PSI series: open at >= fire, close at < resolve."""
        episode = self._psi_episodes.get(key)
        feature = None if key == "score" else key
        detector = "score_psi" if feature is None else "feature_psi"
        kind = "score_drift" if feature is None else "feature_drift"
        assert "from_ms" in window and "to_ms" in window
        if episode is None and value >= fire:
            first = window["from_ms"]
            episode = {"id": self._episode_id(detector, first, feature), "first_ms": first}
            self._psi_episodes[key] = episode
            state, threshold = "firing", fire
        elif episode is not None and value < resolve:
            del self._psi_episodes[key]
            state, threshold = "resolved", resolve
        else:
            return
        alerts.append(
            self._alert(
                episode=episode,
                kind=kind,
                severity="warning",
                detector=detector,
                statistic=value,
                threshold=threshold,
                window=window.copy(),
                last_ms=window["to_ms"],
                state=state,
                feature=feature,
                detail=f"PSI {value:.3g} over {window['events']} events; {detail()}",
            )
        )

    @staticmethod
    def _shift_detail(
        edges: np.ndarray, expected: np.ndarray, counts: np.ndarray, what: str
    ) -> str:
        """The bin that changed the most, in words."""
        e = expected / expected.sum()
        total = counts.sum()
        a = counts / total if total else counts
        i = int(np.argmax(np.abs(a - e)))
        if i == edges.size + 1:
            where = "missing"
        elif edges.size == 0:
            where = "any value"
        elif i == 0:
            where = f"< {edges[0]:.6g}"
        elif i == edges.size:
            where = f">= {edges[-1]:.6g}"
        elif np.nextafter(edges[i - 1], np.inf) == edges[i]:
            where = f"= {edges[i - 1]:.6g}"
        else:
            where = f"[{edges[i - 1]:.6g}, {edges[i]:.6g})"
        return f"largest change: {what} {where}: {e[i]:.1%} -> {a[i]:.1%}"

    # -- labels ------------------------------------------------------------------------------------

    def on_label(
        self,
        event_time_ms: int,
        y: int,
        champion_score: float,
        challenger_score: float | None,
    ) -> list[AlertRecord]:
        """Feed one matured label (in the order labels arrive) with the scores its transaction
        had at decision time; returns new alerts. ``challenger_score`` None: the challenger did
        not score it (it then counts for the champion's metrics only)."""
        if isinstance(event_time_ms, bool) or not isinstance(event_time_ms, int | np.integer):
            raise TypeError(f"event_time_ms must be an int, got {type(event_time_ms).__name__}")
        if isinstance(y, bool | np.bool_) or y in (0, 1):
            label = int(y)
        else:
            raise ValueError(f"y must be 0 or 1, got {y!r}")
        t = int(event_time_ms)
        cs = float(champion_score)
        if not 0.0 <= cs <= 1.0:
            raise ValueError(f"champion_score must be in [0, 1], got {champion_score!r}")
        chs: float | None = None
        if challenger_score is not None:
            if self.challenger_version is None:
                raise ValueError("challenger_score given but the monitor has no challenger")
            chs = float(challenger_score)
            if not 0.0 <= chs <= 1.0:
                raise ValueError(f"challenger_score must be in [0, 1], got {challenger_score!r}")
        cfg = self.config
        alerts: list[AlertRecord] = []
        self._labels += 1
        flagged = cs >= self.review_threshold
        confusion = self._confusion
        if len(self._window) == cfg.label_window:
            _, old_y, _, old_flag = self._window.popleft()
            confusion[_cell(old_y, old_flag)] -= 1
        self._window.append((t, label, cs, flagged))
        confusion[_cell(label, flagged)] += 1
        self._error_step(t, int(flagged != bool(label)), alerts)
        self._champion_metrics.update(label, cs)
        if chs is not None:
            self._challenger_metrics.update(label, chs)
        if self._labels % cfg.compare_every_labels == 0:
            self._compare(alerts)
        return alerts

    def _label_window(self, n: int | None = None) -> AlertWindow:
        items = list(self._window)[-n:] if n else list(self._window)
        times = [w[0] for w in items]
        return {"labels": len(items), "from_ms": min(times), "to_ms": max(times)}

    def _rates_detail(self) -> str:
        tp, fp, fn, tn = self._confusion
        return (
            f"over the last {len(self._window)} labels at review threshold "
            f"{self.review_threshold:.4g}: recall {_ratio(tp, tp + fn):.3f}, "
            f"precision {_ratio(tp, tp + fp):.3f}, FPR {_ratio(fp, fp + tn):.3f}"
        )

    def _error_step(self, t: int, error: int, alerts: list[AlertRecord]) -> None:
        cfg = self.config
        det = self._error_det
        self._error_acc += error
        self._error_cnt += 1
        det.update(error)
        episode = self._error_episode
        detector = f"error_{cfg.error_detector}"
        if det.drift_detected:
            acc, cnt = self._error_acc, self._error_cnt
            self._error_acc = self._error_cnt = 0  # both detectors restart after a detection
            if isinstance(det, drift.ADWIN):
                width = int(det.width)
                after = float(det.estimation)
                before = (acc - float(det.total)) / (cnt - width) if cnt > width else after
                rise = after > before
                window: AlertWindow = (
                    self._label_window(width)
                    if width <= len(self._window)
                    else {"labels": width, "to_ms": t}
                )
                words = f"champion error rate rose from {before:.3g} to {after:.3g} (ADWIN)"
            else:
                p = float(det._p.get())
                after = p + math.sqrt(p * (1 - p) / det._p.n)
                before = float(det._p_min + det.drift_threshold * det._s_min)
                rise = True
                window = self._label_window()
                words = (
                    f"champion error rate {p:.3g} since DDM's last reset, plus one sd "
                    f"({after:.3g}), above its bound {before:.3g}"
                )
            if rise:
                if episode is None:
                    episode = {"id": self._episode_id(detector, t), "first_ms": t}
                    self._error_episode = episode
                    alerts.append(
                        self._alert(
                            episode=episode,
                            kind="performance",
                            severity="critical",
                            detector=detector,
                            statistic=after,
                            threshold=before,
                            window=window,
                            last_ms=t,
                            state="firing",
                            detail=f"{words}; {self._rates_detail()}",
                        )
                    )
                episode["last"] = self._labels
                return
        if episode is not None and self._labels - episode["last"] >= cfg.error_quiet_labels:
            quiet = cfg.error_quiet_labels
            alerts.append(
                self._alert(
                    episode=episode,
                    kind="performance",
                    severity="critical",
                    detector=detector,
                    statistic=self._labels - episode["last"],
                    threshold=quiet,
                    window=self._label_window(quiet),
                    last_ms=t,
                    state="resolved",
                    detail=f"no rise of the error rate in {quiet} labels; {self._rates_detail()}",
                )
            )
            self._error_episode = None

    def _compare(self, alerts: list[AlertRecord]) -> None:
        cfg = self.config
        if self.challenger_version is None:
            return
        champ, chall = self._champion_metrics, self._challenger_metrics
        need = (cfg.compare_min_labels, cfg.compare_min_per_class)
        if not (champ.ready(*need) and chall.ready(*need)):
            self._gap_run = 0
            return
        champ_auc, chall_auc = champ.values()[0], chall.values()[0]
        gap = chall_auc - champ_auc
        self._last_gap = gap
        self._gap_run = self._gap_run + 1 if gap > cfg.challenger_auc_margin else 0
        episode = self._gap_episode
        if episode is None and self._gap_run >= cfg.challenger_consecutive:
            window = self._label_window()
            first = window["from_ms"]
            episode = {"id": self._episode_id("auc_gap", first), "first_ms": first}
            self._gap_episode = episode
            state, threshold = "firing", cfg.challenger_auc_margin
            hint = f", {self._gap_run} evaluations in a row: consider retraining"
        elif episode is not None and gap < cfg.challenger_auc_resolve:
            window = self._label_window()
            self._gap_episode = None
            state, threshold, hint = "resolved", cfg.challenger_auc_resolve, ""
        else:
            return
        detail = (
            f"rolling ROC AUC challenger {chall_auc:.4f} vs champion {champ_auc:.4f} "
            f"over the last {len(chall.pairs)} / {len(champ.pairs)} labels{hint}"
        )
        alerts.append(
            self._alert(
                episode=episode,
                kind="challenger_better",
                severity="info",
                detector="auc_gap",
                statistic=gap,
                threshold=threshold,
                window=window,
                last_ms=window["to_ms"],
                state=state,
                detail=detail,
            )
        )

    # -- statistics --------------------------------------------------------------------------------

    def statistics(self) -> dict[str, float]:
        """Current values for gauges (nan until computed); the key set is fixed per monitor.

        Period statistics are those of the last complete period; label statistics cover the
        last ``label_window`` labels.
        """
        last = self._last
        tp, fp, fn, tn = self._confusion
        champ_auc, champ_loss = self._champion_metrics.values()
        chall_auc, chall_loss = self._challenger_metrics.values()
        stats: dict[str, float] = {
            "events": float(self._events),
            "labels": float(self._labels),
            "score_psi": _nan(last["score_psi"]),
        }
        feature_psi = last["feature_psi"]
        for j, name in enumerate(self.feature_names):
            stats[f"feature_psi:{name}"] = math.nan if feature_psi is None else feature_psi[j]
        stats["feature_psi_max"] = math.nan if feature_psi is None else max(feature_psi)
        stats.update(
            {
                "score_mean": float(self._score_det.estimation) if self._events else math.nan,
                "champion_score_mean": _nan(last["champion_score_mean"]),
                "challenger_score_mean": _nan(last["challenger_score_mean"]),
                "disagreement_rate": _nan(last["disagreement_rate"]),
                "labels_in_window": float(len(self._window)),
                "recall": _ratio(tp, tp + fn),
                "precision": _ratio(tp, tp + fp),
                "fpr": _ratio(fp, fp + tn),
                "error_rate": _ratio(fp + fn, tp + fp + fn + tn),
                "champion_auc": champ_auc,
                "challenger_auc": chall_auc,
                "champion_log_loss": champ_loss,
                "challenger_log_loss": chall_loss,
                "auc_gap": _nan(self._last_gap),
                "alerts_firing": float(
                    len(self._psi_episodes)
                    + sum(
                        e is not None
                        for e in (self._score_episode, self._error_episode, self._gap_episode)
                    )
                ),
            }
        )
        return stats

    # -- persistence -------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        error_state = (
            _adwin_state(self._error_det)
            if isinstance(self._error_det, drift.ADWIN)
            else _ddm_state(self._error_det)
        )
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "river": river.__version__,
            "config": dataclasses.asdict(self.config),
            "reference": self.reference,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "review_threshold": self.review_threshold,
            "events": self._events,
            "labels": self._labels,
            "period": {
                "n": self._in_period,
                "start_ms": self._period_start,
                "from_ms": self._period_from,
                "to_ms": self._period_to,
                "score_counts": self._score_counts.tolist(),
                "feature_counts": self._feature_counts.tolist(),
                "disagree": self._disagree,
                "paired": self._paired,
                "sums": list(self._sums),
            },
            "last": self._last,
            "psi_episodes": self._psi_episodes,
            "score_change": {
                "adwin": _adwin_state(self._score_det),
                "acc": self._score_acc,
                "cnt": self._score_cnt,
                "episode": self._score_episode,
            },
            "window": [list(w) for w in self._window],
            "error": {
                "detector": error_state,
                "acc": self._error_acc,
                "cnt": self._error_cnt,
                "episode": self._error_episode,
            },
            # the champion's window is the label window's (label, champion score) pairs
            "champion_metrics": self._champion_metrics.state(pairs=False),
            "challenger_metrics": self._challenger_metrics.state(pairs=True),
            "gap": {"run": self._gap_run, "last": self._last_gap, "episode": self._gap_episode},
        }

    def to_bytes(self) -> bytes:
        """The monitor's full state as JSON (see the module docstring); store its sha256."""
        return json.dumps(self._state(), allow_nan=False, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_sha256: str) -> Self:
        """Restore a monitor from :meth:`to_bytes` output after verifying its sha256
        (:class:`ModelArtifactError` on a mismatch, unreadable content or another River)."""
        verify_sha256(data, expected_sha256, what="drift monitor state")
        try:
            state = json.loads(bytes(data))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelArtifactError(f"drift monitor state: not JSON: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ModelArtifactError("drift monitor state: unknown format")
        if state.get("version") != _STATE_VERSION:
            raise ModelArtifactError(f"drift monitor state: unknown version {state.get('version')}")
        if state.get("river") != river.__version__:
            raise ModelArtifactError(
                f"drift monitor state written with river {state.get('river')}, this process has "
                f"{river.__version__}: ADWIN's format is River's; start a fresh monitor"
            )
        try:
            return cls._restore(state)
        except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as exc:
            raise ModelArtifactError(
                f"drift monitor state: invalid content: {type(exc).__name__}: {exc}"
            ) from exc

    @classmethod
    def _restore(cls, state: dict[str, Any]) -> Self:
        self = cls(
            DriftConfig(
                **{**state["config"], "ignore_features": tuple(state["config"]["ignore_features"])}
            ),
            state["reference"],
            champion_version=state["champion_version"],
            challenger_version=state["challenger_version"],
            review_threshold=state["review_threshold"],
        )
        cfg = self.config
        self._events = int(state["events"])
        self._labels = int(state["labels"])
        period = state["period"]
        self._in_period = int(period["n"])
        self._period_start = period["start_ms"]
        self._period_from = period["from_ms"]
        self._period_to = period["to_ms"]
        score_counts = np.array(period["score_counts"], dtype=np.int64)
        feature_counts = np.array(period["feature_counts"], dtype=np.int64)
        if score_counts.shape != self._score_counts.shape:
            raise ValueError("score counts do not match the reference")
        if feature_counts.shape != self._feature_counts.shape:
            raise ValueError("feature counts do not match the reference")
        self._score_counts, self._feature_counts = score_counts, feature_counts
        self._disagree, self._paired = int(period["disagree"]), int(period["paired"])
        self._sums = [int(v) for v in period["sums"]]
        last = state["last"]
        if set(last) != set(self._last):
            raise ValueError("unexpected keys in 'last'")
        self._last = last
        self._psi_episodes = dict(state["psi_episodes"])
        change = state["score_change"]
        self._score_det = _adwin_restore(cfg.score_change_delta, change["adwin"])
        self._score_acc, self._score_cnt = float(change["acc"]), int(change["cnt"])
        self._score_episode = change["episode"]
        for t, y, cs, flagged in state["window"]:
            self._window.append((int(t), int(y), float(cs), bool(flagged)))
            self._confusion[_cell(int(y), bool(flagged))] += 1
        error = state["error"]
        if cfg.error_detector == "adwin":
            self._error_det = _adwin_restore(cfg.error_change_delta, error["detector"])
        else:
            self._error_det = _ddm_restore(cfg.ddm_warm_start, error["detector"])
        self._error_acc, self._error_cnt = int(error["acc"]), int(error["cnt"])
        self._error_episode = error["episode"]
        self._champion_metrics = _ModelMetrics.restore(
            cfg.label_window, state["champion_metrics"], [(w[1], w[2]) for w in self._window]
        )
        chall = state["challenger_metrics"]
        self._challenger_metrics = _ModelMetrics.restore(cfg.label_window, chall, chall["pairs"])
        gap = state["gap"]
        self._gap_run, self._last_gap, self._gap_episode = (
            int(gap["run"]),
            gap["last"],
            gap["episode"],
        )
        return self


def _cell(y: int, flagged: bool) -> int:
    """Index in (tp, fp, fn, tn)."""
    return (0 if flagged else 2) + (0 if y else 1)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan
