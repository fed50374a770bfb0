"""The scoring dataflow: Kafka -> ordered input -> ingest -> entity state -> decide -> Kafka.

Wiring only; every computation lives in :mod:`fraudstream.reader`, :mod:`fraudstream.state` and
:mod:`fraudstream.models`.

::

    transactions ┐                           ┌─ dead letters (invalid records, conflicts) ───┐
    labels ──────┴─ input ─ ingest (1 key) ──┼─ entity ops ─ entities (P keys) ─┐            │
                                             └─ tx, dup, learn items ───────────┴─ decide ───┴─ out

* ``input``: one source partition reads every partition of both topics and releases records in
  the deterministic order of :mod:`fraudstream.order`.
* ``ingest`` (one key): maintenance clock, de-duplication, labels; splits each new transaction
  into per-entity ops (:mod:`fraudstream.state.ingest`).
* ``entities`` (keys ``e<p>``, p = crc32(entity id) mod P, one RocksDB store each): features and
  history updates (:mod:`fraudstream.state.entities`).
* ``decide`` (one key): joins parts in input order, scores in batches, writes decisions
  (:mod:`fraudstream.models.decide`).

Order: each step receives its ordered items from exactly one upstream worker (Timely delivers
a worker's items to another in the order sent, epoch by epoch), so ``ingest`` and every entity
partition apply them in input order whatever the number of workers and processes; ``decide``
restores the order of parts arriving from several entity workers with its queue.

Every stateful step keeps its store in an :class:`~fraudstream.state.base.EpochStore` whose
snapshot is the Bytewax epoch: a resume rolls each store back to the snapshot and the input is
re-read from there (docs/design.md). A record that fails in any step goes to the dead-letter
topic with its reason; no record stops the flow.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from fraudstream.errors import ConfigError
from fraudstream.flows.sink import KafkaOut, OutMessage, dead_letter
from fraudstream.flows.source import OrderedSource, Polled
from fraudstream.health import HEALTH
from fraudstream.kafka import KafkaSettings
from fraudstream.metrics import (
    ALERTS,
    DECISIONS,
    DRIFT,
    EVENTS,
    INPROCESS,
    LABELS,
    LAST_BATCH,
    LATENCY,
    MODELS,
    SCORE_BATCH,
    SCORES,
    STATE,
    STEP_ERRORS,
)
from fraudstream.models.drift import DriftConfig
from fraudstream.models.serving import CanaryPolicy
from fraudstream.models.step import DecisionStep, StepConfig
from fraudstream.reader import K_DLQ, K_TX, OffsetPolicy, ReaderConfig, Received
from fraudstream.schema import Limits, Rejected
from fraudstream.state.base import EpochStore
from fraudstream.state.clock import DEFAULT_STEP_MS
from fraudstream.state.decisions import DECISIONS_FORMAT
from fraudstream.state.entities import ENTITY_FORMAT, EntityPartition
from fraudstream.state.features import DAY_MS, FeatureSet
from fraudstream.state.ingest import EV_CONFLICT, EV_DUPLICATE, EV_LEARN, EV_TX, Ingest
from fraudstream.state.ops import OpBatch, base_matrix, by_partition
from fraudstream.state.rocksdb import RocksKV
from fraudstream.state.txindex import INDEX_FORMAT

__all__ = ["FlowConfig", "Topics", "build_flow", "close_stores"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Topics:
    transactions: str = "transactions"
    labels: str = "labels"
    decisions: str = "decisions"
    transactions_dlq: str = "transactions.dlq"
    labels_dlq: str = "labels.dlq"
    alerts: str = "alerts"


@dataclass(frozen=True, kw_only=True)
class FlowConfig:
    """Everything the dataflow needs; validated at construction."""

    kafka: KafkaSettings
    feature_set: FeatureSet
    model_registry: Path
    model_version: str | None = None
    state_dir: Path
    topics: Topics = field(default_factory=Topics)
    partitions: int = 16
    tail: bool = True
    batch_size: int = 1000
    limits: Limits = field(default_factory=Limits)
    keep_epochs: int = 8
    fetch_wait_ms: int = 100
    consumer_overrides: dict[str, str] = field(default_factory=dict)  # librdkafka, merged last
    # A caught-up partition holds the merge back at most this long (see fraudstream.reader).
    idle_grace_ms: int = 200
    offset_policy: OffsetPolicy = "fail"
    max_buffered: int = 20_000
    max_dead_letter_bytes: int = 256 * 1024
    # Idle entities (older than the horizon plus lateness) are deleted once per this much
    # maintenance-clock time; a sweep never changes a feature value.
    sweep_every_ms: int = 7 * DAY_MS
    label_hold_ms: int = 7 * DAY_MS
    # Labels count for online learning and monitoring up to this long after their transaction:
    # de-duplication, label matching and decision-time features are kept as long.
    label_maturity_ms: int = 60 * DAY_MS
    canary_share: float = 0.05
    model_poll_s: float = 1.0
    # "auto": day-long periods, calendar flags not alerted on (see drift_config); None: off
    drift: DriftConfig | Literal["auto"] | None = "auto"
    canary_policy: CanaryPolicy = field(default_factory=CanaryPolicy)
    clock_step_ms: int = DEFAULT_STEP_MS
    # Changed histories are written to a partition's store at most this long after the batch
    # that changed them (and always before a snapshot); 0 writes after every batch.
    state_write_behind_ms: int = 50
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000, repr=False)

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.batch_size < 1:
            raise ValueError("partitions and batch_size must be >= 1")
        if self.state_write_behind_ms < 0:
            raise ValueError("state_write_behind_ms must be >= 0")
        if self.max_dead_letter_bytes < 1024:
            raise ValueError("max_dead_letter_bytes must be >= 1024")

    def retention_ms(self) -> int:
        """How long transactions are remembered (index, decisions): the horizon or maturity."""
        return max(self.feature_set.horizon_ms(), self.label_maturity_ms)

    def drift_config(self) -> DriftConfig | None:
        """The drift detectors' settings; ``"auto"``: PSI periods of at least a day of event time
        (and 2,000 events), so the daily cycle does not read as drift, and the feature set's
        calendar flags measured but not alerted on (they follow the week by design)."""
        if self.drift != "auto":
            return self.drift
        fs = self.feature_set
        calendar = tuple(n for n in (fs.weekend_feature, fs.night_feature) if n)
        return DriftConfig(period_ms=DAY_MS, ignore_features=calendar)

    def step_config(self) -> StepConfig:
        return StepConfig(
            registry=self.model_registry,
            pinned_version=self.model_version,
            canary_share=self.canary_share,
            poll_s=self.model_poll_s,
            decisions_ttl_ms=self.retention_ms(),
            drift=self.drift_config(),
            canary=self.canary_policy,
        )

    def reader_config(self) -> ReaderConfig:
        return ReaderConfig(
            consumer=self.kafka.confluent_config(),
            transactions_topic=self.topics.transactions,
            labels_topic=self.topics.labels,
            tail=self.tail,
            batch_size=self.batch_size,
            idle_grace_ms=self.idle_grace_ms,
            label_delay_ms=self.feature_set.label_delay_ms,
            offset_policy=self.offset_policy,
            max_buffered=self.max_buffered,
            limits=self.limits,
            fetch_wait_ms=self.fetch_wait_ms,
            consumer_overrides=self.consumer_overrides,
            clock_ms=self.clock_ms,
        )


# Stores stay open for the life of the process; reopening a path closes the old handle first
# (a resumed run in the same process, as in tests, must not trip over RocksDB's lock).
_OPEN_STORES: dict[str, RocksKV] = {}


def _open_store(cfg: FlowConfig, name: str, resume: int | None, fmt: bytes) -> EpochStore:
    path = cfg.state_dir / name
    old = _OPEN_STORES.pop(str(path), None)
    if old is not None:
        old.close()
    kv = _OPEN_STORES[str(path)] = RocksKV(path)
    return EpochStore(kv, resume_epoch=resume, keep_epochs=cfg.keep_epochs, format_tag=fmt)


_last_size_report = [0.0]


def report_store_sizes() -> None:
    """Set the state size gauges from RocksDB's estimates, summed per family (once a second at
    most per process: every step's snapshot calls it)."""
    now = time.monotonic()
    if now - _last_size_report[0] < 1.0:
        return
    _last_size_report[0] = now
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, kv in list(_OPEN_STORES.items()):
        family = Path(path).parent.name if Path(path).parent.name == "entities" else Path(path).name
        st = kv.stats()
        totals[family][0] += st["keys"]
        totals[family][1] += st["sst_bytes"] + st["memtable_bytes"]
    for family, (keys, size) in totals.items():
        STATE.keys.labels(family).set(keys)
        STATE.disk_bytes.labels(family).set(size)


