"""Ordered, validated input: the transactions and labels topics read as one deterministic stream.

:class:`OrderedReader` assigns every partition of both topics to one librdkafka consumer (no
consumer group: offsets live in the stream engine's snapshots), validates each record as it is
read, and releases records through a :class:`~fraudstream.order.Merger`, so every consumer of its
output sees the same sequence whatever the fetch timing. The live flow wraps it as a Bytewax
source (:mod:`fraudstream.flows.source`); replays of Kafka topics call it in a loop.

What it does about the broker, per partition:

* **caught up** (next offset at the high watermark of the last fetch): in a tailing run the
  partition's floor is raised to ``t - idle_grace_ms``, where ``t`` is the last time its broker was
  heard from (librdkafka's statistics, every 100 ms: with the 100 ms fetch wait a live broker
  answers at least that often). A quiet partition thus holds the others back by at most the grace
  period, and a network cut or broker outage freezes the floors (and holds them one more grace
  period after contact resumes) instead of letting them run ahead of records that producers could
  not deliver meanwhile. A record that reaches a caught-up partition more than the grace period
  after its timestamp is *late* behind that idle bound (``fraudstream_input_late_idle_records``);
  its position then depends on timing. One stamped before an earlier record of its own partition
  is late too, but placed by the log alone (both kinds: ``fraudstream_input_late_records``). A
  bounded run (``tail=False``) ends each partition at its end instead.
* **ahead** of the release watermark with a full buffer: paused (backpressure), resumed later.
* **offset beyond the log end** (broker lost its data, topic recreated) or before its start:
  ``offset_policy="fail"`` stops reading that partition, logs an error every 30 s and marks the
  sidecar unready (the flow stalls rather than silently skipping or re-reading data);
  ``"earliest"``/``"latest"`` seek there, log it and count it in
  ``fraudstream_input_offset_resets_total``.
* **topic missing** or partitions gone: logged every 30 s and unready until it comes back;
  partitions added later are picked up by a metadata refresh.

Validation uses the record's own timestamp as "now" (see :mod:`fraudstream.schema`). A record
timestamp more than ``idle_grace_ms`` ahead of the wall clock is capped there for ordering (a
producer with a broken clock must not stall the merge) and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from fraudstream.errors import ConfigError
from fraudstream.health import HEALTH
from fraudstream.metrics import INPUT
from fraudstream.order import Input, Merger
from fraudstream.schema import Label, Limits, Rejected, Transaction, parse_label, parse_transaction

__all__ = ["K_DLQ", "K_LABEL", "K_TX", "OrderedReader", "ReaderConfig", "Received"]

log = logging.getLogger(__name__)

K_TX = 0
K_LABEL = 1
K_DLQ = 2

OffsetPolicy = Literal["fail", "earliest", "latest"]
_RANK = {"labels": 0, "transactions": 1}
_LOG_EVERY_S = 30.0
_METADATA_EVERY_S = 10.0


class Received(NamedTuple):
    """One input record, validated: ``value`` is a Transaction, a Label or a Rejected."""

    kind: int
    value: Transaction | Label | Rejected
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    raw: bytes | None
    # time.time() when the client handed it to the reader: the order merge holds it from then
    # until every partition has passed it (fraudstream_inprocess_latency_seconds{stage="merge"})
    received_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ReaderConfig:
    """Where to read and how to order; validated at construction."""

    consumer: Mapping[str, str]  # librdkafka settings (bootstrap, security); secrets inside
    transactions_topic: str
    labels_topic: str
    tail: bool = True
    batch_size: int = 1000
    idle_grace_ms: int = 200
    label_delay_ms: int = 1000
    offset_policy: OffsetPolicy = "fail"
    max_buffered: int = 20_000
    limits: Limits = field(default_factory=Limits)
    fetch_wait_ms: int = 100
    consumer_overrides: Mapping[str, str] = field(default_factory=dict)
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_buffered < 1:
            raise ValueError("batch_size and max_buffered must be >= 1")
        if self.idle_grace_ms < 0 or self.label_delay_ms < 0:
            raise ValueError("idle_grace_ms and label_delay_ms must be >= 0")
        if self.offset_policy not in ("fail", "earliest", "latest"):
            raise ValueError(
                f"offset_policy must be fail, earliest or latest: {self.offset_policy}"
            )


class _Contact:
    """A broker's contact history, for idle floors (see ``OrderedReader._on_stats``)."""

    __slots__ = ("gap_since", "hold_at", "hold_until", "last_heard")

    def __init__(self) -> None:
        self.last_heard: int | None = None
        self.gap_since: int | None = None
        self.hold_at: int | None = None
        self.hold_until = 0

    def effective(self, now: int) -> int | None:
        if self.gap_since is not None:
            return self.gap_since
        if now < self.hold_until:
            return self.hold_at
        return self.last_heard


