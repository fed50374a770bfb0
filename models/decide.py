"""Deciding: join a transaction's parts, score it with every model, act, write the record.

:class:`Decider` is the decision step's logic, free of any stream engine. It receives, from the
ingest step and in the input's order, one item per new transaction, re-delivery and label change,
and from the entity partitions (in any order) each transaction's per-entity feature values. It
keeps the ingest items in a queue and works off its completed head: every transaction whose parts
have all arrived, up to the first one still waiting. So decisions come out in the input's order,
and the online challenger learns and scores in the same sequence in every run.

Models (:class:`Scorer`), each with its own thresholds (a challenger's scores are ranks, not
probabilities):

* ``production``: the champion; its action is the decision, except on canary traffic;
* ``canary`` (optional): decides a deterministic share of transactions, ``crc32(tx_id)`` below
  ``canary_share`` of the hash range (the same transactions in every run and process);
* ``shadow`` models: scored on every transaction, never acted on. An *online* shadow (the River
  challenger) also learns every label change, with the features its transaction had when it was
  decided (kept in the decision store), exactly once per change, in input order: transactions
  between two label changes are scored by the model as it stood after the earlier one.

Offline models score the whole completed head in one batch call (XGBoost's per-call overhead
dominates small batches); an online model scores each run of transactions between label changes
in one call. A model that raises while scoring is dropped from the step (``failures``) unless it
is the production model, whose failing rows are split out and dead-lettered.

Items (tuples, cheap to pickle):

* ``("tx", tx_id, meta, base, n_parts, clock_ms)``: ``meta`` holds ``event_time_ms``,
  ``source`` (topic, partition, offset), ``ingest_ms`` and ``key``/``raw`` for dead letters;
* ``("dup", tx_id, meta, clock_ms)``: re-emit the decision of ``tx_id``;
* ``("learn", tx_id, label, label_time_ms, clock_ms)``: a label change (online learning);
* ``("parts", [(tx_id, plan, values), ...], [(tx_id, reason), ...])``: from entity partitions.

Output of :meth:`Decider.drain`: ``("decision", tx_id, record_bytes, action, ingest_ms,
decided_by_stage)`` (``action`` is ``None`` for a re-emitted record) and
``("dead", meta, reason, detail)``.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fraudstream.models.base import Model
from fraudstream.schema import DECISION_SCHEMA_VERSION
from fraudstream.state.decisions import DecisionStore
from fraudstream.state.features import FeatureSet
from fraudstream.state.ops import assemble

__all__ = ["Decider", "Scorer", "action_policy", "in_canary"]

_HASH_RANGE = 1 << 32


def action_policy(scores: np.ndarray, thresholds: dict[str, float]) -> list[str]:
    """``decline`` at or above the decline threshold, ``review`` at or above review, else
    ``approve``. NaN scores are refused (a model that produces them has failed)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    out = np.where(
        scores >= thresholds["decline"],
        "decline",
        np.where(scores >= thresholds["review"], "review", "approve"),
    )
    return out.tolist()


def in_canary(tx_id: str, share: float) -> bool:
    """Whether ``tx_id`` belongs to the canary's share of traffic (stable: crc32 of the id)."""
    return zlib.crc32(tx_id.encode()) < share * _HASH_RANGE


@dataclass
class Scorer:
    """A model in the decision step: its registry version, kind, stage and thresholds."""

    version: str
    kind: str
    stage: str
    model: Model
    thresholds: dict[str, float]
    online: bool = False
    # an online model registered with its history learned: labels due at or before this
    # instant (label time + the feature set's label delay) are in it already (None: none)
    learned_until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.stage not in ("production", "canary", "shadow"):
            raise ValueError(f"a deciding model's stage is production, canary or shadow: {self}")
        if not {"review", "decline"} <= self.thresholds.keys():
            raise ValueError(f"{self.version}: thresholds need review and decline")
        if self.online and not self.model.learns_online:
            raise ValueError(f"{self.version}: online, but the model does not learn online")


@dataclass
class Failure:
    """A model dropped from the step because it raised."""

    version: str
    stage: str
    error: str


