"""The decision store: every decision made, by ``tx_id``, for a bounded time.

It serves two needs: an exact re-delivery of a transaction gets its *original* decision record
re-emitted byte for byte, and online models learn from a late label with the features the
transaction had when it was decided (never recomputed). Values are the decision record's bytes
behind an 8-byte expiry day; each write queues its keys under their expiry day, one entry per day
(``q\\0<day>\\0<seq>``, the JSON list of the ids; ``seq`` numbers the entries and is kept in the
store), and they are deleted once the maintenance clock has passed that day. It lives in an
:class:`~fraudstream.state.base.EpochStore`, so a resume rolls it back with everything else.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import orjson

from fraudstream.state.base import EpochStore, json_value
from fraudstream.state.features import DAY_MS

__all__ = ["DECISIONS_FORMAT", "DecisionStore"]

DECISIONS_FORMAT = b"decisions/bytes-2"  # 1: one queue key per decision
_PREFIX = b"d\x00"
_QUEUE = b"q\x00"
_META_EXPIRED = b"m\x00expired-day"
_META_SEQ = b"m\x00decision-queue-seq"
_DAY = struct.Struct("<q")


class DecisionStore:
    """Decision records by ``tx_id`` (see module docstring); ``ttl_ms`` of maintenance clock."""

    def __init__(self, store: EpochStore, *, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be > 0")
        self.store = store
        self.ttl_ms = ttl_ms
        raw, raw_seq = store.get_many([_META_EXPIRED, _META_SEQ])
        self.expired_day: int | None = None if raw is None else _DAY.unpack(raw)[0]
        self._seq = 0 if raw_seq is None else int(raw_seq)
        self.expired = 0

    def get_many(self, tx_ids: Sequence[str]) -> list[bytes | None]:
        raws = self.store.get_many([_PREFIX + t.encode() for t in tx_ids])
        return [None if r is None else r[_DAY.size :] for r in raws]

    def put_many(self, items: Sequence[tuple[str, bytes, int]]) -> None:
        """Store ``(tx_id, record, clock_ms)`` items in one atomic write."""
        if not items:
            return
        updates: dict[bytes, bytes | None] = {}
        keys = [_PREFIX + tx_id.encode() for tx_id, _, _ in items]
        unlogged = self.store.unlogged(keys)
        before: dict[bytes, bytes | None] = dict(
            zip(unlogged, self.store.get_many(unlogged), strict=True)
        )
        queued: dict[int, list[str]] = {}
        pack, ttl = _DAY.pack, self.ttl_ms
        for key, (tx_id, record, clock_ms) in zip(keys, items, strict=True):
            day = (clock_ms + ttl) // DAY_MS + 1
            updates[key] = pack(day) + record
            queue = queued.get(day)
            if queue is None:
                queued[day] = [tx_id]
            else:
                queue.append(tx_id)
            before.setdefault(key, None)
        before.setdefault(_META_SEQ, None if self._seq == 0 else b"%d" % self._seq)
        for day in sorted(queued):
            qkey = b"%s%010d\x00%012d" % (_QUEUE, day, self._seq)
            self._seq += 1
            updates[qkey] = json_value(queued[day])
            before[qkey] = None
        updates[_META_SEQ] = b"%d" % self._seq
        self.store.write(updates, before)

    def advance(self, clock_ms: int) -> None:
        """Expire what is due when the clock enters a new day (call at a deterministic point)."""
        day = clock_ms // DAY_MS
        if self.expired_day is None:
            self.expired_day = day
            self.store.write({_META_EXPIRED: _DAY.pack(day)}, {_META_EXPIRED: None})
            return
        if day <= self.expired_day:
            return
        updates: dict[bytes, bytes | None] = {_META_EXPIRED: _DAY.pack(day)}
        before: dict[bytes, bytes | None] = {_META_EXPIRED: _DAY.pack(self.expired_day)}
        plen = len(_QUEUE)
        due: list[tuple[int, list[str]]] = []
        for qkey, raw_queue in self.store.iter_prefix(_QUEUE):
            qday = int(qkey[plen : plen + 10])
            if qday >= day:
                break
            updates[qkey] = None
            before[qkey] = raw_queue
            due.append((qday, orjson.loads(raw_queue)))
        keys = [_PREFIX + tx_id.encode() for _, ids in due for tx_id in ids]
        days = [qday for qday, ids in due for _ in ids]
        for key, qday, raw in zip(keys, days, self.store.get_many(keys), strict=True):
            if raw is not None and key not in updates and _DAY.unpack_from(raw)[0] == qday:
                updates[key] = None
                before[key] = raw
                self.expired += 1
        self.store.write(updates, before)
        self.expired_day = day
