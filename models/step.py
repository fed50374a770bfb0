"""The decision step: models in service, decisions, online learning, drift alerts, canary guard.

Everything the sidecar's ``decide`` step does, without a stream engine (the flow only moves items
in and messages out, ``flows/scoring.py``):

* :class:`~fraudstream.models.serving.ModelSet` keeps the production, canary and shadow models in
  step with the registry (reloaded between two batches when a stage changes; failures keep the
  last good champion and raise a ``model_failure`` alert);
* :class:`~fraudstream.models.decide.Decider` decides in input order, the online challenger
  learning every label change;
* :class:`~fraudstream.models.drift.DriftMonitor` watches the champion's scores, features and
  matured labels and the challenger's ranking against the champion's, and emits alert records;
* :class:`~fraudstream.models.serving.CanaryGuard` halts a canary whose decline rate, false-
  positive rate or score drift crosses its bounds (back to shadow, ``canary_halt`` alert).

Its durable state (the decision store, the online models' evolving state, the drift monitor's and
the guard's counters) lives in one :class:`~fraudstream.state.base.EpochStore`: :meth:`save`
writes it before the step's snapshot commits the epoch, and a resume restores it, verified by
sha256. The monitor and the guard are rebuilt (empty) when the models they watch change.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraudstream.models.base import sha256_hex
from fraudstream.models.decide import Decider
from fraudstream.models.drift import DriftConfig, DriftMonitor
from fraudstream.models.serving import CanaryGuard, CanaryPolicy, Change, ModelSet
from fraudstream.schema import ALERT_SCHEMA_VERSION, AlertRecord
from fraudstream.state.base import EpochStore, json_value
from fraudstream.state.decisions import DecisionStore
from fraudstream.state.features import FeatureSet

__all__ = ["DecisionStep", "StepConfig", "StepOutput"]

log = logging.getLogger(__name__)

_ONLINE = b"m\x00online-models"
_DRIFT = b"m\x00drift-monitor"
_FIRST = b"m\x00first-event-ms"
_GUARD = b"m\x00canary-guard"


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """The decision step's settings."""

    registry: Path
    pinned_version: str | None = None
    canary_share: float = 0.05
    poll_s: float = 1.0
    decisions_ttl_ms: int
    drift: DriftConfig | None = field(default_factory=DriftConfig)
    # Drift detection starts this long (event time) after the first event the step decided:
    # until the entity state holds a full horizon, features are not comparable with training's.
    # None: the feature set's horizon.
    drift_warmup_ms: int | None = None
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)


@dataclass
class StepOutput:
    decisions: list[tuple[Any, ...]] = field(default_factory=list)  # Decider's "decision" outputs
    dead: list[tuple[Any, ...]] = field(default_factory=list)  # Decider's "dead" outputs
    alerts: list[AlertRecord] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


