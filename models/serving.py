"""The models a running sidecar serves, kept in step with the registry, and the canary's guard.

:class:`ModelSet` loads, from the registry's stages (:mod:`fraudstream.models.registry`), the
``production`` model (or a pinned version), the ``canary`` (if any) and the newest ``shadow`` of
each kind (the River challenger among them), each verified before it is parsed. It polls the
registry's revision (a stat of its stage log, once a second by default) and reloads when a stage
changed: the caller swaps the models between two batches, so no transaction is scored twice or
missed, and every decision records the versions and stages that made it.

Failures never stop decisions: a production model that fails to load keeps the last good one in
service; a canary or shadow that fails is left out. Each failure is reported once per version as
a :class:`Change` (the caller alerts and counts it).

Online models (``learns_online``) keep learning in the sidecar: their evolving state is the
sidecar's, snapshotted with the decision step's store (:meth:`ModelSet.online_state`) and restored
on resume, verified by sha256 before it is parsed, so a resumed sidecar has learned each label
exactly once. A version seen for the first time starts from its registered (warm-started) state.

:class:`CanaryGuard` watches the canary's share of traffic and halts it (back to shadow, with an
alert) when its decline rate, its false-positive rate on matured labels or its score drift
crosses the configured bounds; the test is a function of the decisions and labels in input order.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraudstream.models.base import sha256_hex, verify_sha256
from fraudstream.models.decide import Scorer
from fraudstream.models.drift import psi
from fraudstream.models.registry import LoadedModel, ModelRegistry
from fraudstream.state.features import FeatureSet

__all__ = ["CanaryGuard", "CanaryPolicy", "Change", "ModelSet"]

log = logging.getLogger(__name__)

AUTO_HALT_ACTOR = "sidecar:auto-halt"


@dataclass(frozen=True)
class Change:
    """``kind`` is ``changed`` (the set was reloaded) or ``failed`` (a version could not load)."""

    kind: str
    version: str
    stage: str
    detail: str


class ModelSet:
    """See the module docstring. ``online_state`` is a :meth:`online_state` snapshot."""

    def __init__(
        self,
        root: Path,
        fs: FeatureSet,
        *,
        pinned: str | None = None,
        online_state: bytes | None = None,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = ModelRegistry(root)
        self.fs = fs
        self.pinned = pinned
        self.poll_s = poll_s
        self.clock = clock
        self._restored = _read_online(online_state)
        self._online: dict[str, Any] = {}  # version -> evolving model
        self._failed: set[str] = set()
        self._revision = self.registry.revision()
        self._next_poll = clock() + poll_s
        self.production, self.canary, self.shadows, changes = self._load(first=True)
        for change in changes:
            log.error("model %s (%s) not served: %s", change.version, change.stage, change.detail)
        self.startup_failures = changes

    # ----------------------------------------------------------------------------- loading
    def _scorer(self, loaded: LoadedModel, stage: str) -> Scorer:
        model = loaded.model
        online = bool(getattr(model, "learns_online", False))
        if online:
            kept = self._online.get(loaded.version)
            if kept is not None:
                model = kept
            elif loaded.version in self._restored:
                sha, data = self._restored.pop(loaded.version)
                model = type(model).from_bytes(data, expected_sha256=sha)
            self._online[loaded.version] = model
        return Scorer(
            version=loaded.version,
            kind=loaded.kind,
            stage=stage,
            model=model,
            thresholds=dict(loaded.manifest["thresholds"]),
            online=online,
            learned_until_ms=_learned_until(loaded.manifest) if online else None,
        )

    def _load(self, *, first: bool) -> tuple[Scorer, Scorer | None, list[Scorer], list[Change]]:
        reg, fs = self.registry, self.fs
        changes: list[Change] = []
        if self.pinned is not None:
            production = self._scorer(reg.load(self.pinned, feature_set=fs), "production")
        else:
            try:
                production = self._scorer(
                    reg.load(stage="production", feature_set=fs), "production"
                )
            except Exception as exc:
                if first:
                    raise
                version = reg.newest(stage="production") or "?"
                changes.append(Change("failed", version, "production", str(exc)))
                production = self.production  # the last good champion stays in service
        canary = None
        wanted: list[tuple[str, str]] = []
        version = reg.newest(stage="canary")
        if version is not None:
            wanted.append((version, "canary"))
        for kind in sorted({reg.kind_of(v) for v in reg.versions(stage="shadow")}):
            version = reg.newest(stage="shadow", kind=kind)
            if version is not None:
                wanted.append((version, "shadow"))
        shadows = []
        for version, stage in wanted:
            if version == production.version:
                continue
            try:
                scorer = self._scorer(reg.load(version, feature_set=fs), stage)
            except Exception as exc:
                if version not in self._failed:
                    changes.append(Change("failed", version, stage, str(exc)))
                    self._failed.add(version)
                continue
            if stage == "canary":
                canary = scorer
            else:
                shadows.append(scorer)
        live = {production.version} | {s.version for s in shadows}
        if canary is not None:
            live.add(canary.version)
        for version in list(self._online):
            if version not in live:
                del self._online[version]  # left service: its evolved state goes with it
        return production, canary, shadows, changes

    def refresh(self, *, force: bool = False) -> list[Change]:
        """Reload if the registry's stages changed (polled every ``poll_s``); the changes."""
        now = self.clock()
        if not force and now < self._next_poll:
            return []
        self._next_poll = now + self.poll_s
        revision = self.registry.revision()
        if not force and revision == self._revision:
            return []
        self._revision = revision
        before = self.versions()
        self.production, self.canary, self.shadows, changes = self._load(first=False)
        after = self.versions()
        if after != before:
            changes.append(Change("changed", self.production.version, "production", repr(after)))
        return changes

    def drop(self, version: str) -> None:
        """Leave a model that failed while scoring out of service until the stages change."""
        self._failed.add(version)
        if self.canary is not None and self.canary.version == version:
            self.canary = None
        self.shadows = [s for s in self.shadows if s.version != version]

    def versions(self) -> dict[str, str]:
        out = {self.production.version: "production"}
        if self.canary is not None:
            out[self.canary.version] = "canary"
        out.update((s.version, "shadow") for s in self.shadows)
        return out

    def reference(self, version: str) -> Mapping[str, Any] | None:
        """The drift reference registered with ``version`` (None when it has none)."""
        ref = self.registry.manifest(version).get("reference")
        return ref if isinstance(ref, Mapping) else None

    def halt_canary(self, reason: str) -> None:
        """Send the canary back to shadow in the registry (the change is picked up at once)."""
        if self.canary is None:
            return
        version = self.canary.version
        self.registry.set_stage(version, "shadow", reason=reason, actor=AUTO_HALT_ACTOR)
        self.refresh(force=True)

    # ----------------------------------------------------------------------------- state
    def online_state(self) -> bytes:
        """The evolving online models, for the decision step's snapshot."""
        out = {}
        for version, model in self._online.items():
            data = model.to_bytes()
            out[version] = {"sha256": sha256_hex(data), "data": base64.b64encode(data).decode()}
        return orjson.dumps(out)