def close_stores() -> None:
    """Close every state store this process opened (after the flow has stopped)."""
    while _OPEN_STORES:
        _, kv = _OPEN_STORES.popitem()
        kv.close()


def _dead(cfg: FlowConfig, rec: Received, reason: str, detail: str) -> OutMessage:
    topic = (
        cfg.topics.transactions_dlq
        if rec.topic == cfg.topics.transactions
        else cfg.topics.labels_dlq
    )
    return dead_letter(
        topic,
        key=rec.key,
        value=rec.raw,
        reason=reason,
        detail=detail,
        source=(rec.topic, rec.partition, rec.offset),
        max_bytes=cfg.max_dead_letter_bytes,
    )


class _IngestLogic(StatefulBatchLogic):
    """Single key: every record passes here in order (see fraudstream.state.ingest)."""

    def __init__(self, cfg: FlowConfig, resume: int | None, probe: Any) -> None:
        self.cfg = cfg
        self.store = _open_store(cfg, "ingest", resume, INDEX_FORMAT)
        self.ingest = Ingest(
            cfg.feature_set,
            self.store,
            ttl_ms=cfg.retention_ms(),
            label_hold_ms=cfg.label_hold_ms,
            clock_step_ms=cfg.clock_step_ms,
        )
        self.probe = probe
        self._stats = (0, 0, 0)

    def on_batch(self, values: list[Polled]) -> tuple[list[Any], bool]:
        cfg, fs = self.cfg, self.cfg.feature_set
        started = time.time()
        LAST_BATCH.set(started)
        out: list[Any] = []
        recs: list[Received] = []
        polled: list[float] = []  # per record: when its poll returned
        for polled_s, batch in values:
            if self.probe is not None:
                self.probe(batch)
            for rec in batch:
                if rec.kind == K_DLQ:
                    assert isinstance(rec.value, Rejected)
                    out.append(("x", _dead(cfg, rec, rec.value.reason, rec.value.detail)))
                else:
                    recs.append(rec)
                    polled.append(polled_s)
        n_tx = sum(1 for r in recs if r.kind == K_TX)
        EVENTS.labels(cfg.topics.transactions).inc(n_tx)
        EVENTS.labels(cfg.topics.labels).inc(len(recs) - n_tx)
        result = self.ingest.process([r.value for r in recs])
        groups = by_partition(result.batch, cfg.partitions)
        txs = result.txs
        base = base_matrix(
            fs,
            np.fromiter((tx.event_time_ms for tx in txs), dtype=np.int64, count=len(txs)),
            np.fromiter((tx.amount for tx in txs), dtype=np.float64, count=len(txs)),
        ).tolist()
        next_tx = 0
        items: list[Any] = []
        # (tx_id, polled, received) of the new transactions
        timing: list[tuple[str, float, float]] = []
        for ev in result.events:
            kind = ev[0]
            if kind == EV_TX:
                rec = recs[ev[1]]
                tx = rec.value
                meta = {
                    "event_time_ms": tx.event_time_ms,
                    "source": {
                        "topic": rec.topic,
                        "partition": rec.partition,
                        "offset": rec.offset,
                    },
                    "ingest_ms": rec.timestamp_ms,
                    "key": rec.key,
                    "raw": rec.raw,
                }
                items.append(("tx", tx.tx_id, meta, base[next_tx], ev[2], ev[3]))
                timing.append((tx.tx_id, polled[ev[1]], rec.received_s))
                next_tx += 1
            elif kind == EV_DUPLICATE:
                rec = recs[ev[1]]
                meta = {
                    "source": {
                        "topic": rec.topic,
                        "partition": rec.partition,
                        "offset": rec.offset,
                    },
                    "key": rec.key,
                    "raw": rec.raw,
                }
                items.append(("dup", rec.value.tx_id, meta, ev[2]))
            elif kind == EV_CONFLICT:
                rec = recs[ev[1]]
                detail = "tx_id seen before with other content"
                out.append(("x", _dead(cfg, rec, "duplicate_conflict", detail)))
            elif kind == EV_LEARN:
                items.append(("learn", *ev[1:]))
        for p, ops in groups:
            out.append(("e", (f"e{p}", (p, ops))))
        if items:
            out.append(("d", ("decide", ("items", items, (started, timing)))))
        self._report()
        return out, self.RETAIN

    def _report(self) -> None:
        s = self.ingest.stats
        now = (s.labels_matched, s.labels_noop, s.labels_expired)
        for name, a, b in zip(("matched", "noop", "expired"), now, self._stats, strict=True):
            if a > b:
                LABELS.labels(name).inc(a - b)
        self._stats = now

    def snapshot(self) -> int:
        started = time.perf_counter()
        epoch = self.store.commit_epoch()
        STATE.snapshot_seconds.labels("ingest").observe(time.perf_counter() - started)
        report_store_sizes()  # this process's stores, once per epoch
        return epoch


