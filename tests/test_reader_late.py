"""A late record (its timestamp below its partition's floor) is counted and logged where it lies."""

from __future__ import annotations

import logging
import time

from fraudstream.kafka import create_topics, produce_streams
from fraudstream.reader import OrderedReader, ReaderConfig


def _tx(i: int, t_ms: int) -> dict:
    return {
        "tx_id": f"late-{i}",
        "event_time_ms": t_ms,
        "account_id": "acc1",
        "amount": 10.0,
        "schema_version": 1,
    }


def test_a_late_record_is_counted_and_logged_with_its_coordinates(
    kafka_settings, unique_topic, caplog
):
    tx, labels = unique_topic("late-tx"), unique_topic("late-labels")
    create_topics(kafka_settings, {tx: 1, labels: 1})
    now = int(time.time() * 1000) - 60_000
    # stamped with their event times, one after the other: the second is 10 s older than the
    # first, in the same partition
    for i, t_ms in ((0, now), (1, now - 10_000)):
        produce_streams(kafka_settings, tx, labels, [_tx(i, t_ms)], [], stamp="event")
    reader = OrderedReader(
        ReaderConfig(
            consumer=kafka_settings.confluent_config(),
            transactions_topic=tx,
            labels_topic=labels,
            tail=False,
        )
    )
    got = []
    deadline = time.monotonic() + 60
    with caplog.at_level(logging.WARNING, logger="fraudstream.reader"):
        try:
            while time.monotonic() < deadline:
                got += reader.next_batch()
        except StopIteration:
            pass
        finally:
            reader.close()
    # the late one takes its partition's floor as its timestamp; its own time orders it there
    assert [r.value.tx_id for r in got] == ["late-1", "late-0"]
    assert (reader.merger.late, reader.merger.late_idle) == (1, 0)  # behind a record, not idle
    want = f"late record {tx}[0]@1: timestamp {now - 10_000}, partition floor {now} (an earlier"
    assert want in caplog.text
