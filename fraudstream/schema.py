"""Event schema v1: validation of raw Kafka payloads into transactions and labels.

Validation is total: :func:`parse_transaction` and :func:`parse_label` never raise on data. A bad
payload comes back as a :class:`Rejected` carrying a short machine-readable reason; the flow turns
it into a dead-letter record with the original bytes and source coordinates.

Transaction (topic ``transactions``, keyed by ``account_id``)
    required: ``tx_id`` (str), ``event_time_ms`` (int, epoch ms UTC), ``account_id`` (str),
    ``amount`` (number, finite, ``0`` or at least ``Limits.min_positive_amount``, not ``-0.0``);
    optional: ``schema_version`` (1), ``card_id``, ``terminal_id``, ``merchant_id``, ``mcc``,
    ``currency``, ``country``, ``device_id``, ``ip``, ``channel`` (str or null; an empty string
    counts as missing). Unknown fields are ignored.

Label (topic ``labels``)
    ``tx_id`` (str), ``label`` (0 or 1), ``label_time_ms`` (int), optional ``source`` (str).

Identifiers and strings are 1-256 characters without control characters (``U+0000``-``U+001F``,
``U+007F``). Times must lie within ``[now - max_past_ms, now + max_future_ms]``, where *now* is the
Kafka record's timestamp when it has one (so that validation is a function of the record, not of
when it is read) and the wall clock otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, TypedDict

import orjson

__all__ = [
    "DECISION_SCHEMA_VERSION",
    "OPTIONAL_FIELDS",
    "DecisionRecord",
    "Label",
    "Limits",
    "Rejected",
    "Transaction",
    "parse_label",
    "parse_transaction",
    "validate_label",
    "validate_transaction",
]

OPTIONAL_FIELDS = (
    "card_id",
    "terminal_id",
    "merchant_id",
    "mcc",
    "currency",
    "country",
    "device_id",
    "ip",
    "channel",
)

_MAX_ID_LEN = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Bounds beyond which an input is rejected rather than processed."""

    max_bytes: int = 64 * 1024
    max_past_ms: int = 10 * 365 * 86_400_000
    max_future_ms: int = 86_400_000
    max_amount: float = 1e12
    min_positive_amount: float = 1e-6

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_past_ms <= 0 or self.max_future_ms < 0:
            raise ValueError(f"limits must be positive: {self!r}")
        if not 0 < self.min_positive_amount < self.max_amount:
            raise ValueError(f"need 0 < min_positive_amount < max_amount: {self!r}")


@dataclass(slots=True)
class Transaction:
    """A validated transaction. Optional fields are ``None`` when absent."""

    tx_id: str
    event_time_ms: int
    account_id: str
    amount: float
    card_id: str | None = None
    terminal_id: str | None = None
    merchant_id: str | None = None
    mcc: str | None = None
    currency: str | None = None
    country: str | None = None
    device_id: str | None = None
    ip: str | None = None
    channel: str | None = None

    def get(self, field: str) -> str | None:
        """Return an optional (string) field by name."""
        value: str | None = getattr(self, field)
        return value


# validate_transaction passes the optional fields positionally, in this order.
assert tuple(f.name for f in fields(Transaction))[4:] == OPTIONAL_FIELDS


