"""Schema v1 validation: every field rule, on raw payloads and decoded records alike."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.schema import (
    OPTIONAL_FIELDS,
    Label,
    Limits,
    Rejected,
    Transaction,
    parse_label,
    parse_transaction,
    validate_transaction,
)

NOW = 1_767_225_600_000
LIMITS = Limits()
GOOD = {"tx_id": "t1", "event_time_ms": NOW, "account_id": "a1", "amount": 12.5}


def _parse(record: dict) -> Transaction | Rejected:
    return parse_transaction(orjson.dumps(record), now_ms=NOW, limits=LIMITS)


def test_every_optional_field_is_kept_in_place():
    record = {**GOOD, **{name: f"v-{name}" for name in OPTIONAL_FIELDS}}
    tx = _parse(record)
    assert isinstance(tx, Transaction)
    assert [tx.get(name) for name in OPTIONAL_FIELDS] == [f"v-{n}" for n in OPTIONAL_FIELDS]
    assert validate_transaction(record, now_ms=NOW, limits=LIMITS) == tx


def test_empty_optional_fields_are_absent():
    tx = _parse({**GOOD, "card_id": "", "ip": None})
    assert isinstance(tx, Transaction)
    assert tx.card_id is None and tx.ip is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"device_id": 7}, "bad_type:device_id"),
        ({"channel": "x" * 257}, "bad_value:channel"),
        ({"amount": None}, "missing_field:amount"),
        ({"amount": "1"}, "bad_type:amount"),
        ({"amount": -1.0}, "negative_amount"),
        ({"event_time_ms": 1.5}, "bad_type:event_time_ms"),
        ({"event_time_ms": NOW + 2 * 86_400_000}, "event_time_out_of_range"),
        ({"tx_id": ""}, "bad_value:tx_id"),
        ({"account_id": 3}, "bad_type:account_id"),
        ({"schema_version": 2}, "unsupported_schema_version"),
        ({"amount": -0.0}, "negative_amount"),
        ({"amount": 1e-320}, "amount_out_of_range"),
        ({"amount": True}, "bad_type:amount"),
        ({"tx_id": "t\x00"}, "bad_value:tx_id"),
        ({"account_id": "a\nb"}, "bad_value:account_id"),
        ({"terminal_id": "t\x7f"}, "bad_value:terminal_id"),
    ],
)
def test_invalid_fields_are_rejected_with_their_reason(change, reason):
    got = _parse({**GOOD, **change})
    assert isinstance(got, Rejected)
    assert got.reason == reason


@pytest.mark.parametrize(
    ("label_time_ms", "reason"),
    [
        (-5, "label_time_out_of_range"),
        (NOW + 10 * 365 * 86_400_000, "label_time_out_of_range"),
        (NOW - 11 * 365 * 86_400_000, "label_time_out_of_range"),
        (1.0, "bad_type:label_time_ms"),
    ],
)
def test_label_times_are_bounded_like_event_times(label_time_ms, reason):
    raw = orjson.dumps({"tx_id": "t1", "label": 1, "label_time_ms": label_time_ms})
    got = parse_label(raw, now_ms=NOW, limits=LIMITS)
    assert isinstance(got, Rejected) and got.reason == reason
    too_big = b'{"tx_id": "t1", "label": 1, "label_time_ms": 18446744073709551615}'
    assert parse_label(too_big, now_ms=NOW, limits=LIMITS).reason == "label_time_out_of_range"  # type: ignore[union-attr]
    ok = parse_label(
        orjson.dumps({"tx_id": "t1", "label": 0, "label_time_ms": NOW}), now_ms=NOW, limits=LIMITS
    )
    assert isinstance(ok, Label)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "tx_id": _json,
        "event_time_ms": _json | st.integers(NOW - 2 * 86_400_000, NOW + 2 * 86_400_000),
        "account_id": _json,
        "amount": _json,
        "label": _json,
        "label_time_ms": _json,
        **{name: _json for name in OPTIONAL_FIELDS},
    },
)


def _dumps(value) -> bytes:
    # the standard library writes what orjson refuses (ints beyond 64 bits, NaN as a token)
    return json.dumps(value).encode()


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200) | _fields.map(_dumps) | _json.map(_dumps))
def test_validation_is_total(payload):
    """Any payload is either a valid record or a rejection with a reason; nothing raises."""
    for parse in (parse_transaction, parse_label):
        got = parse(payload, now_ms=NOW, limits=LIMITS)
        assert isinstance(got, Transaction | Label | Rejected)
        if isinstance(got, Rejected):
            assert got.reason
