"""Feature sets as configuration: frozen, validated values you can diff, hash and test.

A :class:`FeatureSet` lists

* base features computed from the event alone (amount, weekend and night flags, UTC);
* per-entity plans (:class:`EntityPlan`): for one entity kind (account, card, terminal, ...),
  sliding event-time windows with aggregations, optional profile features (amount z-score,
  seconds since the previous event, "new value" flags) and delayed label windows (risk).

Semantics (exact at the feature set's ``resolution_ms``, 1 s by default: times are truncated to
whole resolution units before windowing):

* A window of length ``w`` at event time ``t`` covers ``(t - w, t]``; the current event is
  included iff the plan says ``include_current``. Events are placed by their own timestamp, so an
  out-of-order event lands in the right buckets; an event never sees an event with a later time.
* A delayed window with delay ``d`` covers ``(t - d - w, t - d]``: ``nb_tx`` counts the entity's
  transactions there, ``nb_fraud`` those whose fraud label has ``label_time_ms <= t`` (ms
  precision) and took effect before the transaction, and ``risk = nb_fraud / nb_tx`` (0 when
  ``nb_tx`` is 0). A label takes effect ``label_delay_ms`` after its record's timestamp in the
  input's order (:mod:`fraudstream.order`; replays of files use ``label_time_ms``): a quiet labels
  topic then never holds transactions back.

Imputation (part of the feature set, so training and serving agree): when the entity's field is
missing from the event, every feature of that plan takes its ``imputed`` value (0 for counts,
sums, means, std, max, z-score, flags and risk; -1 for seconds-since-previous). The first event of
an entity has seconds-since-previous -1 and z-score 0; z-score is 0 while fewer than 2 earlier
events exist or their std is 0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from fraudstream.schema import OPTIONAL_FIELDS

__all__ = [
    "AGGREGATIONS",
    "DAY_MS",
    "EntityPlan",
    "FeatureSet",
    "Window",
    "default_feature_set",
    "get_feature_set",
    "handbook_feature_set",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

AGGREGATIONS = ("count", "sum", "mean", "std", "max")
Aggregation = Literal["count", "sum", "mean", "std", "max"]
_ENTITY_FIELDS = ("account_id", *OPTIONAL_FIELDS)


@dataclass(frozen=True, kw_only=True)
class Window:
    """A window length and the label used for it in column names."""

    length_ms: int
    name: str

    def __post_init__(self) -> None:
        if self.length_ms <= 0:
            raise ValueError(f"window length must be positive: {self!r}")
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"window name must be alphanumeric: {self.name!r}")


@dataclass(frozen=True, kw_only=True)
class EntityPlan:
    """Everything computed for one entity kind (one state record per entity value)."""

    entity: str
    field: str
    prefix: str
    windows: tuple[Window, ...] = ()
    aggs: tuple[Aggregation, ...] = ("count", "sum")
    include_current: bool = True
    zscore_window: Window | None = None
    recency: bool = False
    novelty_fields: tuple[str, ...] = ()
    delay_ms: int = 0
    delayed_windows: tuple[Window, ...] = ()
    delayed_outputs: tuple[Literal["delayed_count", "risk"], ...] = ("delayed_count", "risk")

    def __post_init__(self) -> None:
        if self.field not in _ENTITY_FIELDS:
            raise ValueError(f"{self.entity}: unknown entity field {self.field!r}")
        for agg in self.aggs:
            if agg not in AGGREGATIONS:
                raise ValueError(f"{self.entity}: unknown aggregation {agg!r}")
        for nf in self.novelty_fields:
            if nf not in OPTIONAL_FIELDS:
                raise ValueError(f"{self.entity}: unknown novelty field {nf!r}")
        if self.delayed_windows and self.delay_ms <= 0:
            raise ValueError(f"{self.entity}: delayed windows need delay_ms > 0")
        lengths = [w.length_ms for w in self.windows]
        if lengths != sorted(set(lengths)):
            raise ValueError(f"{self.entity}: windows must be strictly increasing")
        if not (self.windows or self.delayed_windows or self.recency or self.novelty_fields):
            raise ValueError(f"{self.entity}: plan computes nothing")

    @property
    def has_delayed(self) -> bool:
        return bool(self.delayed_windows)

    def horizon_ms(self) -> int:
        """How far back this plan ever looks from an event's own time."""
        spans = [w.length_ms for w in self.windows]
        if self.zscore_window is not None:
            spans.append(self.zscore_window.length_ms)
        spans += [self.delay_ms + w.length_ms for w in self.delayed_windows]
        return max(spans, default=0)


