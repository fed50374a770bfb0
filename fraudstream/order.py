"""The order in which input records take effect: a deterministic function of the records.

Transactions and labels come from several Kafka partitions. Each partition is read in offset
order, but how a consumer interleaves partitions depends on timing: with a backlog, one fetch of
one partition can span a day of event time. State shared by entities whose events span partitions
(terminals, merchants, devices, IPs, delayed terminal risk) would then depend on the timing of
fetches. :class:`Merger` fixes one total order instead, the way Kafka Streams picks among a
task's partitions and Flink aligns watermarks:

Order key of a record read from input ``q`` (a topic-partition)::

    (ts, time, rank, partition, offset)

* ``ts``: the record's Kafka timestamp plus the input's ``shift_ms``, raised to at least the
  input's *floor* (the largest ``ts`` already read from ``q``, or an idle bound, below). Within a
  partition ``ts`` therefore never decreases; a record whose own timestamp is below the floor is
  *late* and takes the floor as its ``ts`` (counted, see :attr:`Merger.late`).
* ``time``: the payload's own time (``event_time_ms``, or ``label_time_ms + shift_ms`` for labels);
  it orders records that share ``ts`` (a bulk load stamps thousands of records per millisecond).
* ``rank`` (per topic; labels before transactions), ``partition`` and ``offset`` break the rest.

Release rule: a buffered record is released once its ``ts`` is *strictly* below the watermark
``W = min(floor of every unfinished input)``. Every record still unread has ``ts >= W``, so the
released records are exactly the smallest keys of the whole input, whatever the fetch timing,
batch sizes, process count or crash history; each release is sorted by the full key.

Idle inputs: an input that is caught up (nothing left on the broker) would hold ``W`` forever.
The caller may then raise its floor with :meth:`Merger.idle` (the sidecar uses wall clock minus a
grace period; a bounded run uses :meth:`Merger.finish` at the end of the partition). This is the
one place where timing enters: a record that reaches an idle input later with a timestamp below
the raised floor is late, and its position depends on when the floor was raised. Records that
arrive within the grace period of their timestamp are never late.

Backpressure: an input whose floor is above ``W`` cannot help release anything; the caller pauses
it while it holds more than ``max_buffered`` records (:meth:`Merger.should_pause`). The input
whose floor *is* ``W`` is never paused, so the merge cannot deadlock.

Resume: :meth:`Merger.snapshot` gives, per input, the offset of its first unreleased record and
the floor to restore, so that a merger rebuilt from it and fed the same records again releases
exactly the same sequence as one that never stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["INFINITY", "Input", "Merger", "OrderKey"]

INFINITY = 2**63 - 1
NEG_INFINITY = -(2**63)

# (ts, time, rank, partition, offset)
OrderKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Input:
    """One input partition: ``rank`` orders topics at equal times, ``shift_ms`` delays a topic."""

    topic: str
    partition: int
    rank: int = 0
    shift_ms: int = 0


class _State:
    __slots__ = ("buf", "done", "floor", "idle_floor", "next_offset", "spec")

    def __init__(self, spec: Input, next_offset: int | None, floor: int) -> None:
        self.spec = spec
        self.buf: deque[tuple[OrderKey, Any]] = deque()
        self.floor = floor
        self.idle_floor = False  # the floor was raised by idle(), not by a record
        self.next_offset = next_offset  # after the last record pushed (None: not read yet)
        self.done = False


class Merger:
    """Merges several offset-ordered inputs into one deterministic order (see module doc)."""

    def __init__(
        self,
        inputs: Iterable[Input] = (),
        *,
        resume: Mapping[tuple[str, int], tuple[int, int]] | None = None,
        max_buffered: int = 20_000,
    ) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be >= 1")
        self.max_buffered = max_buffered
        self._resume = dict(resume or {})
        self._inputs: list[_State] = []
        self._index: dict[tuple[str, int], int] = {}
        # late records; those behind an idle bound (the only ones whose place depends on timing:
        # a record behind an earlier record of its own partition is placed by the log alone)
        self.late = 0
        self.late_idle = 0
        self.buffered = 0
        for spec in inputs:
            self.add(spec)

    # ----------------------------------------------------------------------------- inputs
    def add(self, spec: Input) -> int:
        """Register an input (e.g. a partition added at run time); returns its index."""
        ident = (spec.topic, spec.partition)
        if ident in self._index:
            raise ValueError(f"input {ident} registered twice")
        offset, floor = self._resume.get(ident, (None, NEG_INFINITY))
        self._index[ident] = len(self._inputs)
        self._inputs.append(_State(spec, offset, floor))
        return len(self._inputs) - 1

    def index(self, topic: str, partition: int) -> int | None:
        return self._index.get((topic, partition))

    @property
    def inputs(self) -> list[Input]:
        return [s.spec for s in self._inputs]

    def resume_offset(self, q: int) -> int | None:
        """Where reading input ``q`` must (re)start; ``None``: from its beginning."""
        return self._inputs[q].next_offset

    def floor(self, q: int) -> int:
        return self._inputs[q].floor

    def buffered_in(self, q: int) -> int:
        return len(self._inputs[q].buf)

    def is_done(self, q: int) -> bool:
        return self._inputs[q].done

    # ----------------------------------------------------------------------------- feeding
    def push(self, q: int, offset: int, ts_ms: int | None, time_ms: int | None, item: Any) -> bool:
        """Buffer a record of input ``q`` (offsets increasing); returns whether it was late.

        ``ts_ms`` is the Kafka timestamp (``None`` or negative: none, the floor is used);
        ``time_ms`` the payload's time (``None``: the record's ``ts``).
        """
        s = self._inputs[q]
        if s.next_offset is not None and offset < s.next_offset:
            return False  # already read (a re-delivery by the client after a seek): ignore
        spec = s.spec
        late = False
        if ts_ms is None or ts_ms < 0:
            ts = s.floor if s.floor > NEG_INFINITY else 0
        else:
            ts = ts_ms + spec.shift_ms
            if ts < s.floor:
                late = True
                self.late += 1
                self.late_idle += s.idle_floor
                ts = s.floor
        s.floor = ts
        s.idle_floor = False
        t = ts if time_ms is None else time_ms + spec.shift_ms
        s.buf.append(((ts, t, spec.rank, spec.partition, offset), item))
        s.next_offset = offset + 1
        self.buffered += 1
        return late

    def reposition(self, q: int, offset: int) -> None:
        """The input continues at ``offset``, forward or back (an offset reset by policy after
        the log was lost or truncated); records buffered from it are kept."""
        self._inputs[q].next_offset = offset

    def idle(self, q: int, ts_bound_ms: int) -> None:
        """Input ``q`` is caught up: it will deliver no record stamped before ``ts_bound_ms``.

        Raises the floor to ``ts_bound_ms`` plus the input's shift; records already buffered
        keep their keys. (A resume restores the floor of an input's first unreleased record, so
        only the keys of *late* records read after such a raise can differ after a crash.)
        """
        s = self._inputs[q]
        floor = ts_bound_ms + s.spec.shift_ms
        if floor > s.floor:
            s.floor = floor
            s.idle_floor = True

    def finish(self, q: int) -> None:
        """Input ``q`` has ended (bounded runs): it no longer holds the watermark back."""
        self._inputs[q].done = True

    # ----------------------------------------------------------------------------- output
    def watermark(self) -> int:
        """Every record not read yet has ``ts >= watermark()``."""
        w = INFINITY
        for s in self._inputs:
            if not s.done and s.floor < w:
                w = s.floor
        return w

    def ready(self) -> list[tuple[OrderKey, Any]]:
        """Release every buffered record below the watermark, in key order."""
        w = self.watermark()
        out: list[tuple[OrderKey, Any]] = []
        for s in self._inputs:
            buf = s.buf
            while buf and buf[0][0][0] < w:
                out.append(buf.popleft())
        if out:
            self.buffered -= len(out)
            out.sort(key=_first)
        return out

    def exhausted(self) -> bool:
        """Every input finished and nothing left buffered."""
        return self.buffered == 0 and all(s.done for s in self._inputs)

    def should_pause(self, q: int) -> bool:
        """Input ``q`` holds many records and is ahead of the watermark: stop fetching it."""
        s = self._inputs[q]
        return len(s.buf) > self.max_buffered and s.floor > self.watermark()

    def should_resume(self, q: int) -> bool:
        s = self._inputs[q]
        return len(s.buf) <= self.max_buffered // 2 or s.floor <= self.watermark()

    def snapshot(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Per input: ``(offset to resume from, floor to restore)``; inputs not read are omitted."""
        out = {}
        for s in self._inputs:
            if s.buf:
                key = s.buf[0][0]
                out[(s.spec.topic, s.spec.partition)] = (key[4], key[0])
            elif s.next_offset is not None:
                out[(s.spec.topic, s.spec.partition)] = (s.next_offset, s.floor)
        return out


def _first(pair: tuple[OrderKey, Any]) -> OrderKey:
    return pair[0]
