"""Decision-log replays for analysts: point-in-time features, training sets, backtests, archives.

Notebook use::

    from fraudstream.replay import features_frame, training_set_frame
    df = features_frame("tx.jsonl.gz", "labels.jsonl", "handbook")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fraudstream.replay.api import features_frame, read_records, write_features
from fraudstream.replay.features import ReplayResult, replay_features

__all__ = [
    "ReplayResult",
    "features_frame",
    "read_records",
    "replay_features",
    "training_set_frame",
    "write_features",
]


def training_set_frame(
    decisions: str | Path,
    labels: str | Path,
    *,
    as_of_ms: int,
    maturity_ms: int | None = None,
    kafka: Any = None,
) -> Any:
    """:func:`fraudstream.replay.training_set.training_set` as a pandas DataFrame."""
    from fraudstream.replay.training_set import DEFAULT_MATURITY_MS, training_set

    table = training_set(
        read_records(decisions, kafka),
        read_records(labels, kafka),
        as_of_ms=as_of_ms,
        maturity_ms=DEFAULT_MATURITY_MS if maturity_ms is None else maturity_ms,
    )
    return table.to_pandas()
