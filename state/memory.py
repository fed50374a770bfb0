"""In-memory :class:`~fraudstream.state.base.KVStore`: replays, tests, and small runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["MemoryKV"]


class MemoryKV:
    """A dict with the store contract; prefix scans sort on demand (they are rare)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.data.get
        return [get(k) for k in keys]

    def write(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        data = self.data
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = sorted(k for k in self.data if k.startswith(prefix))
        for k in keys:
            yield k, self.data[k]

    def delete_range(self, start: bytes, end: bytes) -> None:
        for k in [k for k in self.data if start <= k < end]:
            del self.data[k]

    def clear(self) -> None:
        self.data.clear()

    def close(self) -> None:
        pass