@dataclass(frozen=True, slots=True)
class Label:
    """A validated (possibly late, possibly repeated) fraud label for one transaction."""

    tx_id: str
    label: int
    label_time_ms: int
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a payload was refused; ``reason`` is a short code such as ``missing_field:amount``."""

    reason: str
    detail: str = ""


def _is_int(value: object) -> bool:
    return type(value) is int


def _id(obj: dict[str, object], name: str) -> str | Rejected:
    value = obj.get(name)
    if value is None:
        return Rejected(f"missing_field:{name}")
    if type(value) is not str:
        return Rejected(f"bad_type:{name}", f"expected string, got {type(value).__name__}")
    if not value or len(value) > _MAX_ID_LEN:
        return Rejected(f"bad_value:{name}", f"length {len(value)}")
    if _CONTROL.search(value):
        return Rejected(f"bad_value:{name}", "control character")
    return value


def _loads(raw: bytes | None, limits: Limits) -> dict[str, object] | Rejected:
    if raw is None:
        return Rejected("empty_payload")
    if len(raw) > limits.max_bytes:
        return Rejected("oversized", f"{len(raw)} bytes > {limits.max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("invalid_json", str(exc)[:200])
    if type(obj) is not dict:
        return Rejected("not_an_object", type(obj).__name__)
    return obj


def parse_transaction(raw: bytes | None, *, now_ms: int, limits: Limits) -> Transaction | Rejected:
    """Validate one raw payload; ``now_ms`` bounds absurd timestamps (the clock is injected)."""
    obj = _loads(raw, limits)
    if isinstance(obj, Rejected):
        return obj
    return validate_transaction(obj, now_ms=now_ms, limits=limits)


def validate_transaction(
    obj: dict[str, object], *, now_ms: int, limits: Limits
) -> Transaction | Rejected:
    """Validate an already decoded JSON object (replays of JSONL, Parquet or Kafka records)."""
    version = obj.get("schema_version", 1)
    if version != 1 or not _is_int(version):
        return Rejected("unsupported_schema_version", repr(version)[:40])
    tx_id = _id(obj, "tx_id")
    if isinstance(tx_id, Rejected):
        return tx_id
    account_id = _id(obj, "account_id")
    if isinstance(account_id, Rejected):
        return account_id
    t = obj.get("event_time_ms")
    if t is None:
        return Rejected("missing_field:event_time_ms")
    if not _is_int(t):
        return Rejected("bad_type:event_time_ms", f"expected int, got {type(t).__name__}")
    assert isinstance(t, int)
    if t < now_ms - limits.max_past_ms or t > now_ms + limits.max_future_ms:
        return Rejected("event_time_out_of_range", f"{t} vs now {now_ms}")
    amount = obj.get("amount")
    if amount is None:
        return Rejected("missing_field:amount")
    if type(amount) is not float and not _is_int(amount):
        return Rejected("bad_type:amount", f"expected number, got {type(amount).__name__}")
    assert isinstance(amount, int | float)
    amount = float(amount)
    if not math.isfinite(amount):
        return Rejected("non_finite:amount")
    if amount < 0 or math.copysign(1.0, amount) < 0:
        return Rejected("negative_amount", repr(amount))
    if amount > limits.max_amount or 0 < amount < limits.min_positive_amount:
        return Rejected("amount_out_of_range", repr(amount))
    optional: list[Any] = [obj.get(name) for name in OPTIONAL_FIELDS]
    for i, value in enumerate(optional):
        if value is None or (
            type(value) is str and 0 < len(value) <= _MAX_ID_LEN and not _CONTROL.search(value)
        ):
            continue
        name = OPTIONAL_FIELDS[i]
        if value == "":
            optional[i] = None  # an empty optional field is an absent one
        elif type(value) is not str:
            return Rejected(f"bad_type:{name}", f"expected string, got {type(value).__name__}")
        elif len(value) > _MAX_ID_LEN:
            return Rejected(f"bad_value:{name}", f"length {len(value)}")
        else:
            return Rejected(f"bad_value:{name}", "control character")
    return Transaction(tx_id, t, account_id, amount, *optional)


def parse_label(raw: bytes | None, *, now_ms: int, limits: Limits) -> Label | Rejected:
    """Validate one raw label payload; ``now_ms`` bounds its time as for transactions."""
    obj = _loads(raw, limits)
    if isinstance(obj, Rejected):
        return obj
    return validate_label(obj, now_ms=now_ms, limits=limits)


def validate_label(obj: dict[str, object], *, now_ms: int, limits: Limits) -> Label | Rejected:
    """Validate an already decoded JSON label object."""
    tx_id = _id(obj, "tx_id")
    if isinstance(tx_id, Rejected):
        return tx_id
    label = obj.get("label")
    if label is None:
        return Rejected("missing_field:label")
    if not _is_int(label) or label not in (0, 1):
        return Rejected("bad_value:label", repr(label)[:40])
    t = obj.get("label_time_ms")
    if t is None:
        return Rejected("missing_field:label_time_ms")
    if not _is_int(t):
        return Rejected("bad_type:label_time_ms")
    assert isinstance(t, int)
    if t < now_ms - limits.max_past_ms or t > now_ms + limits.max_future_ms:
        return Rejected("label_time_out_of_range", f"{t} vs now {now_ms}")
    source = obj.get("source")
    if source is not None and type(source) is not str:
        return Rejected("bad_type:source")
    if isinstance(source, str) and (len(source) > _MAX_ID_LEN or _CONTROL.search(source)):
        return Rejected("bad_value:source")
    assert isinstance(label, int) and isinstance(t, int)
    return Label(tx_id, label, t, source if isinstance(source, str) else None)


# --- output: the decision log (topic ``decisions``, keyed by tx_id) -----------------------

DECISION_SCHEMA_VERSION = 2


class SourceCoordinates(TypedDict):
    topic: str
    partition: int
    offset: int


class ModelScore(TypedDict):
    version: str
    score: float


class DecisionRecord(TypedDict):
    """One decision, as the sidecar writes it and replays, training sets and backtests read it.

    ``features`` are the values the models saw, in ``feature_set``'s order; ``decided_at_ms`` is
    the wall clock of the decision (an exact re-delivery of a transaction re-emits the original
    record, this field included); ``ingested_at_ms`` is the input record's Kafka timestamp.
    """

    schema_version: int
    tx_id: str
    event_time_ms: int
    decided_at_ms: int
    ingested_at_ms: int
    source: SourceCoordinates
    feature_set: dict[str, Any]
    features: list[float]
    champion: ModelScore
    action: str
    thresholds: dict[str, float]


# --- output: drift and model alerts (topic ``alerts``, keyed by ``id``) ---------------------

ALERT_SCHEMA_VERSION = 1

#: What an alert is about (``kind``).
ALERT_KINDS = (
    "score_drift",
    "feature_drift",
    "performance",
    "challenger_better",
    "canary_halt",
    "model_failure",
)
#: How urgent it is (``severity``): ``info`` is for dashboards and retraining decisions,
#: ``warning`` for a look within the working day, ``critical`` pages the on-call engineer.
ALERT_SEVERITIES = ("info", "warning", "critical")
#: Where its episode stands (``state``).
ALERT_STATES = ("firing", "resolved")


class AlertWindow(TypedDict, total=False):
    """The events a statistic was computed over: a count (``events`` for transactions,
    ``labels`` for labelled transactions) and/or the event-time range ``[from_ms, to_ms]``
    (epoch ms UTC, both inclusive) where the detector knows it."""

    events: int
    labels: int
    from_ms: int
    to_ms: int


class AlertModels(TypedDict):
    """The model versions the alert concerns (``challenger`` is None when none runs)."""

    champion: str
    challenger: str | None


class _AlertOptional(TypedDict, total=False):
    feature: str
    detail: str


class AlertRecord(_AlertOptional):
    """One alert, as the decision step publishes it to ``alerts`` and people and tools read it.

    An alert belongs to an *episode*: a detector fires once when its statistic crosses the
    firing threshold (``state="firing"``) and once when it clears (``state="resolved"``, below a
    lower threshold, or after a quiet period for change detectors); nothing in between. Both
    records of an episode carry the same ``id``.

    ``schema_version``
        :data:`ALERT_SCHEMA_VERSION`; readers refuse or skip versions they do not know.
    ``id``
        Stable per episode: ``detector/champion version[/challenger version][/feature]/
        first_event_ms``. Use it as the Kafka key and to pair a resolution with its firing.
    ``kind``
        One of :data:`ALERT_KINDS`: ``score_drift`` (the champion's score distribution moved),
        ``feature_drift`` (one input feature moved), ``performance`` (the champion's error rate
        on matured labels rose), ``challenger_better`` (the challenger outranks the champion: a
        retraining hint), ``canary_halt`` and ``model_failure`` (written by the model rollout).
    ``severity``
        One of :data:`ALERT_SEVERITIES`; fixed per detector, the same for both records of an
        episode.
    ``detector``
        The detector's name, e.g. ``score_psi``, ``score_adwin``, ``feature_psi``,
        ``error_adwin``, ``auc_gap``.
    ``statistic``, ``threshold``
        The value that crossed and the bound it crossed (a firing record: the firing threshold;
        a resolved one: the resolving threshold). For a change detector's firing, ``statistic``
        is the level after the change (mean score, error rate) and ``threshold`` the level
        before it; for its resolution, the number of events (or labels) without a change and
        the configured quiet period. Always finite.
    ``window``
        :class:`AlertWindow`: the events ``statistic`` was computed over.
    ``models``
        :class:`AlertModels`.
    ``first_event_ms``, ``last_event_ms``
        Event times (epoch ms UTC): where the episode began (part of ``id``) and the last event
        this record accounts for. For label-based detectors these are the labelled
        transactions' event times, days before the labels themselves.
    ``state``
        ``firing`` or ``resolved``.
    ``runbook``
        What to do: a path with an anchor, e.g. ``docs/runbook.md#score-drift``.
    ``feature``
        Only for ``feature_drift``: the feature's name.
    ``detail``
        Optional: one human-readable sentence with context (levels, direction, rolling metrics).
    """

    schema_version: int
    id: str
    kind: str
    severity: str
    detector: str
    statistic: float
    threshold: float
    window: AlertWindow
    models: AlertModels
    first_event_ms: int
    last_event_ms: int
    state: str
    runbook: str


# Appended here rather than in the list at the top, which other changes edit.
__all__ += [
    "ALERT_KINDS",
    "ALERT_SCHEMA_VERSION",
    "ALERT_SEVERITIES",
    "ALERT_STATES",
    "AlertModels",
    "AlertRecord",
    "AlertWindow",
]
