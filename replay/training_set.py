"""Training sets from the decision log: decision-time features joined with labels known at as-of.

Rules (point in time):

* a label counts only if ``label_time_ms <= as_of_ms``; repeated labels resolve to the latest one
  known at as-of;
* a transaction with a known fraud label (1) is a positive;
* a transaction without a known label, or whose latest known label is 0, is a negative only once it
  is older than the label maturity period at as-of (``event_time_ms <= as_of_ms - maturity_ms``);
  younger ones are left out, because their chargeback may simply not have arrived yet;
* features are the ones logged at decision time, never recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from fraudstream.errors import InputDataError
from fraudstream.replay.features import to_label
from fraudstream.replay.training import labels_as_of
from fraudstream.state.features import get_feature_set

__all__ = ["DEFAULT_MATURITY_MS", "training_set"]

DEFAULT_MATURITY_MS = 30 * 86_400_000


def training_set(
    decisions: Iterable[dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    *,
    as_of_ms: int,
    maturity_ms: int = DEFAULT_MATURITY_MS,
) -> pa.Table:
    """One row per decided transaction that has a label at ``as_of_ms`` (see module rules).

    Columns: ``tx_id``, ``event_time_ms``, the logged features, ``label``. Decisions repeated after
    a recovery are de-duplicated by tx_id (first one kept); decisions made after as-of are ignored.
    """
    known = labels_as_of((lab for lab in map(to_label, labels) if lab is not None), as_of_ms)
    names: list[str] | None = None
    fingerprint = None
    seen: set[str] = set()
    rows: list[tuple[str, int, list[float], int]] = []
    for d in decisions:
        tx_id = d["tx_id"]
        if tx_id in seen or d["decided_at_ms"] > as_of_ms:
            continue
        seen.add(tx_id)
        fs_meta = d["feature_set"]
        if names is None:
            fs = get_feature_set(fs_meta["name"])
            if fs.fingerprint != fs_meta["fingerprint"]:
                raise InputDataError(
                    f"decisions were logged with feature set {fs_meta['name']!r} fingerprint "
                    f"{fs_meta['fingerprint']}, this build has {fs.fingerprint}"
                )
            names, fingerprint = list(fs.feature_names), fs_meta["fingerprint"]
        elif fs_meta["fingerprint"] != fingerprint:
            raise InputDataError(f"decision {tx_id} uses another feature set: {fs_meta}")
        label = known.get(tx_id)
        if label != 1 and d["event_time_ms"] > as_of_ms - maturity_ms:
            continue  # not mature: absence of a chargeback means nothing yet
        rows.append((tx_id, d["event_time_ms"], d["features"], 1 if label == 1 else 0))
    columns: dict[str, Any] = {
        "tx_id": pa.array([r[0] for r in rows], pa.string()),
        "event_time_ms": pa.array([r[1] for r in rows], pa.int64()),
    }
    for i, name in enumerate(names or []):
        columns[name] = pa.array([r[2][i] for r in rows], pa.float64())
    columns["label"] = pa.array([r[3] for r in rows], pa.int8())
    return pa.table(columns)
