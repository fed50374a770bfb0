"""EpochStore: undo-logged writes roll back exactly to any retained snapshot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.errors import RecoveryError
from fraudstream.state.base import EpochStore
from fraudstream.state.memory import MemoryKV


def _user_items(kv) -> dict[bytes, bytes]:
    return {k: v for k, v in kv.iter_prefix(b"") if not k.startswith(b"\xff\xff")}


def _write(store: EpochStore, updates: dict[bytes, bytes | None]) -> None:
    keys = list(updates)
    before = dict(zip(keys, store.get_many(keys), strict=True))
    store.write(updates, before)


def test_fresh_start_clears_unknown_contents(kv_factory):
    kv = kv_factory()
    kv.write([(b"stale", b"1")])
    EpochStore(kv, resume_epoch=None)
    assert _user_items(kv) == {}


def test_resume_rolls_back_writes_after_snapshot(kv_factory):
    kv = kv_factory("a")
    store = EpochStore(kv, resume_epoch=None)
    _write(store, {b"k1": b"v1", b"k2": b"v2"})
    snap = store.commit_epoch()
    expected = _user_items(kv)
    _write(store, {b"k1": b"changed", b"k3": b"new"})
    _write(store, {b"k2": None})
    store.commit_epoch()  # a later snapshot the engine never made durable
    _write(store, {b"k1": b"again"})
    kv.close()
    kv = kv_factory("a")
    EpochStore(kv, resume_epoch=snap)
    assert _user_items(kv) == expected


def test_resume_older_than_retained_history_is_refused(kv_factory):
    kv = kv_factory("b")
    store = EpochStore(kv, resume_epoch=None, keep_epochs=2)
    for i in range(5):
        _write(store, {b"k": str(i).encode()})
        store.commit_epoch()
    kv.close()
    with pytest.raises(RecoveryError, match="undo history"):
        EpochStore(kv_factory("b"), resume_epoch=1, keep_epochs=2)


def test_resume_with_another_value_format_is_refused(kv_factory):
    kv = kv_factory("c")
    store = EpochStore(kv, resume_epoch=None, format_tag=b"entities/history-1")
    _write(store, {b"k": b"v"})
    snap = store.commit_epoch()
    kv.close()
    kv = kv_factory("c")
    with pytest.raises(RecoveryError, match="format"):
        EpochStore(kv, resume_epoch=snap, format_tag=b"entities/history-2")
    EpochStore(kv, resume_epoch=snap, format_tag=b"entities/history-1")


def test_resume_without_state_is_refused():
    with pytest.raises(RecoveryError, match="no snapshot"):
        EpochStore(MemoryKV(), resume_epoch=3)


@settings(max_examples=60, deadline=None)
@given(
    epochs=st.lists(
        st.lists(
            st.dictionaries(
                st.sampled_from([b"a", b"b", b"c", b"d"]),
                st.one_of(st.none(), st.binary(min_size=1, max_size=3)),
                max_size=3,
            ),
            max_size=3,
        ),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_any_retained_snapshot_is_restored_exactly(epochs, data):
    kv = MemoryKV()
    store = EpochStore(kv, resume_epoch=None, keep_epochs=8)
    snapshots = {0: {}}
    for batches in epochs:
        for updates in batches:
            _write(store, updates)
        snapshots[store.commit_epoch()] = _user_items(kv)
    # a partial epoch after the last snapshot, as at a crash
    _write(store, {b"a": b"crash"})
    target = data.draw(st.sampled_from(sorted(snapshots)))
    EpochStore(kv, resume_epoch=target, keep_epochs=8)
    assert _user_items(kv) == snapshots[target]