@dataclass(frozen=True, kw_only=True)
class FeatureSet:
    """A named, versioned list of features; ``feature_names`` fixes the column order."""

    name: str
    version: int
    plans: tuple[EntityPlan, ...]
    amount_feature: str | None = "amount"
    weekend_feature: str | None = "is_weekend"
    night_feature: str | None = "is_night"
    night_last_hour: int = 6
    agg_names: tuple[tuple[str, str], ...] = ()
    resolution_ms: int = 1000
    allowed_lateness_ms: int = DAY_MS
    label_delay_ms: int = 1000
    max_buckets: int = 512
    max_seen_values: int = 16
    feature_names: tuple[str, ...] = field(init=False)
    plan_slices: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError("version must be >= 1")
        if self.resolution_ms <= 0 or self.max_buckets < 16:
            raise ValueError("resolution_ms must be > 0 and max_buckets >= 16")
        if self.label_delay_ms < 0 or self.allowed_lateness_ms < 0:
            raise ValueError("label_delay_ms and allowed_lateness_ms must be >= 0")
        entities = [p.entity for p in self.plans]
        if len(set(entities)) != len(entities):
            raise ValueError(f"duplicate entity plans: {entities}")
        for p in self.plans:
            for w in (*p.windows, *p.delayed_windows, p.zscore_window):
                if w is not None and w.length_ms % self.resolution_ms:
                    raise ValueError(f"{p.entity}: {w!r} not a multiple of resolution")
            if p.delay_ms % self.resolution_ms:
                raise ValueError(f"{p.entity}: delay not a multiple of resolution")
        names = list(self.base_names())
        slices = []
        for plan in self.plans:
            start = len(names)
            names += self._plan_names(plan)
            slices.append((start, len(names)))
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {self.name!r}")
        object.__setattr__(self, "feature_names", tuple(names))
        object.__setattr__(self, "plan_slices", tuple(slices))

    def base_names(self) -> tuple[str, ...]:
        return tuple(
            n for n in (self.amount_feature, self.weekend_feature, self.night_feature) if n
        )

    def agg_name(self, agg: str) -> str:
        return dict(self.agg_names).get(agg, agg)

    def _plan_names(self, p: EntityPlan) -> list[str]:
        names = [f"{p.prefix}_{self.agg_name(a)}_{w.name}" for w in p.windows for a in p.aggs]
        if p.zscore_window is not None:
            names.append(f"{p.prefix}_amount_zscore_{p.zscore_window.name}")
        if p.recency:
            names.append(f"{p.prefix}_seconds_since_prev")
        names += [f"{p.prefix}_new_{nf}" for nf in p.novelty_fields]
        names += [
            f"{p.prefix}_{self.agg_name(o)}_{w.name}"
            for w in p.delayed_windows
            for o in p.delayed_outputs
        ]
        return names

    def imputed(self, plan_index: int) -> tuple[float, ...]:
        """Values of a plan's features when the event lacks the entity field."""
        p = self.plans[plan_index]
        out = [0.0] * (len(p.windows) * len(p.aggs))
        if p.zscore_window is not None:
            out.append(0.0)
        if p.recency:
            out.append(-1.0)
        out += [0.0] * len(p.novelty_fields)
        out += [0.0] * (len(p.delayed_windows) * len(p.delayed_outputs))
        return tuple(out)

    def horizon_ms(self) -> int:
        """Longest look-back of any plan, plus the allowed lateness: older state can be dropped."""
        return max(p.horizon_ms() for p in self.plans) + self.allowed_lateness_ms

    @property
    def fingerprint(self) -> str:
        """A short digest of the whole definition: equal fingerprints compute equal features."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def _w(length_ms: int, name: str) -> Window:
    return Window(length_ms=length_ms, name=name)


def default_feature_set() -> FeatureSet:
    """The sidecar's feature set: velocity over five entity kinds plus delayed terminal risk."""
    velocity = (
        _w(5 * MINUTE_MS, "5m"),
        _w(HOUR_MS, "1h"),
        _w(DAY_MS, "24h"),
        _w(7 * DAY_MS, "7d"),
        _w(30 * DAY_MS, "30d"),
    )
    short = velocity[:3]
    return FeatureSet(
        name="default",
        version=1,
        plans=(
            EntityPlan(
                entity="account",
                field="account_id",
                prefix="account",
                windows=velocity,
                aggs=("count", "sum", "mean", "std"),
                zscore_window=_w(30 * DAY_MS, "30d"),
                recency=True,
                novelty_fields=("device_id", "country"),
            ),
            EntityPlan(
                entity="card", field="card_id", prefix="card", windows=velocity, recency=True
            ),
            EntityPlan(
                entity="terminal",
                field="terminal_id",
                prefix="terminal",
                windows=velocity,
                delay_ms=7 * DAY_MS,
                delayed_windows=(_w(DAY_MS, "1d"), _w(7 * DAY_MS, "7d"), _w(30 * DAY_MS, "30d")),
            ),
            EntityPlan(entity="merchant", field="merchant_id", prefix="merchant", windows=short),
            EntityPlan(entity="device", field="device_id", prefix="device", windows=velocity),
            EntityPlan(entity="ip", field="ip", prefix="ip", windows=short),
        ),
    )


def handbook_feature_set() -> FeatureSet:
    """The 15 baseline features of the public fraud-detection handbook, with its column names."""
    days = (
        _w(DAY_MS, "1DAY_WINDOW"),
        _w(7 * DAY_MS, "7DAY_WINDOW"),
        _w(30 * DAY_MS, "30DAY_WINDOW"),
    )
    return FeatureSet(
        name="handbook",
        version=1,
        plans=(
            EntityPlan(
                entity="customer",
                field="account_id",
                prefix="CUSTOMER_ID",
                windows=days,
                aggs=("count", "mean"),
            ),
            EntityPlan(
                entity="terminal",
                field="terminal_id",
                prefix="TERMINAL_ID",
                delay_ms=7 * DAY_MS,
                delayed_windows=days,
            ),
        ),
        amount_feature="TX_AMOUNT",
        weekend_feature="TX_DURING_WEEKEND",
        night_feature="TX_DURING_NIGHT",
        agg_names=(
            ("count", "NB_TX"),
            ("mean", "AVG_AMOUNT"),
            ("delayed_count", "NB_TX"),
            ("risk", "RISK"),
        ),
    )


_PRESETS = {"default": default_feature_set, "handbook": handbook_feature_set}


def get_feature_set(name: str) -> FeatureSet:
    """Look up a preset feature set by name."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown feature set {name!r}; choose from {sorted(_PRESETS)}") from None