class DecisionStep:
    """See the module docstring. ``queue`` is a snapshot of the decider's queue."""

    def __init__(
        self,
        fs: FeatureSet,
        store: EpochStore,
        cfg: StepConfig,
        *,
        clock_ms: Callable[[], int],
        queue: Iterable[tuple[Any, ...]] = (),
    ) -> None:
        self.fs = fs
        self.store = store
        self.cfg = cfg
        self.clock_ms = clock_ms
        online_raw, drift_raw, first_raw, guard_raw = store.get_many(
            [_ONLINE, _DRIFT, _FIRST, _GUARD]
        )
        self.first_event_ms: int | None = None if first_raw is None else int(first_raw)
        warmup = cfg.drift_warmup_ms
        self.warmup_ms = fs.horizon_ms() if warmup is None else warmup
        self._trained: dict[str, int] = {}
        self._row_failures_alerted: set[str] = set()
        self.models = ModelSet(
            cfg.registry, fs, pinned=cfg.pinned_version, online_state=online_raw, poll_s=cfg.poll_s
        )
        m = self.models
        self.decider = Decider(
            fs,
            production=m.production,
            canary=m.canary,
            shadows=m.shadows,
            canary_share=cfg.canary_share,
            decisions=DecisionStore(store, ttl_ms=cfg.decisions_ttl_ms),
            clock_ms=clock_ms,
        )
        self.decider.push(queue)
        self.monitor = self._monitor(drift_raw)
        self.guard = self._guard()
        if self.guard is not None and guard_raw:
            self.guard.restore(orjson.loads(guard_raw))
        self.pending_alerts: list[AlertRecord] = [
            self._failure_alert(c) for c in m.startup_failures
        ]

    # ----------------------------------------------------------------------------- parts
    def _challenger(self) -> Any:
        online = [s for s in self.decider.scorers if s.online]
        return online[0] if online else None

    def _monitor(self, raw: bytes | None) -> DriftMonitor | None:
        if self.cfg.drift is None:
            return None
        production = self.models.production
        reference = self.models.reference(production.version)
        if reference is None:
            log.warning(
                "model %s has no drift reference: drift detection is off", production.version
            )
            return None
        challenger = self._challenger()
        challenger_version = None if challenger is None else challenger.version
        if raw:
            state = orjson.loads(raw)
            same = (state["champion"], state["challenger"]) == (
                production.version,
                challenger_version,
            )
            if same:
                data = base64.b64decode(state["data"])
                return DriftMonitor.from_bytes(data, expected_sha256=state["sha256"])
        return DriftMonitor(
            self.cfg.drift,
            reference,
            champion_version=production.version,
            challenger_version=challenger_version,
            review_threshold=production.thresholds["review"],
        )

    def _guard(self) -> CanaryGuard | None:
        canary = self.models.canary
        if canary is None:
            return None
        return CanaryGuard(
            version=canary.version,
            policy=self.cfg.canary,
            thresholds=canary.thresholds,
            reference=self.models.reference(canary.version),
        )

    # ----------------------------------------------------------------------------- batches
    def on_items(self, values: Iterable[tuple[Any, ...]]) -> StepOutput:
        """Push ingest items (``("items", [...])``) and entity parts; decide what is complete."""
        out = StepOutput()
        out.alerts += self.pending_alerts
        self.pending_alerts = []
        self._refresh(out)
        decider = self.decider
        for value in values:
            if value[0] == "items":
                decider.push(value[1])
            else:
                decider.push([value])
        for o in decider.drain():
            (out.decisions if o[0] == "decision" else out.dead).append(o)
        for failure in decider.failures:
            self.models.drop(failure.version)
            change = Change("failed", failure.version, failure.stage, failure.error)
            out.changes.append(change)
            out.alerts.append(self._failure_alert(change))
        decider.failures.clear()
        failed_rows = [o for o in out.dead if o[2] == "processing_error:decide"]
        version = self.models.production.version
        if failed_rows and version not in self._row_failures_alerted:
            # rows the champion could not score go to the dead-letter topic; say so once
            self._row_failures_alerted.add(version)
            change = Change(
                "failed",
                version,
                "production",
                f"{len(failed_rows)} rows could not be scored (dead-lettered), first: "
                f"{failed_rows[0][3]}",
            )
            out.alerts.append(self._failure_alert(change))
        self._watch(out)
        return out

    def _refresh(self, out: StepOutput) -> None:
        changes = self.models.refresh()
        if not changes:
            return
        out.changes += changes
        out.alerts += [self._failure_alert(c) for c in changes if c.kind == "failed"]
        if any(c.kind == "changed" for c in changes):
            self._apply_models()

    def _apply_models(self) -> None:
        m = self.models
        self.decider.set_models(m.production, m.canary, m.shadows)
        challenger = self._challenger()
        monitor = self.monitor
        if monitor is None or (
            monitor.champion_version != m.production.version
            or monitor.challenger_version != (None if challenger is None else challenger.version)
        ):
            self.monitor = self._monitor(None)
        if self.guard is None or m.canary is None or self.guard.version != m.canary.version:
            self.guard = self._guard()

    def _watch(self, out: StepOutput) -> None:
        stats = self.decider.stats
        prod = self.models.production
        challenger = self._challenger()
        if self.first_event_ms is None and stats.event_times is not None and len(stats.event_times):
            self.first_event_ms = int(stats.event_times[0])
        warm_from = None if self.first_event_ms is None else self.first_event_ms + self.warmup_ms
        if warm_from is not None:
            warm_from = max(warm_from, self._trained_until(prod.version) + 1)
        if stats.rows is not None and len(stats.rows) and prod.version in stats.scores:
            champion = stats.scores[prod.version]
            ok = np.isfinite(champion)
            warm = ok & (stats.event_times >= warm_from) if stats.event_times is not None else ok
            times = stats.event_times[ok] if stats.event_times is not None else None
            c_scores = None
            c_actions = None
            if challenger is not None and challenger.version in stats.scores:
                c_scores = stats.scores[challenger.version][ok]
                c_actions = [
                    a for a, k in zip(stats.actions[challenger.version], ok, strict=True) if k
                ]
            p_actions = [a for a, k in zip(stats.actions[prod.version], ok, strict=True) if k]
            if self.monitor is not None and times is not None and warm.any():
                w = warm[ok]  # the warm rows among the decided ones
                out.alerts += self.monitor.on_decisions(
                    times[w],
                    champion[ok][w],
                    None if c_scores is None else c_scores[w],
                    stats.rows[ok][w],
                    [a for a, k in zip(p_actions, w, strict=True) if k],
                    None
                    if c_actions is None
                    else [a for a, k in zip(c_actions, w, strict=True) if k],
                )
            guard = self.guard
            canary = self.models.canary
            mine = stats.by_canary
            if (
                guard is not None
                and canary is not None
                and canary.version in stats.scores
                and mine is not None
            ):
                if mine.any():
                    guard.on_decisions(
                        [a for a, k in zip(stats.actions[canary.version], mine, strict=True) if k],
                        [a for a, k in zip(stats.actions[prod.version], mine, strict=True) if k],
                        stats.scores[canary.version][mine],
                    )
        for event_ms, _label_ms, y, scores in stats.labels:
            warm_label = warm_from is not None and event_ms >= warm_from
            if self.monitor is not None and warm_label and prod.version in scores:
                c = None if challenger is None else scores.get(challenger.version)
                out.alerts += self.monitor.on_label(int(event_ms), int(y), scores[prod.version], c)
            if self.guard is not None and self.guard.version in scores:
                self.guard.on_label(int(y), scores[self.guard.version])
        if self.guard is not None:
            reason = self.guard.verdict()
            if reason is not None:
                out.alerts.append(self._halt(reason))

    def _trained_until(self, version: str) -> int:
        """The last event time ``version`` was trained on (-1 when unknown): the champion's
        scores and errors on its own training rows are in-sample, so they say nothing about
        drift, and the monitor skips them."""
        cached = self._trained.get(version)
        if cached is None:
            window = self.models.registry.manifest(version).get("training_window") or {}
            last = [-1]
            if isinstance(window.get("to_ms"), int):
                last.append(window["to_ms"])  # the last training row (inclusive)
            if isinstance(window.get("requested_to_ms"), int):
                last.append(window["requested_to_ms"] - 1)  # the window asked for (half-open)
            cached = max(last)
            self._trained[version] = cached
        return cached

    def _halt(self, reason: str) -> AlertRecord:
        guard = self.guard
        assert guard is not None
        log.error("canary %s halted: %s", guard.version, reason)
        record = _alert(
            kind="canary_halt",
            severity="warning",
            detector="canary_guard",
            statistic=float(guard.decisions),
            threshold=float(self.cfg.canary.min_decisions),
            champion=self.models.production.version,
            challenger=guard.version,
            detail=f"canary {guard.version} back to shadow: {reason}",
            runbook="docs/runbook.md#canary-halt",
            key=guard.version,
            event_ms=0,
        )
        self.models.halt_canary(reason)
        self._apply_models()
        return record

    def _failure_alert(self, change: Change) -> AlertRecord:
        severity = "critical" if change.stage == "production" else "warning"
        return _alert(
            kind="model_failure",
            severity=severity,
            detector="model_loader",
            statistic=1.0,
            threshold=0.0,
            champion=self.models.production.version,
            challenger=change.version if change.stage != "production" else None,
            detail=f"{change.version} ({change.stage}) out of service: {change.detail}"[:500],
            runbook="docs/runbook.md#model-failure",
            key=change.version,
            event_ms=0,
        )

    # ----------------------------------------------------------------------------- state
    def save(self) -> None:
        """Write the online models' and the monitor's state into the store (before commit)."""
        updates: dict[bytes, bytes | None] = {_ONLINE: self.models.online_state()}
        if self.first_event_ms is not None:
            updates[_FIRST] = str(self.first_event_ms).encode()
        monitor = self.monitor
        if monitor is not None:
            data = monitor.to_bytes()
            updates[_DRIFT] = json_value(
                {
                    "champion": monitor.champion_version,
                    "challenger": monitor.challenger_version,
                    "sha256": sha256_hex(data),
                    "data": base64.b64encode(data).decode(),
                }
            )
        else:
            updates[_DRIFT] = None
        guard = self.guard
        updates[_GUARD] = None if guard is None else json_value(guard.to_state())
        keys = list(updates)
        before = dict(zip(keys, self.store.get_many(keys), strict=True))
        self.store.write(updates, before)


def _alert(
    *,
    kind: str,
    severity: str,
    detector: str,
    statistic: float,
    threshold: float,
    champion: str,
    challenger: str | None,
    detail: str,
    runbook: str,
    key: str,
    event_ms: int,
) -> AlertRecord:
    """A one-off ``firing`` alert record (model failures and canary halts have no resolution:
    the registry's stage log says what was done)."""
    record: dict[str, Any] = {
        "schema_version": ALERT_SCHEMA_VERSION,
        "id": f"{detector}/{champion}/{key}/{event_ms}",
        "kind": kind,
        "severity": severity,
        "detector": detector,
        "statistic": statistic,
        "threshold": threshold,
        "window": {},
        "models": {"champion": champion, "challenger": challenger},
        "first_event_ms": event_ms,
        "last_event_ms": event_ms,
        "state": "firing",
        "runbook": runbook,
        "detail": detail,
    }
    return record  # type: ignore[return-value]