class OrderedReader:
    """See the module docstring. ``resume`` is a :meth:`snapshot` (``None``: from the start)."""

    def __init__(self, cfg: ReaderConfig, resume: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        resume = dict(resume or {})
        self.merger = Merger(resume=resume.get("inputs"), max_buffered=cfg.max_buffered)
        self._tps: list[TopicPartition] = []
        self._kinds: list[str] = []
        self._blocked: dict[int, str] = {}
        self._paused: set[int] = set()
        self._finished_eof = False
        self._last_log: dict[Any, float] = {}
        self._alive: dict[tuple[str, int], int] = {}  # last time each partition's broker answered
        self._contact: dict[int, _Contact] = {}
        self._lag = 0  # records on the broker not read yet (partitions not paused)
        self._late_idle = 0  # merger.late_idle when the last late record was logged
        self._next_metadata = 0.0
        conf = {
            **cfg.consumer,
            # Offsets live in the stream engine's snapshots: the group is never joined.
            "group.id": "fraudstream-ordered-reader",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "auto.offset.reset": "error",
            "enable.partition.eof": "true",
            "fetch.wait.max.ms": str(cfg.fetch_wait_ms),
            # Smaller per-partition fetches keep partitions' progress closer together, so the
            # merge releases records in steadier steps (one fetch answers for every partition).
            "max.partition.fetch.bytes": str(256 * 1024),
            **cfg.consumer_overrides,
            "logger": logging.getLogger("fraudstream.kafka.consumer"),
            "statistics.interval.ms": "100",
            "stats_cb": self._on_stats,
        }
        self.consumer = Consumer(conf)
        self._topics = {cfg.transactions_topic: "transactions", cfg.labels_topic: "labels"}
        self._discover(initial=True)

    # ----------------------------------------------------------------------------- topology
    def _log(self, key: Any, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= _LOG_EVERY_S:
            self._last_log[key] = now
            log.log(level, msg, *args)

    def _discover(self, *, initial: bool = False) -> None:
        """Add partitions not known yet; report missing topics and partitions."""
        self._next_metadata = time.monotonic() + _METADATA_EVERY_S
        new: list[TopicPartition] = []
        for topic, kind in self._topics.items():
            try:
                meta = self.consumer.list_topics(topic, timeout=5)
                tmeta = meta.topics.get(topic)
                error = None if tmeta is None else tmeta.error
                parts = sorted(tmeta.partitions) if tmeta is not None and not error else []
            except Exception as exc:  # broker unreachable: retried later
                error, parts = exc, []
            known = {tp.partition for tp in self._tps if tp.topic == topic}
            if error is not None or not parts:
                if not self.cfg.tail:
                    raise ConfigError(f"topic {topic!r} is not available: {error}")
                HEALTH.set(f"input:{topic}", False, f"topic missing or unreadable: {error}")
                self._log(
                    ("missing", topic), logging.ERROR, "topic %r unavailable: %s", topic, error
                )
                continue
            gone = known - set(parts)
            if gone:
                HEALTH.set(f"input:{topic}", False, f"partitions {sorted(gone)} disappeared")
                self._log(
                    ("gone", topic),
                    logging.ERROR,
                    "topic %r lost partitions %s (recreated?)",
                    topic,
                    sorted(gone),
                )
            else:
                HEALTH.set(f"input:{topic}", True, "")
            spec_shift = self.cfg.label_delay_ms if kind == "labels" else 0
            for p in parts:
                if p in known:
                    continue
                q = self.merger.add(Input(topic, p, rank=_RANK[kind], shift_ms=spec_shift))
                assert q == len(self._tps)
                start = self.merger.resume_offset(q)
                tp = TopicPartition(topic, p, OFFSET_BEGINNING if start is None else start)
                self._tps.append(tp)
                self._kinds.append(kind)
                new.append(tp)
                if not initial:
                    log.info("picked up new partition %s[%d]", topic, p)
        if new:
            self.consumer.incremental_assign(new)

    # ----------------------------------------------------------------------------- reading
    def next_batch(self) -> list[Received]:
        """Records released by the merge since the last call, in order (may be empty).

        Raises :class:`StopIteration` once a bounded run has read and released everything.
        """
        cfg = self.cfg
        if time.monotonic() >= self._next_metadata:
            self._discover()
        msgs = self.consumer.consume(cfg.batch_size, 0.001)
        received = time.time()
        wall = cfg.clock_ms()
        merger = self.merger
        for msg in msgs:
            err = msg.error()
            topic, partition = msg.topic(), msg.partition()
            q = None if topic is None or partition is None else merger.index(topic, partition)
            if err is not None:
                self._on_error(q, msg, err)
                continue
            if q is None or q in self._blocked:
                continue
            self._push(q, msg, wall, received)
        self._check_partitions(wall)
        out = [item for _, item in merger.ready()]
        # a partition held by the offset policy is reported unready, not as a stall
        pending = 0 if self._blocked else merger.buffered + self._lag
        HEALTH.progress("input", pending=pending, advanced=bool(out))
        INPUT.buffered.set(merger.buffered)
        INPUT.late.set(merger.late)
        INPUT.late_idle.set(merger.late_idle)
        if not out and not cfg.tail and merger.exhausted():
            raise StopIteration
        return out

    def _push(self, q: int, msg: Any, wall: int, received: float) -> None:
        cfg = self.cfg
        ts_type, ts = msg.timestamp()
        ts = ts if ts_type and ts is not None and ts >= 0 else None
        now = ts if ts is not None and ts <= wall + cfg.limits.max_future_ms else wall
        kind = self._kinds[q]
        raw = msg.value()
        value: Transaction | Label | Rejected
        if kind == "transactions":
            value = parse_transaction(raw, now_ms=now, limits=cfg.limits)
            time_ms = value.event_time_ms if isinstance(value, Transaction) else None
            rk = K_TX
        else:
            value = parse_label(raw, now_ms=now, limits=cfg.limits)
            time_ms = value.label_time_ms if isinstance(value, Label) else None
            rk = K_LABEL
        if isinstance(value, Rejected):
            rk, time_ms = K_DLQ, None
        order_ts = ts
        if ts is not None and cfg.tail and ts > wall + cfg.idle_grace_ms:
            order_ts = wall + cfg.idle_grace_ms  # a producer clock far ahead must not stall us
            INPUT.future_capped.inc()
        item = Received(
            rk, value, msg.topic(), msg.partition(), msg.offset(), ts or 0, msg.key(), raw, received
        )
        merger = self.merger
        if merger.push(q, msg.offset(), order_ts, time_ms, item):
            # counted in the late gauges; logged (at most every 30 s per partition) with what
            # places it, so that a late record can be traced. A late record takes its
            # partition's floor, which it leaves unchanged; the idle count says the floor's source.
            idle = merger.late_idle != self._late_idle
            self._late_idle = merger.late_idle
            self._log(
                ("late", q),
                logging.WARNING,
                "late record %s[%d]@%d: timestamp %s, partition floor %d (%s, shifted %d ms), "
                "%d ms behind the wall clock; it takes the floor's place in the order",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                order_ts,
                merger.floor(q),
                "an idle bound" if idle else "an earlier record's",
                merger.inputs[q].shift_ms,
                wall - (order_ts or wall),
            )

    def _on_error(self, q: int | None, msg: Any, err: Any) -> None:
        code = err.code()
        where = f"{msg.topic()}[{msg.partition()}]"
        if code == KafkaError._PARTITION_EOF:
            if q is not None and not self.cfg.tail:
                self.merger.finish(q)
            return
        if q is not None and code in (
            KafkaError._AUTO_OFFSET_RESET,
            KafkaError.OFFSET_OUT_OF_RANGE,
        ):
            self._out_of_range(q, f"broker says offset out of range: {err}")
            return
        INPUT.errors.labels(str(err.name())).inc()
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
            HEALTH.set(f"input:{msg.topic()}", False, f"{where}: {err}")
            self._next_metadata = 0.0
        self._log(("error", code, where), logging.WARNING, "consumer error on %s: %s", where, err)

    def _on_stats(self, raw: str) -> None:
        """Note when each partition's leader last answered (``rxidle``: µs since a receive).

        After a gap in contact (broker down, network cut) the answer time is held at the gap's
        start for one more grace period: records that producers could not deliver during the gap
        arrive right after it, and must still find the floors below their timestamps.
        """
        now = self.cfg.clock_ms()
        gap_ms = max(1000, 3 * self.cfg.fetch_wait_ms)
        try:
            stats = orjson.loads(raw)
            effective: dict[int, int] = {}
            for b in stats["brokers"].values():
                node = b.get("nodeid", -1)
                if node < 0:
                    continue
                c = self._contact.setdefault(node, _Contact())
                idle = b.get("rxidle", -1)
                heard = now - idle // 1000 if b.get("state") == "UP" and idle >= 0 else None
                if heard is None or now - heard > gap_ms:
                    if c.gap_since is None:
                        c.gap_since = c.last_heard if c.last_heard is not None else now
                else:
                    if c.gap_since is not None:
                        c.hold_at, c.hold_until = c.gap_since, now + self.cfg.idle_grace_ms
                        c.gap_since = None
                    c.last_heard = heard
                t = c.effective(now)
                if t is not None:
                    effective[node] = t
            for topic in self._topics:
                parts = stats["topics"].get(topic, {}).get("partitions", {})
                for p, info in parts.items():
                    t = effective.get(info.get("leader", -1))
                    if t is not None and int(p) >= 0:
                        self._alive[(topic, int(p))] = t
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            self._log("stats", logging.WARNING, "unreadable client statistics: %s", exc)

    def _check_partitions(self, wall: int) -> None:
        """Caught-up partitions, offsets beyond the log end, backpressure, lag."""
        merger, cfg = self.merger, self.cfg
        self._lag = 0
        for q, tp in enumerate(self._tps):
            if q in self._blocked:
                self._log(("blocked", q), logging.ERROR, "%s", self._blocked[q])
                continue
            marks = self._watermarks(tp)
            if marks is None:
                continue
            high = marks[1]
            nxt = merger.resume_offset(q)
            position = 0 if nxt is None else nxt
            if position > high:
                self._out_of_range(
                    q,
                    f"{tp.topic}[{tp.partition}]: next offset {position} is beyond the log "
                    f"end {high} (broker lost its data or the topic was recreated)",
                )
                continue
            INPUT.lag.labels(tp.topic, str(tp.partition)).set(high - position)
            if q not in self._paused:
                self._lag += max(0, high - position)
            if cfg.tail and position >= high:
                alive = self._alive.get((tp.topic, tp.partition))
                if alive is not None:
                    merger.idle(q, min(wall, alive) - cfg.idle_grace_ms)
            if merger.should_pause(q):
                if q not in self._paused:
                    self.consumer.pause([tp])
                    self._paused.add(q)
            elif q in self._paused and merger.should_resume(q):
                self.consumer.resume([tp])
                self._paused.discard(q)
        INPUT.paused.set(len(self._paused))

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int] | None:
        """(low, high) from the last fetch response; ``None`` before the first one."""
        try:
            marks = self.consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException as exc:
            self._log(("watermarks", tp.topic, tp.partition), logging.DEBUG, "%s", exc)
            return None
        if marks is None or marks[1] is None or marks[1] < 0:
            return None
        return int(marks[0]), int(marks[1])

    def _out_of_range(self, q: int, reason: str) -> None:
        tp = self._tps[q]
        policy = self.cfg.offset_policy
        INPUT.offset_out_of_range.labels(tp.topic, str(tp.partition)).set(1)
        if policy == "fail":
            if q not in self._blocked:
                log.error("%s; offset_policy=fail: not reading it (sidecar unready)", reason)
                self.consumer.pause([tp])
                self._paused.add(q)
            self._blocked[q] = reason
            HEALTH.set(f"offsets:{tp.topic}[{tp.partition}]", False, reason)
            return
        low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        if policy == "latest":
            cached = self._watermarks(tp)
            if cached is not None:
                high = cached[1]  # some brokers answer ListOffsets with a stale end
        target = low if policy == "earliest" else high
        log.warning("%s; offset_policy=%s: continuing at offset %d", reason, policy, target)
        INPUT.offset_resets.labels(tp.topic, policy).inc()
        self.merger.reposition(q, target)
        self.consumer.seek(TopicPartition(tp.topic, tp.partition, target))

    # ----------------------------------------------------------------------------- state
    def snapshot(self) -> dict[str, Any]:
        """Resume state: per partition the offset of its first unreleased record and its floor."""
        return {"inputs": self.merger.snapshot()}

    def close(self) -> None:
        self.consumer.close()
