"""The dataflow's output: decisions and dead letters to Kafka, flushed before every snapshot.

One Bytewax sink partition owns a librdkafka producer. ``write_batch`` only enqueues (librdkafka
batches and sends in the background, so a decision is not held up by the next one);
``snapshot``, which Bytewax calls before an epoch's snapshot is committed, waits until every
record is acknowledged. So no snapshot ever covers an undelivered decision: after a crash the
input is re-read from a point whose outputs were all delivered (at-least-once, never lost).

Delivery failures never stop the flow silently or kill it:

* transient ones (broker down, timeouts) are retried until delivered; the snapshot waits, and the
  flow with it, while the broker is away;
* a record the broker refuses for its size or content is, if a dead letter, truncated to
  ``max_dead_letter_bytes`` (header ``dlq.truncated`` gives the original size) and sent again;
  if a decision, sent to the transactions dead-letter topic with reason ``decision_undeliverable``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import numpy as np
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from fraudstream.metrics import DLQ, INPROCESS, SINK

__all__ = ["KafkaOut", "OutMessage", "dead_letter"]

log = logging.getLogger(__name__)

_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,  # client side (message.max.bytes) and broker side
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
}


class OutMessage(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    dead_letter_topic: str | None = None  # where a refused decision goes
    # a decision's in-process timing (time.time()): its record's arrival at the reader, the
    # decision; 0: untimed
    received_s: float = 0.0
    decided_s: float = 0.0


def dead_letter(
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    detail: str,
    source: tuple[str, int, int],
    max_bytes: int,
) -> OutMessage:
    """A dead-letter record: the original bytes (truncated past ``max_bytes``) and headers."""
    value = value or b""
    headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail.encode()[:1000]),
        ("dlq.topic", source[0].encode()),
        ("dlq.partition", str(source[1]).encode()),
        ("dlq.offset", str(source[2]).encode()),
    ]
    if len(value) > max_bytes:
        headers.append(("dlq.truncated", str(len(value)).encode()))
        value = value[:max_bytes]
    DLQ.labels(topic, reason.split(":")[0]).inc()
    return OutMessage(topic, key, value, tuple(headers))


class _Part(StatefulSinkPartition[OutMessage, None]):
    def __init__(self, config: dict[str, str], max_dead_letter_bytes: int) -> None:
        self.producer = Producer(
            {**config, "logger": logging.getLogger("fraudstream.kafka.producer")}
        )
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.retry: list[OutMessage] = []
        self.in_flight = 0

    def _produce(self, msg: OutMessage) -> None:
        def on_delivery(err: Any, _record: Any) -> None:
            self.in_flight -= 1
            if err is not None:
                self._failed(msg, err)

        while True:
            try:
                self.producer.produce(
                    msg.topic,
                    msg.value,
                    msg.key,
                    headers=list(msg.headers),
                    on_delivery=on_delivery,
                )
                self.in_flight += 1
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)
            except KafkaException as exc:
                self._failed(msg, exc.args[0])
                return

    def _failed(self, msg: OutMessage, err: Any) -> None:
        code = err.code()
        SINK.errors.labels(str(err.name())).inc()
        if code not in _PERMANENT:
            log.warning("delivery to %s failed (%s): retrying", msg.topic, err)
            self.retry.append(msg)
            return
        if any(h[0] == "dlq.reason" for h in msg.headers):
            limit = min(self.max_dead_letter_bytes, max(1024, len(msg.value) // 4))
            if len(msg.value) <= 1024:
                SINK.dropped.inc()
                log.error("dead letter to %s refused even truncated (%s): dropped", msg.topic, err)
                return
            headers = [h for h in msg.headers if h[0] != "dlq.truncated"]
            original = dict(msg.headers).get("dlq.truncated", str(len(msg.value)).encode())
            headers.append(("dlq.truncated", original))
            self.retry.append(msg._replace(value=msg.value[:limit], headers=tuple(headers)))
            return
        if msg.dead_letter_topic is None:
            SINK.dropped.inc()
            log.error("record to %s refused (%s) and has no dead-letter topic", msg.topic, err)
            return
        self.retry.append(
            dead_letter(
                msg.dead_letter_topic,
                key=msg.key,
                value=msg.value,
                reason="decision_undeliverable",
                detail=str(err),
                source=(msg.topic, -1, -1),
                max_bytes=self.max_dead_letter_bytes,
            )
        )

    def write_batch(self, values: list[OutMessage]) -> None:
        for msg in values:
            self._produce(msg)
        handed = time.time()
        timed = [(m.received_s, m.decided_s) for m in values if m.decided_s]
        if timed:
            received, decided = np.asarray(timed).T
            INPROCESS.observe_many("sink", np.maximum(0.0, handed - decided))
            INPROCESS.observe_many("total", np.maximum(0.0, handed - received))
        self.producer.poll(0)

    def snapshot(self) -> None:
        """Block until everything written so far is acknowledged (see module docstring)."""
        started = time.monotonic()
        warned = started
        while True:
            self.producer.flush(1.0)
            if self.retry:
                pending, self.retry = self.retry, []
                for msg in pending:
                    self._produce(msg)
                continue
            if self.in_flight <= 0 and len(self.producer) == 0:
                break
            now = time.monotonic()
            if now - warned > 30:
                warned = now
                log.error(
                    "%d records still undelivered after %.0f s; holding the snapshot",
                    len(self.producer),
                    now - started,
                )
        SINK.flush_seconds.observe(time.monotonic() - started)

    def close(self) -> None:
        self.snapshot()


class KafkaOut(FixedPartitionedSink[OutMessage, None]):
    """Items are ``(any key, OutMessage)``; one producer for the whole flow."""

    def __init__(self, config: dict[str, str], *, max_dead_letter_bytes: int) -> None:
        self.config = config
        self.max_dead_letter_bytes = max_dead_letter_bytes

    def list_parts(self) -> list[str]:
        return ["kafka-out"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(self.config, self.max_dead_letter_bytes)
