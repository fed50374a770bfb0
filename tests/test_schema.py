"""Schema v1 validation: every field rule, on raw payloads and decoded records alike."""

from __future__ import annotations

import orjson
import pytest

from fraudstream.schema import (
    OPTIONAL_FIELDS,
    Limits,
    Rejected,
    Transaction,
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
    ],
)
def test_invalid_fields_are_rejected_with_their_reason(change, reason):
    got = _parse({**GOOD, **change})
    assert isinstance(got, Rejected)
    assert got.reason == reason
