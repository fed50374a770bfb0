"""Transaction index: exactly-once effect of each transaction, and labels matched to it.

One record per ``tx_id`` seen within the TTL::

    [event_time_ms, label, delayed_entities, label_time_ms, digest, expire_day]

* ``digest`` is a hash of the validated transaction's content: a record arriving again with the
  same ``tx_id`` is an exact re-delivery (same digest: it must not touch state again, and gets its
  original decision re-emitted) or a conflict (another digest: it goes to the dead-letter topic).
* ``label`` is the transaction's current label (-1 until one arrives); a label *change* is one
  learning event for online models (the first label, 0 included: a review that confirms a
  legitimate transaction teaches as much as a chargeback), and a change of fraud status (+1/-1)
  becomes fraud ops for the transaction's delayed-window entities. Repeated labels are no-ops.
* A label for a transaction not seen yet is held (``event_time_ms`` is ``None``; the latest label
  wins) for ``label_hold_ms`` of maintenance-clock time and applied once when the transaction
  arrives; a held label that expires unmatched is counted, never an error.

Expiry: each record is queued under the day it expires; a batch writes one queue entry per day
it queues records for (``q\\0<day>\\0<seq>``, the JSON list of their ids; ``seq`` numbers the
entries, kept in the store so that a resume continues it). Once a day of maintenance clock, queued
days in the past are deleted (a record re-queued later, e.g. a held label whose transaction
arrived, carries its new day and is not deleted by the old queue entry).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson

from fraudstream.schema import OPTIONAL_FIELDS, Transaction
from fraudstream.state.base import EpochStore, json_value
from fraudstream.state.features import DAY_MS

__all__ = ["INDEX_FORMAT", "IndexStats", "TxIndex", "digest"]

# 4: digests of the fields as a JSON array (3: of the transaction as a JSON object, 2.5x slower),
# one queue entry per batch and day (3: one per record)
INDEX_FORMAT = b"txindex/json-4"
_META_SEQ = b"m\x00queue-seq"
_NO_LABEL = -1
INDEX_PREFIX = b"x\x00"
QUEUE_PREFIX = b"q\x00"

# entry fields
_T, _LABEL, _ENTS, _LABEL_MS, _DIGEST, _EXPIRE = range(6)


_CONTENT = attrgetter("tx_id", "event_time_ms", "account_id", "amount", *OPTIONAL_FIELDS)


def digest(tx: Transaction) -> int:
    """A 56-bit hash of a validated transaction's content (equal content, equal digest)."""
    content = orjson.dumps(_CONTENT(tx))
    return int.from_bytes(hashlib.blake2b(content, digest_size=7).digest(), "big")


@dataclass
class IndexStats:
    """Counters exposed to metrics. Every label ends as exactly one of matched, noop or expired
    (a held label counts when it is resolved); ``labels_held`` counts labels that had to wait."""

    tx_new: int = 0
    tx_duplicate: int = 0
    tx_conflict: int = 0
    labels_matched: int = 0
    labels_noop: int = 0
    labels_held: int = 0
    labels_expired: int = 0
    expired: int = 0


