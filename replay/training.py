"""Training sets by replay, and champion training from raw streams."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fraudstream.models.registry import ModelRegistry
from fraudstream.models.train import train_champion
from fraudstream.replay.features import replay_features, to_label
from fraudstream.schema import Label
from fraudstream.state.features import FeatureSet, get_feature_set

__all__ = ["labels_as_of", "train_from_files", "train_from_streams"]


def labels_as_of(labels: Iterable[Label], as_of_ms: int) -> dict[str, int]:
    """Latest label per transaction among those issued at or before ``as_of_ms``."""
    latest: dict[str, tuple[int, int]] = {}
    for lab in labels:
        if lab.label_time_ms <= as_of_ms:
            seen = latest.get(lab.tx_id)
            if seen is None or lab.label_time_ms >= seen[0]:
                latest[lab.tx_id] = (lab.label_time_ms, lab.label)
    return {tx: value for tx, (_, value) in latest.items()}


def train_from_streams(
    transactions: list[dict],
    labels: list[dict],
    fs: FeatureSet,
    registry: Path,
    *,
    seed: int = 0,
    n_estimators: int = 200,
    train_from_ms: int | None = None,
    train_to_ms: int | None = None,
) -> str:
    """Replay features, label with what is known at the end, train, register (shadow stage).

    The whole input is replayed (earlier history feeds the state); only transactions with event
    time in ``[train_from_ms, train_to_ms)`` become training rows (``None``: open). The manifest's
    ``training_window`` records the first and last training row (``from_ms``, ``to_ms``, both
    inclusive) and the window asked for (``requested_from_ms``, ``requested_to_ms``, half-open,
    ``null`` when open); backtests take the handbook protocol's training window from it.
    """
    parsed = [lab for lab in (to_label(r) for r in labels) if lab is not None]
    replay = replay_features(transactions, parsed, fs, progress=True)
    lo = -(2**62) if train_from_ms is None else train_from_ms
    hi = 2**62 if train_to_ms is None else train_to_ms
    rows = np.flatnonzero((replay.times_ms >= lo) & (replay.times_ms < hi))
    if not rows.size:
        raise ValueError("no valid transactions in the training window")
    as_of = max([lab.label_time_ms for lab in parsed] + [int(replay.times_ms.max())])
    known = labels_as_of(parsed, as_of)
    y = np.array([known.get(replay.tx_ids[i], 0) for i in rows], dtype=np.int32)
    X = replay.X[rows]
    result = train_champion(X, y, fs.feature_names, seed=seed, n_estimators=n_estimators)
    times = replay.times_ms[rows]
    window = {
        "from_ms": int(times.min()),
        "to_ms": int(times.max()),
        "requested_from_ms": train_from_ms,
        "requested_to_ms": train_to_ms,
    }
    return ModelRegistry(registry).register(result, fs, training_window=window)


def train_from_files(
    *,
    transactions: str | Path,
    labels: str | Path,
    feature_set: str,
    registry: Path,
    seed: int = 0,
    n_estimators: int = 200,
    train_from_ms: int | None = None,
    train_to_ms: int | None = None,
    kafka: Any = None,
) -> str:
    from fraudstream.replay.api import read_records

    return train_from_streams(
        list(read_records(transactions, kafka)),
        list(read_records(labels, kafka)),
        get_feature_set(feature_set),
        registry,
        seed=seed,
        n_estimators=n_estimators,
        train_from_ms=train_from_ms,
        train_to_ms=train_to_ms,
    )