class _EntityLogic(StatefulBatchLogic):
    """A state partition: its store opened on the first batch (the builder is not told its key)."""

    def __init__(self, cfg: FlowConfig, resume: int | None) -> None:
        self.cfg = cfg
        self.resume = resume
        self.part: EntityPartition | None = None
        self._hits = self._misses = 0
        self._flush_at = 0.0  # time.monotonic() from which the next batch writes its changes

    def on_batch(self, values: list[tuple[int, OpBatch]]) -> tuple[list[Any], bool]:
        part = self.part
        if part is None:
            store = _open_store(
                self.cfg, f"entities/p{values[0][0]:04d}", self.resume, ENTITY_FORMAT
            )
            # Encoded cache: measured 16-22% faster in the flow than keeping decoded histories
            # (fewer, shorter GC passes over a long-lived heap).
            part = self.part = EntityPartition(
                self.cfg.feature_set,
                store,
                sweep_every_ms=self.cfg.sweep_every_ms,
                keep_decoded=False,
            )
        batch = OpBatch.concat([ops for _, ops in values])
        result = part.process(batch)
        # Write behind by at most state_write_behind_ms: flushing only at snapshots wrote an
        # epoch's worth of entities at once and showed as a latency spike every epoch; writing
        # after every batch cost one RocksDB write (WAL append, memtable inserts) per partition
        # and batch, ~20% of the state stage at light traffic's small batches.
        now = time.monotonic()
        if now >= self._flush_at:
            part.flush()
            self._flush_at = now + self.cfg.state_write_behind_ms / 1000.0
        errors = [(o[3], reason) for o, reason in result.errors if o[0] == 0]
        if result.errors:
            STEP_ERRORS.labels("entities").inc(len(result.errors))
            for o, reason in result.errors:
                log.error("entity op failed (%s): %s", o[:4], reason)
        ids = batch.tx_id
        blocks = [(plan, [ids[i] for i in pos.tolist()], vals) for plan, pos, vals in result.blocks]
        return [("blocks", blocks, errors)], self.RETAIN

    def snapshot(self) -> int | None:
        if self.part is None:
            return self.resume
        started = time.perf_counter()
        self.part.flush()
        epoch = self.part.store.commit_epoch()
        STATE.snapshot_seconds.labels("entities").observe(time.perf_counter() - started)
        report_store_sizes()
        stats = self.part.stats
        STATE.cache.labels("hit").inc(stats.cache_hits - self._hits)
        STATE.cache.labels("miss").inc(stats.cache_misses - self._misses)
        self._hits, self._misses = stats.cache_hits, stats.cache_misses
        return epoch


