"""In-memory :class:`~fraudstream.state.base.KVStore`: replays, tests, and small runs."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

__all__ = ["MemoryKV"]


def _after_prefix(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class MemoryKV:
    """A dict with the store contract.

    Prefix scans read sorted lists of the keys, kept lazily and one per key head (the first two
    bytes: the stores' prefixes are two bytes, ``x\x00`` index records, ``q\x00`` their expiry
    queue, ``e\x00`` entities). Keys added since the last scan of their head are merged in at the
    next one (timsort merges the two sorted runs in linear time); deleted keys are skipped and
    dropped once deletions make up half a list. A scan therefore costs the keys of its own head,
    not every key of the store: the transaction index scans its small expiry queue once a day of
    event time, and with one list for all keys every scan merged the day's new index keys into a
    list of all of them (1M keys by the end of a 1M-event replay, a cost per record that grew
    along the stream).
    """

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._sorted: dict[bytes, list[bytes]] = {}  # head -> its keys, sorted, maybe stale
        self._added: dict[bytes, list[bytes]] = {}  # head -> keys added since its last scan
        self._deleted: dict[bytes, int] = {}  # head -> deletions since its list was compacted

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.data.get
        return [get(k) for k in keys]

    def write(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        data = self.data
        added = self._added
        for key, value in items:
            if value is None:
                if data.pop(key, None) is not None:
                    head = key[:2]
                    self._deleted[head] = self._deleted.get(head, 0) + 1
            else:
                if key not in data:
                    got = added.get(key[:2])
                    if got is None:
                        added[key[:2]] = [key]
                    else:
                        got.append(key)
                data[key] = value

    def _keys(self, head: bytes) -> list[bytes]:
        """The sorted keys of ``head`` (possibly with deleted ones, and a re-added one twice)."""
        keys = self._sorted.get(head)
        if keys is None:
            keys = self._sorted[head] = []
        new = self._added.pop(head, None)
        if new:
            keys += new
            keys.sort()
        if 2 * self._deleted.get(head, 0) > len(keys) + 1024:
            # a key deleted and added again appears twice: keep one of each live key
            data = self.data
            keys[:] = [k for i, k in enumerate(keys) if k in data and (i == 0 or keys[i - 1] != k)]
            self._deleted[head] = 0
        return keys

    def _heads(self, prefix: bytes) -> list[bytes]:
        """The heads whose keys may start with ``prefix``, in key order."""
        if len(prefix) >= 2:
            return [prefix[:2]]
        heads = set(self._sorted) | set(self._added)
        return sorted(h for h in heads if h.startswith(prefix))

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        data = self.data
        end = _after_prefix(prefix)
        for head in self._heads(prefix):
            keys = self._keys(head)
            lo = bisect_left(keys, prefix)
            hi = len(keys) if end is None else bisect_left(keys, end, lo)
            previous = None
            for k in keys[lo:hi]:
                if k == previous:
                    continue
                previous = k
                value = data.get(k)
                if value is not None:
                    yield k, value

    def delete_range(self, start: bytes, end: bytes) -> None:
        deleted = []
        for head in self._heads(b""):
            keys = self._keys(head)
            deleted += keys[bisect_left(keys, start) : bisect_left(keys, end)]
        self.write((k, None) for k in deleted)

    def clear(self) -> None:
        self.data.clear()
        self._sorted = {}
        self._added = {}
        self._deleted = {}

    def close(self) -> None:
        pass
