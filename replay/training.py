"""Training sets by replay, and champion training from raw streams."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fraudstream.models.registry import ModelRegistry
from fraudstream.models.train import train_champion
from fraudstream.replay.features import replay_features, to_label
from fraudstream.schema import Label
from fraudstream.simulate import read_jsonl
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
) -> str:
    """Replay features, label with what is known at the end, train, register (shadow stage)."""
    parsed = [lab for lab in (to_label(r) for r in labels) if lab is not None]
    replay = replay_features(transactions, parsed, fs)
    if not replay.tx_ids:
        raise ValueError("no valid transactions to train on")
    as_of = max([lab.label_time_ms for lab in parsed] + [int(replay.times_ms.max())])
    known = labels_as_of(parsed, as_of)
    y = np.array([known.get(tx, 0) for tx in replay.tx_ids], dtype=np.int32)
    result = train_champion(replay.X, y, fs.feature_names, seed=seed, n_estimators=n_estimators)
    window = {"from_ms": int(replay.times_ms.min()), "to_ms": int(replay.times_ms.max())}
    return ModelRegistry(registry).register(result, fs, training_window=window)


def train_from_files(
    *,
    transactions: Path,
    labels: Path,
    feature_set: str,
    registry: Path,
    seed: int = 0,
    n_estimators: int = 200,
) -> str:
    return train_from_streams(
        list(read_jsonl(transactions)),
        list(read_jsonl(labels)),
        get_feature_set(feature_set),
        registry,
        seed=seed,
        n_estimators=n_estimators,
    )