def _parts(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """An entity partition's feature blocks as the decision step's parts (one per transaction
    and plan)."""
    _, blocks, errors = value
    parts: list[tuple[str, int, list[float]]] = []
    for plan, tx_ids, vals in blocks:
        parts += zip(tx_ids, [plan] * len(tx_ids), vals.tolist(), strict=True)
    return ("parts", parts, errors)


class _DecideLogic(StatefulBatchLogic):
    """Single key: the decision step (fraudstream.models.step) between items and messages."""

    def __init__(self, cfg: FlowConfig, resume: dict[str, Any] | None) -> None:
        self.cfg = cfg
        resume = resume or {}
        self.store = _open_store(cfg, "decisions", resume.get("epoch"), DECISIONS_FORMAT)
        self.step = DecisionStep(
            cfg.feature_set,
            self.store,
            cfg.step_config(),
            clock_ms=cfg.clock_ms,
            queue=resume.get("queue", ()),
        )
        self._models: set[tuple[str, str, str]] = set()
        # (polled, ingest started, received) per transaction not decided yet, for INPROCESS;
        # not kept in snapshots (a resumed queue's transactions are not timed)
        self._timing: dict[str, tuple[float, float, float]] = {}

    def _unwrap(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        """Ingest items lose their timing (kept here), entity blocks become the step's parts."""
        if value[0] == "blocks":
            return _parts(value)
        if value[0] == "items" and len(value) == 3:
            ingest_s, timing = value[2]
            self._timing.update((tx, (polled, ingest_s, got)) for tx, polled, got in timing)
            return value[:2]
        return value

    def on_batch(self, values: list[tuple[Any, ...]]) -> tuple[list[Any], bool]:
        cfg = self.cfg
        started = time.time()
        out = self.step.on_items([self._unwrap(v) for v in values])
        decider = self.step.decider
        HEALTH.progress("decide", pending=decider.pending(), advanced=bool(out.decisions))
        topic = cfg.topics.decisions
        msgs: list[Any] = []
        actions: dict[tuple[str, str], int] = defaultdict(int)
        latencies = []
        now = cfg.clock_ms()
        decided = time.time()
        timing = self._timing
        stages: list[tuple[float, float, float]] = []  # _timing's of the timed decisions
        dlq = cfg.topics.transactions_dlq
        for _, tx_id, record, action, ingest_ms, stage in out.decisions:
            t = timing.pop(tx_id, None) if action is not None else None
            if t is None:
                msgs.append(OutMessage(topic, tx_id.encode(), record, (), dlq))
            else:
                stages.append(t)
                msgs.append(OutMessage(topic, tx_id.encode(), record, (), dlq, t[2], decided))
            if action is not None:
                actions[(action, stage)] += 1
                if ingest_ms > 0:
                    latencies.append(now - ingest_ms)
        if len(timing) > 2 * decider.pending() + 10_000:  # failed transactions' timings
            waiting = decider.waiting
            self._timing = {k: v for k, v in timing.items() if k in waiting}
        if stages:
            polled_s, ingest_s, received_s = np.asarray(stages).T
            INPROCESS.observe_many("merge", np.maximum(0.0, polled_s - received_s))
            INPROCESS.observe_many("queue", np.maximum(0.0, ingest_s - polled_s))
            INPROCESS.observe_many("state", np.maximum(0.0, started - ingest_s))
            INPROCESS.observe_many("scoring", np.full(len(stages), max(0.0, decided - started)))
        for _, meta, reason, detail in out.dead:
            STEP_ERRORS.labels("decide" if "decide" in reason else "entities").inc()
            src = meta["source"]
            msgs.append(
                dead_letter(
                    cfg.topics.transactions_dlq,
                    key=meta.get("key"),
                    value=meta.get("raw"),
                    reason=reason,
                    detail=detail,
                    source=(src["topic"], src["partition"], src["offset"]),
                    max_bytes=cfg.max_dead_letter_bytes,
                )
            )
        for alert in out.alerts:
            msgs.append(OutMessage(cfg.topics.alerts, alert["id"].encode(), orjson.dumps(alert)))
            ALERTS.labels(alert["kind"], alert["severity"], alert["state"]).inc()
            level = logging.WARNING if alert["state"] == "firing" else logging.INFO
            log.log(level, "alert %s %s: %s", alert["state"], alert["id"], alert.get("detail", ""))
        for change in out.changes:
            if change.kind == "failed":
                MODELS.failures.labels(change.version, change.stage).inc()
                log.error(
                    "model %s (%s) out of service: %s", change.version, change.stage, change.detail
                )
            else:
                log.info("models in service: %s", change.detail)
        for (action, stage), count in actions.items():
            DECISIONS.labels(action, stage).inc(count)
        if latencies:
            LATENCY.observe_many(np.maximum(0.0, np.asarray(latencies, dtype=np.float64) / 1000.0))
        self._report()
        return msgs, self.RETAIN

    def _report(self) -> None:
        decider = self.step.decider
        stats = decider.stats
        for rows in stats.batch_rows:
            SCORE_BATCH.observe(rows)
        for scorer in decider.scorers:
            scores = stats.scores.get(scorer.version)
            if scores is None or not len(scores):
                continue
            if scorer.online:
                SCORES["challenger"].observe_many(scores)
            elif scorer is decider.production:
                SCORES["champion"].observe_many(scores)
        for version, seconds in stats.seconds.items():
            MODELS.score_seconds.labels(version, stats.stages[version]).observe(seconds)
        if stats.learned:
            MODELS.learned.inc(stats.learned)
        if stats.learn_missing:
            MODELS.learn_missing.inc(stats.learn_missing)
        models = {(s.version, s.kind, s.stage) for s in decider.scorers}
        for gone in self._models - models:
            MODELS.info.labels(*gone).set(0)
        for now in models:
            MODELS.info.labels(*now).set(1)
        self._models = models
        monitor = self.step.monitor
        if monitor is not None:
            for name, value in monitor.statistics().items():
                DRIFT.labels(name).set(value)

    def snapshot(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.step.save()
        epoch = self.store.commit_epoch()
        STATE.snapshot_seconds.labels("decide").observe(time.perf_counter() - started)
        return {"epoch": epoch, "queue": self.step.decider.queue_items()}


def check_output_topics(cfg: FlowConfig, timeout_s: float = 10.0) -> None:
    """Refuse to start when an output topic is missing: records for it would be retried
    forever and stall the flow. The sidecar never creates topics (their partitioning and
    retention are the platform's choice)."""
    from confluent_kafka.admin import AdminClient

    t = cfg.topics
    wanted = [t.decisions, t.transactions_dlq, t.labels_dlq, t.alerts]
    conf: dict[str, Any] = {**cfg.kafka.confluent_config()}
    conf["logger"] = logging.getLogger("fraudstream.kafka.admin")
    admin = AdminClient(conf)
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except Exception as exc:
        raise ConfigError(f"cannot list the broker's topics: {exc}") from exc
    missing = [name for name in wanted if name not in meta.topics or meta.topics[name].error]
    if missing:
        raise ConfigError(f"output topics missing on the broker: {missing}; create them first")


def build_flow(cfg: FlowConfig, *, probe: Callable[[Any], None] | None = None) -> Dataflow:
    """Build the dataflow. ``probe`` (tests only) sees every input batch before ingest."""
    check_output_topics(cfg)
    flow = Dataflow("fraudstream")
    batches = op.input("input", flow, OrderedSource(cfg.reader_config()))
    keyed = op.map("to_ingest", batches, lambda polled: ("ingest", polled))
    ingested = op.stateful_batch("ingest", keyed, lambda s: _IngestLogic(cfg, s, probe))
    items = op.map("ingest_items", ingested, lambda kv: kv[1])
    is_entity = op.branch("is_entity_op", items, lambda v: v[0] == "e")
    parts = op.stateful_batch(
        "entities",
        op.map("entity_ops", is_entity.trues, lambda v: v[1]),
        lambda s: _EntityLogic(cfg, s),
    )
    is_decide = op.branch("is_decide_item", is_entity.falses, lambda v: v[0] == "d")
    decide_in = op.merge(
        "decide_in",
        op.map("to_decide", is_decide.trues, lambda v: v[1]),
        op.map("parts_to_decide", parts, lambda kv: ("decide", kv[1])),
    )
    decided = op.stateful_batch("decide", decide_in, lambda s: _DecideLogic(cfg, s))
    out = op.merge(
        "out",
        op.map("decisions", decided, lambda kv: ("out", kv[1])),
        op.map("dead_letters", is_decide.falses, lambda v: ("out", v[1])),
    )
    producer = {
        **cfg.kafka.confluent_config(producer=True),
        # The decision log is the event log: every write acknowledged by all in-sync replicas.
        "acks": "all",
        "linger.ms": "2",
    }
    op.output("kafka_out", out, KafkaOut(producer, max_dead_letter_bytes=cfg.max_dead_letter_bytes))
    return flow
