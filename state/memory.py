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

    Prefix scans read a sorted list of the keys, kept lazily: keys added since the last scan are
    merged in at the next one (timsort merges the two sorted runs in linear time), deleted keys
    are skipped and dropped once they make up half the list. A scan therefore costs the keys in
    its range, not a sort of the whole store (the transaction index scans its expiry queue once
    a day of event time over hundreds of thousands of keys).
    """

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] = []
        self._added: list[bytes] = []

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.data.get
        return [get(k) for k in keys]

    def write(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        data = self.data
        added = self._added
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                if key not in data:
                    added.append(key)
                data[key] = value

    def _keys(self) -> list[bytes]:
        keys = self._sorted
        if self._added:
            keys += self._added
            self._added = []
            keys.sort()
        if len(keys) > 2 * len(self.data) + 1024:
            # a key deleted and added again appears twice: keep one of each live key
            data = self.data
            keys = [k for i, k in enumerate(keys) if k in data and (i == 0 or keys[i - 1] != k)]
        self._sorted = keys
        return keys

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = self._keys()
        lo = bisect_left(keys, prefix)
        end = _after_prefix(prefix)
        hi = len(keys) if end is None else bisect_left(keys, end, lo)
        data = self.data
        previous = None
        for k in keys[lo:hi]:
            if k == previous:
                continue
            previous = k
            value = data.get(k)
            if value is not None:
                yield k, value

    def delete_range(self, start: bytes, end: bytes) -> None:
        keys = self._keys()
        data = self.data
        for k in keys[bisect_left(keys, start) : bisect_left(keys, end)]:
            data.pop(k, None)

    def clear(self) -> None:
        self.data.clear()
        self._sorted = []
        self._added = []

    def close(self) -> None:
        pass
