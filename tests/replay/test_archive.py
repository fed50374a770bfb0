"""replay archive on the embedded broker: time range, day partitioning, resume."""

from __future__ import annotations

import asyncio

import pyarrow.dataset as ds
from aiokafka import AIOKafkaProducer

from fraudstream.cli import main
from fraudstream.kafka import create_topics

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _send(settings, topic: str, items: list[tuple[int, int]]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(**settings.aiokafka_kwargs())
        await producer.start()
        try:
            for i, ts in items:
                await producer.send_and_wait(
                    topic, b'{"i": %d}' % i, key=b"k%d" % (i % 3), partition=i % 2, timestamp_ms=ts
                )
        finally:
            await producer.stop()

    asyncio.run(go())


def _rows(out) -> list[tuple[str, int]]:
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    dates = [str(d) for d in table.column("date").to_pylist()]
    return sorted(
        zip(
            dates,
            [int(v.split(":")[1].strip(" }")) for v in table.column("value").to_pylist()],
            strict=True,
        )
    )


def test_archive_exports_the_range_by_day_and_resumes(kafka_settings, unique_topic, tmp_path):
    topic = unique_topic("archive")
    create_topics(kafka_settings, {topic: 2})
    _send(kafka_settings, topic, [(i, T0 + i * DAY // 2) for i in range(8)])  # 4 days, 2 a day
    out = tmp_path / "archive"
    argv = ["replay", "archive", "--bootstrap-servers", kafka_settings.bootstrap_servers]
    # a date-only --to includes that day: 2026-01-04 is archived
    argv += ["--topic", topic, "--from", "2026-01-02", "--to", "2026-01-04", "--out", str(out)]
    assert main(argv) == 0
    assert _rows(out) == [
        ("2026-01-02", 2),
        ("2026-01-02", 3),
        ("2026-01-03", 4),
        ("2026-01-03", 5),
        ("2026-01-04", 6),
        ("2026-01-04", 7),
    ]
    assert main(argv) == 0  # nothing new: nothing written twice
    assert len(_rows(out)) == 6
    _send(kafka_settings, topic, [(9, T0 + 3 * DAY + 1000), (10, T0 + 9 * DAY)])
    assert main(argv) == 0  # resumes: only the new in-range record is added
    assert len(_rows(out)) == 7


def test_replay_features_from_a_kafka_topic_equals_from_files(
    kafka_settings, unique_topic, tmp_path
):
    from fraudstream.kafka import produce
    from fraudstream.simulate import SimConfig, generate, write_jsonl

    sim = generate(SimConfig(seed=17, n_customers=80, n_terminals=150, days=6))
    tx_topic, label_topic = unique_topic("tx"), unique_topic("labels")
    create_topics(kafka_settings, {tx_topic: 1, label_topic: 1})
    produce(kafka_settings, tx_topic, [*sim.transactions, b"not json"])
    produce(kafka_settings, label_topic, sim.labels)
    write_jsonl(tmp_path / "tx.jsonl", sim.transactions)
    write_jsonl(tmp_path / "labels.jsonl", sim.labels)
    common = ["replay", "features", "--feature-set", "handbook"]
    files = [
        "--transactions",
        str(tmp_path / "tx.jsonl"),
        "--labels",
        str(tmp_path / "labels.jsonl"),
    ]
    topics = ["--transactions", f"kafka:{tx_topic}@0..", "--labels", f"kafka:{label_topic}"]
    assert main([*common, *files, "--out", str(tmp_path / "files.parquet")]) == 0
    argv = [*common, *topics, "--bootstrap-servers", kafka_settings.bootstrap_servers]
    assert main([*argv, "--out", str(tmp_path / "kafka.parquet")]) == 0
    assert (tmp_path / "kafka.parquet").read_bytes() == (tmp_path / "files.parquet").read_bytes()