class TxIndex:
    """Batch access to index records: read once per batch, written back in one atomic write."""

    def __init__(self, store: EpochStore, *, ttl_ms: int, label_hold_ms: int) -> None:
        if ttl_ms <= 0 or label_hold_ms <= 0:
            raise ValueError("ttl_ms and label_hold_ms must be > 0")
        self.store = store
        self.ttl_ms = ttl_ms
        self.label_hold_ms = label_hold_ms
        self.stats = IndexStats()
        self._entries: dict[bytes, list[Any] | None] = {}
        self._before: dict[bytes, bytes | None] = {}
        self._updates: dict[bytes, bytes | None] = {}
        self._dirty: set[bytes] = set()
        self._queued: dict[int, list[str]] = {}  # this batch's queue: day -> tx_ids
        (raw,) = store.get_many([_META_SEQ])
        self._seq = 0 if raw is None else int(raw)

    # ----------------------------------------------------------------------------- batch
    def begin(self, tx_ids: list[str]) -> None:
        """Load the records of a batch's transaction ids."""
        keys = list(dict.fromkeys(INDEX_PREFIX + t.encode() for t in tx_ids))
        before = dict(zip(keys, self.store.get_many(keys), strict=True))
        self._before = before
        self._entries = {k: (orjson.loads(v) if v is not None else None) for k, v in before.items()}
        self._updates = {}
        self._dirty = set()
        self._queued = {}

    def commit(self, extra: dict[bytes, bytes | None] | None = None) -> None:
        """Write every record changed in the batch (and ``extra`` keys) atomically."""
        updates = self._updates
        for key in self._dirty:
            updates[key] = json_value(self._entries[key])
        if self._queued:
            before = self._before
            if _META_SEQ not in before:
                before[_META_SEQ] = None if self._seq == 0 else b"%d" % self._seq
            for day in sorted(self._queued):
                qkey = b"%s%010d\x00%012d" % (QUEUE_PREFIX, day, self._seq)
                self._seq += 1
                before[qkey] = None
                updates[qkey] = json_value(self._queued[day])
            updates[_META_SEQ] = b"%d" % self._seq
        if extra:
            missing = [k for k in extra if k not in self._before]
            self._before.update(zip(missing, self.store.get_many(missing), strict=True))
            updates.update(extra)
        if updates:
            self.store.write(updates, self._before)
        self._entries, self._before, self._updates, self._dirty = {}, {}, {}, set()
        self._queued = {}

    def _entry(self, tx_id: str) -> tuple[bytes, list[Any] | None]:
        key = INDEX_PREFIX + tx_id.encode()
        entry = self._entries[key]
        return key, entry

    def _set(self, key: bytes, entry: list[Any]) -> None:
        self._entries[key] = entry
        self._dirty.add(key)

    def _enqueue(self, tx_id: str, day: int) -> None:
        queue = self._queued.get(day)
        if queue is None:
            self._queued[day] = [tx_id]
        else:
            queue.append(tx_id)

    # ----------------------------------------------------------------------------- records
    def on_transaction(
        self, tx: Transaction, delayed: list[list[Any]], clock_ms: int
    ) -> tuple[str, list[Any]]:
        """``("new", held_label_or_None)``, ``("duplicate", [])`` or ``("conflict", [])``.

        For a new transaction with a held label, the label is returned as
        ``[label, label_time_ms]``: the caller applies it right after the transaction.
        """
        tx_id = tx.tx_id
        key = INDEX_PREFIX + tx_id.encode()
        entry = self._entries[key]
        d = digest(tx)
        if entry is not None and entry[_T] is not None:
            if entry[_DIGEST] == d:
                self.stats.tx_duplicate += 1
                return "duplicate", []
            self.stats.tx_conflict += 1
            return "conflict", []
        self.stats.tx_new += 1
        t = tx.event_time_ms
        day = ((t if t > clock_ms else clock_ms) + self.ttl_ms) // DAY_MS + 1
        held = None
        if entry is not None:  # a label arrived first
            held = [entry[_LABEL], entry[_LABEL_MS]]
        self._entries[key] = [t, _NO_LABEL, delayed, 0, d, day]
        self._dirty.add(key)
        queue = self._queued.get(day)  # _enqueue, inlined
        if queue is None:
            self._queued[day] = [tx_id]
        else:
            queue.append(tx_id)
        return "new", held if held is not None else []

    def on_label(self, tx_id: str, label: int, label_ms: int, clock_ms: int) -> tuple[str, Any]:
        """``("matched", (event_time_ms, entities, delta))`` for a change of a known
        transaction's label (``delta`` 0: no change of fraud status, e.g. a first review),
        ``("noop", None)`` or ``("held", None)``."""
        key, entry = self._entry(tx_id)
        if entry is None or entry[_T] is None:
            day = (clock_ms + self.label_hold_ms) // DAY_MS + 1
            if entry is None:
                self.stats.labels_held += 1
                self._enqueue(tx_id, day)
            else:
                self.stats.labels_noop += 1  # the earlier held label is superseded
            self._set(key, [None, label, None, label_ms, None, day if entry is None else entry[5]])
            return "held", None
        if label == entry[_LABEL]:
            self.stats.labels_noop += 1
            return "noop", None
        self.stats.labels_matched += 1
        was_fraud = entry[_LABEL] == 1
        entry[_LABEL], entry[_LABEL_MS] = label, label_ms
        self._set(key, entry)
        delta = 1 if label == 1 else (-1 if was_fraud else 0)
        return "matched", (entry[_T], entry[_ENTS], delta)

    def apply_held(self, tx_id: str, label: int, label_ms: int) -> tuple[int, list[Any], int]:
        """Apply a held label right after its transaction: ``(event_time_ms, entities, delta)``
        (``delta`` 0 when the label is 0: no fraud op, only a learning event)."""
        key, entry = self._entry(tx_id)
        assert entry is not None and entry[_T] is not None
        self.stats.labels_matched += 1
        entry[_LABEL], entry[_LABEL_MS] = label, label_ms
        self._set(key, entry)
        return entry[_T], entry[_ENTS], 1 if label == 1 else 0

    # ----------------------------------------------------------------------------- expiry
    def expire(self, clock_ms: int) -> None:
        """Delete records whose expiry day is before the clock's day (call between batches)."""
        today = clock_ms // DAY_MS
        updates: dict[bytes, bytes | None] = {}
        before: dict[bytes, bytes | None] = {}
        plen = len(QUEUE_PREFIX)
        due: list[tuple[int, list[str]]] = []
        for qkey, raw_queue in self.store.iter_prefix(QUEUE_PREFIX):
            day = int(qkey[plen : plen + 10])
            if day >= today:
                break
            updates[qkey] = None
            before[qkey] = raw_queue
            due.append((day, orjson.loads(raw_queue)))
        keys = [INDEX_PREFIX + tx_id.encode() for _, ids in due for tx_id in ids]
        days = [day for day, ids in due for _ in ids]
        for tx_key, day, raw in zip(keys, days, self.store.get_many(keys), strict=True):
            if raw is None or tx_key in updates:
                continue
            entry = orjson.loads(raw)
            if entry[_EXPIRE] != day:
                continue  # re-queued under a later day
            updates[tx_key] = None
            before[tx_key] = raw
            self.stats.expired += 1
            if entry[_T] is None:
                self.stats.labels_expired += 1
        if updates:
            self.store.write(updates, before)
