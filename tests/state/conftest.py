"""Fixtures for the state layer: every store contract test runs on memory and RocksDB."""

from __future__ import annotations

import pytest

from fraudstream.state.memory import MemoryKV
from fraudstream.state.rocksdb import RocksKV


@pytest.fixture(params=["memory", "rocksdb"])
def kv_factory(request, tmp_path):
    """Returns ``open(name)``: a store that survives close/reopen under the same name."""
    opened = []

    def open_kv(name: str = "kv"):
        if request.param == "memory":
            kv = _memory.setdefault(name, MemoryKV())
        else:
            kv = RocksKV(tmp_path / name)
            opened.append(kv)
        return kv

    _memory: dict[str, MemoryKV] = {}
    yield open_kv
    for kv in opened:
        try:
            kv.close()
        except Exception:
            pass
