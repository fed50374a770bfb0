"""Notebook-friendly replay API: files in, pandas DataFrames and Parquet out.

Inputs are JSONL (optionally gzipped) or Parquet files. Output Parquet is deterministic: the same
input gives byte-identical files (no timestamps, no pandas metadata, fixed compression).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fraudstream.errors import ConfigError
from fraudstream.jsonl import read_jsonl
from fraudstream.replay.features import ReplayResult, replay_features
from fraudstream.state.features import FeatureSet, get_feature_set
from fraudstream.timeutil import parse_time_ms

__all__ = ["features_frame", "features_table", "read_records", "write_features"]


KAFKA_PREFIX = "kafka:"


def _parse_kafka_spec(spec: str) -> tuple[str, int, int]:
    body = spec[len(KAFKA_PREFIX) :]
    topic, _, window = body.partition("@")
    start, _, end = window.partition("..")
    from_ms = parse_time_ms(start) if start else 0
    to_ms = parse_time_ms(end) if end else 2**62
    return topic, from_ms, to_ms


def read_records(path: str | Path, kafka: Any = None) -> Iterator[dict[str, Any]]:
    """Records of a JSONL(.gz) or Parquet file in file order, or of a Kafka topic time range.

    A Kafka source is written ``kafka:TOPIC[@FROM..TO]`` (FROM/TO: ISO dates or epoch ms) and needs
    ``kafka`` (a :class:`~fraudstream.kafka.KafkaSettings`). Undecodable values are skipped here;
    the replay counts records that fail schema validation.
    """
    if isinstance(path, str) and path.startswith(KAFKA_PREFIX):
        import orjson

        from fraudstream.replay.archive import read_topic_range

        if kafka is None:
            raise ConfigError(f"{path}: a Kafka source needs Kafka settings (--bootstrap-servers)")
        topic, from_ms, to_ms = _parse_kafka_spec(path)
        for value in read_topic_range(kafka, topic, from_ms=from_ms, to_ms=to_ms):
            try:
                record = orjson.loads(value or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
        return
    path = Path(path)
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
    else:
        yield from read_jsonl(path)


def features_table(result: ReplayResult, fs: FeatureSet) -> pa.Table:
    """``tx_id`` then the feature columns (float64), one row per transaction in input order."""
    columns: dict[str, Any] = {"tx_id": pa.array(result.tx_ids, pa.string())}
    for i, name in enumerate(fs.feature_names):
        columns[name] = pa.array(result.X[:, i], pa.float64())
    return pa.table(columns)


def _replay(
    transactions: str | Path, labels: str | Path, feature_set: str, kafka: Any = None
) -> tuple[Any, Any]:
    fs = get_feature_set(feature_set)
    result = replay_features(
        read_records(transactions, kafka), read_records(labels, kafka), fs, progress=True
    )
    return features_table(result, fs), fs


def features_frame(
    transactions: str | Path, labels: str | Path, feature_set: str, kafka: Any = None
) -> Any:
    """Point-in-time features as a pandas DataFrame (``tx_id`` + features, input order)."""
    table, _ = _replay(transactions, labels, feature_set, kafka)
    return table.to_pandas()


def write_features(
    transactions: str | Path,
    labels: str | Path,
    feature_set: str,
    out: str | Path,
    kafka: Any = None,
) -> int:
    """Replay and write Parquet; returns the number of rows."""
    table, _ = _replay(transactions, labels, feature_set, kafka)
    pq.write_table(table, str(out), compression="zstd", store_schema=False)
    return int(table.num_rows)