def _learned_until(manifest: dict[str, Any]) -> int | None:
    value = (manifest.get("training_window") or {}).get("learned_until_ms")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_online(raw: bytes | None) -> dict[str, tuple[str, bytes]]:
    if not raw:
        return {}
    out = {}
    for version, entry in orjson.loads(raw).items():
        data = base64.b64decode(entry["data"])
        verify_sha256(data, entry["sha256"], what=f"online state of {version}")
        out[version] = (entry["sha256"], data)
    return out


@dataclass(frozen=True, kw_only=True)
class CanaryPolicy:
    """When the canary goes back to shadow (all rates over its share of traffic)."""

    min_decisions: int = 500  # decide nothing before this many canary decisions
    max_decline_ratio: float = 3.0  # canary declines / the champion's on the same transactions
    min_decline_excess: float = 0.01  # ... and at least this much more in absolute terms
    max_fpr: float = 0.02  # at its review threshold, on matured legitimate labels
    min_labels: int = 200  # labelled legitimate canary transactions before the FPR counts
    max_score_psi: float = 0.25  # canary scores vs its registered reference
    period: int = 1000  # canary decisions per PSI evaluation

    def __post_init__(self) -> None:
        if self.min_decisions < 1 or self.min_labels < 1 or self.period < 10:
            raise ValueError(f"bad canary policy: {self}")


@dataclass
class CanaryGuard:
    """Counts the canary's decisions and labels; :meth:`verdict` says when to halt it."""

    version: str
    policy: CanaryPolicy
    thresholds: Mapping[str, float]
    reference: Mapping[str, Any] | None = None
    decisions: int = 0
    declines: int = 0
    champion_declines: int = 0
    negatives: int = 0
    false_positives: int = 0
    _scores: list[float] = field(default_factory=list)
    last_psi: float = 0.0

    def on_decisions(
        self, canary_actions: list[str], champion_actions: list[str], scores: Any
    ) -> None:
        self.decisions += len(canary_actions)
        self.declines += sum(a == "decline" for a in canary_actions)
        self.champion_declines += sum(a == "decline" for a in champion_actions)
        if self.reference is not None:
            self._scores.extend(np.asarray(scores, dtype=np.float64).tolist())
            while len(self._scores) >= self.policy.period:
                chunk = np.asarray(self._scores[: self.policy.period])
                del self._scores[: self.policy.period]
                edges = np.asarray(self.reference["score"]["edges"])
                counts = np.bincount(
                    np.searchsorted(edges, chunk, side="right"), minlength=len(edges) + 1
                )
                expected = self.reference["score"]["proportions"][: len(edges) + 1]
                self.last_psi = float(psi(np.asarray(expected), counts))

    def on_label(self, y: int, score: float) -> None:
        if y == 0:
            self.negatives += 1
            self.false_positives += int(score >= self.thresholds["review"])

    _COUNTERS = (
        "decisions",
        "declines",
        "champion_declines",
        "negatives",
        "false_positives",
        "last_psi",
    )

    def to_state(self) -> dict[str, Any]:
        """The counters (JSON): a resume continues them, so a halt happens at the same input
        position whatever the restarts before it."""
        state: dict[str, Any] = {k: getattr(self, k) for k in self._COUNTERS}
        state["version"] = self.version
        state["scores"] = list(self._scores)
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != self.version:
            return  # another canary's counters: start afresh
        for k in self._COUNTERS:
            setattr(self, k, type(getattr(self, k))(state[k]))
        self._scores = [float(x) for x in state["scores"]]

    def verdict(self) -> str | None:
        """A reason to halt, or None."""
        p = self.policy
        if self.decisions >= p.min_decisions:
            rate = self.declines / self.decisions
            base = self.champion_declines / self.decisions
            if rate > max(base * p.max_decline_ratio, base + p.min_decline_excess):
                return f"decline rate {rate:.2%} vs the champion's {base:.2%} on the same traffic"
        if self.negatives >= p.min_labels:
            fpr = self.false_positives / self.negatives
            if fpr > p.max_fpr:
                return f"false-positive rate {fpr:.2%} > {p.max_fpr:.2%} on matured labels"
        if self.last_psi > p.max_score_psi:
            return f"score PSI {self.last_psi:.3f} > {p.max_score_psi} against its reference"
        return None
