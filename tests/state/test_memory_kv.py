"""The in-memory store's prefix scans and range deletes equal a sort of the whole dict."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.state.memory import MemoryKV

KEYS = st.binary(min_size=0, max_size=3).map(lambda b: b.replace(b"\x02", b"\xff"))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.binary(max_size=2)),
        st.tuples(st.just("delete"), KEYS, st.none()),
        st.tuples(st.just("scan"), st.binary(max_size=2), st.none()),
        st.tuples(st.just("range"), KEYS, KEYS),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_scans_match_a_sorted_dict(ops):
    kv, model = MemoryKV(), {}
    for op, a, b in ops:
        if op == "put":
            kv.write([(a, b)])
            model[a] = b
        elif op == "delete":
            kv.write([(a, None)])
            model.pop(a, None)
        elif op == "range":
            kv.delete_range(a, b)
            for k in [k for k in model if a <= k < b]:
                del model[k]
        else:
            want = sorted((k, v) for k, v in model.items() if k.startswith(a))
            assert list(kv.iter_prefix(a)) == want
    assert list(kv.iter_prefix(b"")) == sorted(model.items())
    assert kv.data == model


def test_many_deletes_and_re_adds_keep_one_entry_per_key():
    kv = MemoryKV()
    for round_ in range(5):
        kv.write([(b"k%04d" % i, b"%d" % round_) for i in range(3000)])
        assert len(list(kv.iter_prefix(b"k"))) == 3000
        kv.write([(b"k%04d" % i, None) for i in range(3000)])
        assert list(kv.iter_prefix(b"k")) == []
    # per key head (two bytes), at most twice its live keys plus 1,024
    assert sum(map(len, kv._sorted.values())) <= 2 * len(kv.data) + 1024 * len(kv._sorted)


def test_a_scan_merges_only_its_own_head():
    kv = MemoryKV()
    kv.write([(b"x\x00%06d" % i, b"v") for i in range(5000)])
    kv.write([(b"q\x00%03d" % i, b"v") for i in range(3)])
    assert [k for k, _ in kv.iter_prefix(b"q\x00")] == [b"q\x00000", b"q\x00001", b"q\x00002"]
    assert b"x\x00" not in kv._sorted and len(kv._added[b"x\x00"]) == 5000  # never sorted
    assert len(list(kv.iter_prefix(b"x"))) == 5000
    assert len(list(kv.iter_prefix(b""))) == 5003