class _Tx:
    __slots__ = ("base", "clock_ms", "failed", "meta", "need", "parts", "tx_id")

    def __init__(self, tx_id: str, meta: dict[str, Any], base: Any, need: int, clock: int):
        self.tx_id = tx_id
        self.meta = meta
        self.base = base
        self.need = need
        self.clock_ms = clock
        self.parts: dict[int, list[float]] = {}
        self.failed: str | None = None

    def complete(self) -> bool:
        return self.failed is not None or len(self.parts) >= self.need


@dataclass
class DrainStats:
    """What the last :meth:`Decider.drain` did, for metrics."""

    batch_rows: list[int] = field(default_factory=list)
    learned: int = 0
    learn_missing: int = 0
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # by version
    rows: np.ndarray | None = None
    event_times: np.ndarray | None = None
    # (event_time_ms, label_time_ms, label, {version: score}) per label change, in input order
    labels: list[tuple[int, int, int, dict[str, float]]] = field(default_factory=list)
    actions: dict[str, list[str]] = field(default_factory=dict)  # by version
    seconds: dict[str, float] = field(default_factory=dict)  # scoring time, by version
    by_canary: np.ndarray | None = None  # per row: decided by the canary
    stages: dict[str, str] = field(default_factory=dict)  # by version


class Decider:
    """See the module docstring."""

    def __init__(
        self,
        fs: FeatureSet,
        *,
        production: Scorer,
        canary: Scorer | None = None,
        shadows: Sequence[Scorer] = (),
        canary_share: float = 0.05,
        decisions: DecisionStore | None,
        clock_ms: Callable[[], int],
    ) -> None:
        if not 0.0 <= canary_share <= 1.0:
            raise ValueError("canary_share must be in [0, 1]")
        self.fs = fs
        self.names = list(fs.feature_names)
        self.decisions = decisions
        self.clock_ms = clock_ms
        self.canary_share = canary_share
        self.queue: deque[Any] = deque()
        self.waiting: dict[str, _Tx] = {}
        self.early: dict[str, _Tx] = {}  # parts that arrived before their transaction's item
        self.fs_meta = {"name": fs.name, "version": fs.version, "fingerprint": fs.fingerprint}
        self.failures: list[Failure] = []
        self.stats = DrainStats()
        self.production = production
        self.canary = canary
        self.shadows = list(shadows)
        self.set_models(production, canary, shadows)

    def set_models(
        self, production: Scorer, canary: Scorer | None, shadows: Sequence[Scorer]
    ) -> None:
        """Swap the models (between two drains: no transaction is scored twice or missed)."""
        if production.stage != "production":
            raise ValueError(f"{production.version} is not a production model")
        if canary is not None and canary.stage != "canary":
            raise ValueError(f"{canary.version} is not a canary model")
        if any(s.stage != "shadow" for s in shadows):
            raise ValueError("shadows must be in stage shadow")
        self.production, self.canary, self.shadows = production, canary, list(shadows)

    @property
    def scorers(self) -> list[Scorer]:
        out = [self.production]
        if self.canary is not None:
            out.append(self.canary)
        return out + self.shadows

    # ----------------------------------------------------------------------------- input
    def push(self, items: Iterable[tuple[Any, ...]]) -> None:
        for item in items:
            kind = item[0]
            if kind == "parts":
                # parts travel another path than their transaction's item: either may come first
                for tx_id, plan, values in item[1]:
                    entry = self.waiting.get(tx_id)
                    if entry is None:
                        entry = self.early.setdefault(tx_id, _Tx(tx_id, {}, None, -1, 0))
                    entry.parts[plan] = values
                for tx_id, reason in item[2]:
                    entry = self.waiting.get(tx_id)
                    if entry is None:
                        entry = self.early.setdefault(tx_id, _Tx(tx_id, {}, None, -1, 0))
                    if entry.failed is None:
                        entry.failed = reason
            elif kind == "tx" or kind == "txstate":
                _, tx_id, meta, base, need, clock, *rest = item
                entry = _Tx(tx_id, meta, base, need, clock)
                if rest:  # restored from a snapshot
                    entry.parts, entry.failed = dict(rest[0]), rest[1]
                early = self.early.pop(tx_id, None)
                if early is not None:
                    entry.parts.update(early.parts)
                    entry.failed = entry.failed or early.failed
                self.waiting[tx_id] = entry
                self.queue.append(entry)
            else:  # "dup", "learn": complete on arrival, ordered by the queue
                self.queue.append(item)

    def pending(self) -> int:
        return len(self.queue)

    def queue_items(self) -> list[tuple[Any, ...]]:
        """The queue (and parts still waiting for their item) as items :meth:`push` accepts."""
        out: list[tuple[Any, ...]] = []
        for e in self.early.values():
            out.append(("parts", [(e.tx_id, p, v) for p, v in e.parts.items()], []))
            if e.failed is not None:
                out.append(("parts", [], [(e.tx_id, e.failed)]))
        for e in self.queue:
            if isinstance(e, _Tx):
                out.append(
                    ("txstate", e.tx_id, e.meta, e.base, e.need, e.clock_ms, e.parts, e.failed)
                )
            else:
                out.append(e)
        return out

    # ----------------------------------------------------------------------------- output
    def drain(self) -> list[tuple[Any, ...]]:
        """Decide the completed head of the queue; see the module docstring for the output."""
        self.stats = DrainStats()
        queue = self.queue
        head: list[Any] = []
        while queue:
            first = queue[0]
            if isinstance(first, _Tx):
                if not first.complete():
                    break
                del self.waiting[first.tx_id]
            head.append(queue.popleft())
        if not head:
            return []
        txs = [e for e in head if isinstance(e, _Tx) and e.failed is None]
        rows = [assemble(self.fs, e.base, e.parts) for e in txs]
        X = np.array(rows, dtype=np.float64).reshape(len(rows), len(self.names))
        self.stats.rows = X
        self.stats.event_times = np.array([e.meta["event_time_ms"] for e in txs], dtype=np.int64)
        # What learned labels need: the decision-time features of their transactions.
        fresh_rows = {e.tx_id: r for e, r in zip(txs, rows, strict=True)}
        scores, dead = self._score_all(head, txs, X, fresh_rows)
        records = self._records(txs, rows, scores, dead)
        return self._emit(head, records, dead)

    def _score_all(
        self, head: list[Any], txs: list[_Tx], X: np.ndarray, fresh_rows: dict[str, list[float]]
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        scores: dict[str, np.ndarray] = {}
        dead: dict[str, str] = {}
        if txs:
            try:
                scores[self.production.version] = self._checked(self.production, X)
            except Exception:  # find the rows that fail; the others are decided
                scores[self.production.version], dead = self._rowwise(self.production, txs, X)
            self.stats.batch_rows.append(len(txs))
        for scorer in self.scorers[1:]:
            if scorer.online:
                continue
            try:
                scores[scorer.version] = self._checked(scorer, X) if txs else np.empty(0)
            except Exception as exc:  # a non-deciding model that fails leaves the step
                self._drop(scorer, exc)
        self._walk(head, txs, X, fresh_rows, scores)
        serving = {s.version for s in self.scorers}
        for version in [v for v in scores if v not in serving]:
            del scores[version]  # a model that failed part-way does not appear in any record
        self.stats.scores = scores
        return scores, dead

    def _walk(
        self,
        head: list[Any],
        txs: list[_Tx],
        X: np.ndarray,
        fresh_rows: dict[str, list[float]],
        scores: dict[str, np.ndarray],
    ) -> None:
        """In input order: online models score each run of transactions between two label
        changes, then every label change is recorded (with every model's score of its
        transaction's decision-time row, the online ones before they learn it) and learned."""
        online = [s for s in self.scorers if s.online]
        for scorer in online:
            scores[scorer.version] = np.empty(len(txs))
        learns = [e for e in head if not isinstance(e, _Tx) and e[0] == "learn"]
        if not learns:
            self._score_online(online, X, 0, len(txs), scores)
            return
        missing = [e[1] for e in learns if e[1] not in fresh_rows]
        stored = (
            dict(zip(missing, self.decisions.get_many(missing), strict=True))
            if missing and self.decisions is not None
            else {}
        )
        event_times = {e.tx_id: e.meta["event_time_ms"] for e in txs}
        # each label's decision-time row, then every static model's scores of them in one call
        found: list[tuple[list[float], int] | None] = []
        for e in learns:
            tx_id = e[1]
            row = fresh_rows.get(tx_id)
            event_ms = event_times.get(tx_id)
            if row is None:
                raw = stored.get(tx_id)
                if raw is not None:
                    record = orjson.loads(raw)
                    row, event_ms = record["features"], record["event_time_ms"]
            found.append(None if row is None or event_ms is None else (row, event_ms))
        static = self._static_label_scores([f[0] for f in found if f is not None])
        i = start = k = n_found = 0
        for e in head:
            if isinstance(e, _Tx):
                if e.failed is None:
                    i += 1
                continue
            if e[0] != "learn":
                continue
            online = self._score_online(online, X, start, i, scores)
            start = i
            _, tx_id, label, label_ms, _clock = e
            got = found[k]
            k += 1
            if got is None:
                self.stats.learn_missing += 1
                continue
            row, event_ms = got
            self.stats.labels.append(
                (event_ms, label_ms, label, self._label_scores(row, static, n_found))
            )
            n_found += 1
            R = np.asarray([row], dtype=np.float64)
            due = label_ms + self.fs.label_delay_ms
            for scorer in online:
                known = scorer.learned_until_ms
                if known is not None and due <= known:
                    continue  # learned before registration (replayed history)
                try:
                    scorer.model.learn_many(R, np.asarray([label]))
                except Exception as exc:
                    self._drop(scorer, exc)
            online = [s for s in online if s in self.scorers]
            self.stats.learned += 1
        self._score_online(online, X, start, i, scores)

    def _score_online(
        self, online: list[Scorer], X: np.ndarray, lo: int, hi: int, scores: dict[str, np.ndarray]
    ) -> list[Scorer]:
        """Score rows ``[lo, hi)`` with each online model; returns the ones still serving."""
        if hi > lo:
            for scorer in online:
                try:
                    scores[scorer.version][lo:hi] = self._checked(scorer, X[lo:hi])
                except Exception as exc:
                    self._drop(scorer, exc)
                    scores.pop(scorer.version, None)
        return [s for s in online if s in self.scorers]

    def _checked(self, scorer: Scorer, X: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        s = np.asarray(scorer.model.score_many(X), dtype=np.float64)
        v = scorer.version
        self.stats.seconds[v] = self.stats.seconds.get(v, 0.0) + time.perf_counter() - started
        self.stats.stages[v] = scorer.stage
        if s.shape != (X.shape[0],) or np.isnan(s).any() or (s < 0).any() or (s > 1).any():
            raise ValueError(f"{scorer.version} returned invalid scores")
        return s

    def _rowwise(
        self, scorer: Scorer, txs: list[_Tx], X: np.ndarray
    ) -> tuple[np.ndarray, dict[str, str]]:
        out = np.full(len(txs), np.nan)
        dead: dict[str, str] = {}
        for i, e in enumerate(txs):
            try:
                out[i] = self._checked(scorer, X[i : i + 1])[0]
            except Exception as exc:  # one row must not stop the step
                dead[e.tx_id] = f"{type(exc).__name__}: {exc}"[:300]
        return out, dead

    def _drop(self, scorer: Scorer, exc: Exception) -> None:
        self.failures.append(Failure(scorer.version, scorer.stage, f"{type(exc).__name__}: {exc}"))
        if scorer is self.canary:
            self.canary = None
        else:
            self.shadows = [s for s in self.shadows if s is not scorer]

    def _static_label_scores(self, rows: list[list[float]]) -> dict[str, list[float]]:
        """The models that do not learn online scoring every labelled row of a drain at once
        (one call per model: a single-row call costs ~40x a row in a batch). A model that fails
        on the batch is tried row by row in :meth:`_label_scores`."""
        out: dict[str, list[float]] = {}
        if not rows:
            return out
        X = np.asarray(rows, dtype=np.float64)
        for s in self.scorers:
            if s.online:
                continue
            with contextlib.suppress(Exception):  # monitoring must not fail the step
                got = np.asarray(s.model.score_many(X), dtype=np.float64)
                if got.shape == (len(rows),):
                    out[s.version] = got.tolist()
        return out

    def _label_scores(
        self, row: list[float], static: dict[str, list[float]] | None = None, at: int = 0
    ) -> dict[str, float]:
        """Every model's score of a labelled transaction's decision-time row (for monitoring):
        row ``at`` of ``static`` where a static model scored it already, else scored here (the
        online models before they learn the label)."""
        X = np.asarray([row], dtype=np.float64)
        out = {}
        for s in self.scorers:
            done = static.get(s.version) if static else None
            if done is not None:
                out[s.version] = done[at]
                continue
            with contextlib.suppress(Exception):  # monitoring must not fail the step
                out[s.version] = float(s.model.score_many(X)[0])
        return out

    def _records(
        self,
        txs: list[_Tx],
        rows: list[list[float]],
        scores: dict[str, np.ndarray],
        dead: dict[str, str],
    ) -> dict[str, tuple[bytes, str, str]]:
        if not txs:
            return {}
        now = self.clock_ms()
        acts = {}
        for s in self.scorers:
            if s.version in scores:
                sc = scores[s.version]
                safe = np.where(np.isnan(sc), 0.0, sc)
                acts[s.version] = action_policy(safe, s.thresholds)
        self.stats.actions = acts
        prod, canary = self.production, self.canary
        out = {}
        models = [s for s in self.scorers if s.version in scores]
        canary_on = canary is not None and canary.version in scores
        by_canary = np.zeros(len(txs), dtype=bool)
        self.stats.by_canary = by_canary
        for i, (e, row) in enumerate(zip(txs, rows, strict=True)):
            if e.tx_id in dead:
                continue
            decider = prod
            if canary_on and in_canary(e.tx_id, self.canary_share):
                assert canary is not None
                decider = canary
                by_canary[i] = True
            action = acts[decider.version][i]
            meta = e.meta
            record = {
                "schema_version": DECISION_SCHEMA_VERSION,
                "tx_id": e.tx_id,
                "event_time_ms": meta["event_time_ms"],
                "decided_at_ms": now,
                "ingested_at_ms": meta["ingest_ms"],
                "source": meta["source"],
                "feature_set": self.fs_meta,
                "features": row,
                "champion": {"version": prod.version, "score": float(scores[prod.version][i])},
                "models": [
                    {
                        "version": s.version,
                        "kind": s.kind,
                        "stage": s.stage,
                        "score": float(scores[s.version][i]),
                        "action": acts[s.version][i],
                    }
                    for s in models
                ],
                "decided_by": {"version": decider.version, "stage": decider.stage},
                "action": action,
                "thresholds": decider.thresholds,
            }
            out[e.tx_id] = (orjson.dumps(record), action, decider.stage)
        return out

    def _emit(
        self, head: list[Any], records: dict[str, tuple[bytes, str, str]], dead: dict[str, str]
    ) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        new: list[tuple[str, bytes, int]] = []
        fresh: dict[str, bytes] = {}
        lookups = [e[1] for e in head if not isinstance(e, _Tx) and e[0] == "dup"]
        stored = (
            dict(zip(lookups, self.decisions.get_many(lookups), strict=True))
            if lookups and self.decisions is not None
            else {}
        )
        for e in head:
            if isinstance(e, _Tx):
                if e.failed is not None:
                    out.append(("dead", e.meta, "processing_error:entities", e.failed))
                elif e.tx_id in dead:
                    out.append(("dead", e.meta, "processing_error:decide", dead[e.tx_id]))
                else:
                    record, action, stage = records[e.tx_id]
                    fresh[e.tx_id] = record
                    new.append((e.tx_id, record, e.clock_ms))
                    out.append(("decision", e.tx_id, record, action, e.meta["ingest_ms"], stage))
            elif e[0] == "dup":
                tx_id = e[1]
                again = fresh.get(tx_id) or stored.get(tx_id)
                if again is None:
                    out.append(("dead", e[2], "duplicate_undecided", "original decision expired"))
                else:
                    out.append(("decision", tx_id, again, None, 0, None))
        if self.decisions is not None and new:
            self.decisions.put_many(new)
        return out
