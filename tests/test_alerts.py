"""Alert lines for a terminal, and tailing the alerts topic on a real broker."""

from __future__ import annotations

import asyncio
import io
import time

import orjson
import pytest

from fraudstream.alerts import atail, format_alert, tail
from fraudstream.kafka import KafkaSettings, aproduce, create_topics, produce
from fraudstream.schema import AlertRecord

T0 = 1_700_000_000_000


def _firing() -> AlertRecord:
    return {
        "schema_version": 1,
        "id": "score_psi/v0003/1700000000000",
        "kind": "score_drift",
        "severity": "warning",
        "detector": "score_psi",
        "statistic": 0.28712345,
        "threshold": 0.1,
        "window": {"events": 2000, "from_ms": T0, "to_ms": T0 + 1_999_000},
        "models": {"champion": "v0003", "challenger": "c0001"},
        "first_event_ms": T0,
        "last_event_ms": T0 + 1_999_000,
        "state": "firing",
        "runbook": "docs/runbook.md#score-drift",
        "detail": "PSI 0.287 over 2000 events",
    }


def _resolved_feature() -> AlertRecord:
    return {
        "schema_version": 1,
        "id": "feature_psi/v0003/amount/1700000000000",
        "kind": "feature_drift",
        "severity": "warning",
        "detector": "feature_psi",
        "statistic": 0.042,
        "threshold": 0.1,
        "window": {"events": 2000, "from_ms": T0 + 8_000_000, "to_ms": T0 + 9_999_000},
        "models": {"champion": "v0003", "challenger": None},
        "first_event_ms": T0,
        "last_event_ms": T0 + 9_999_000,
        "state": "resolved",
        "runbook": "docs/runbook.md#feature-drift",
        "feature": "amount",
    }


def test_format_alert_firing() -> None:
    assert format_alert(_firing()) == (
        "2023-11-14T22:46:39Z FIRING   warning  score_drift score_psi 0.2871 vs 0.1 over 2000 "
        "events [2023-11-14T22:13:20Z .. 2023-11-14T22:46:39Z] | models v0003/c0001 | "
        "PSI 0.287 over 2000 events | runbook docs/runbook.md#score-drift | "
        "id score_psi/v0003/1700000000000"
    )


def test_format_alert_resolved_feature_without_challenger() -> None:
    assert format_alert(_resolved_feature()) == (
        "2023-11-15T00:59:59Z RESOLVED warning  feature_drift[amount] feature_psi 0.042 vs 0.1 "
        "over 2000 events [2023-11-15T00:26:40Z .. 2023-11-15T00:59:59Z] | models v0003 | "
        "runbook docs/runbook.md#feature-drift | id feature_psi/v0003/amount/1700000000000"
    )


def test_format_alert_change_detector_and_label_windows() -> None:
    record = _firing() | {
        "detector": "error_adwin",
        "kind": "performance",
        "severity": "critical",
        "window": {"labels": 731, "to_ms": T0},
    }
    line = format_alert(record)
    assert "CRITICAL" not in line and " critical " in line
    assert "over 731 labels up to 2023-11-14T22:13:20Z |" in line
    quiet = format_alert(record | {"state": "resolved", "statistic": 10000.0, "threshold": 10000})
    assert " error_adwin 10000 vs 10000 over " in quiet


def test_format_alert_shows_what_it_cannot_read() -> None:
    line = format_alert({"schema_version": 2, "kind": "canary_halt", "statistic": float("nan")})
    assert line.startswith("? ?        ?        canary_halt ? nan vs ? over ? | models ? |")
    assert line.endswith("(schema version 2, this reader knows 1)")


# --- tail on the broker ------------------------------------------------------------------------


def _payloads() -> list[bytes]:
    return [orjson.dumps(_firing()), b"not json", orjson.dumps(_resolved_feature())]


def test_tail_prints_a_topic_and_stops_at_its_end(
    kafka_settings: KafkaSettings, unique_topic
) -> None:
    topic = unique_topic("alerts")
    create_topics(kafka_settings, {topic: 1})
    produce(kafka_settings, topic, _payloads())
    out = io.StringIO()
    assert tail(kafka_settings, topic, follow=False, from_beginning=True, out=out) == 3
    lines = out.getvalue().splitlines()
    assert lines[0] == format_alert(_firing())
    assert lines[1] == f"undecodable record at {topic}/0@1: b'not json'"
    assert lines[2] == format_alert(_resolved_feature())
    nothing_new = io.StringIO()
    assert tail(kafka_settings, topic, follow=False, from_beginning=False, out=nothing_new) == 0
    assert nothing_new.getvalue() == ""


def test_tail_follow_prints_new_alerts_until_cancelled(
    kafka_settings: KafkaSettings, unique_topic
) -> None:
    topic = unique_topic("alerts")
    create_topics(kafka_settings, {topic: 2})
    old = _firing() | {"id": "before-the-tail"}
    produce(kafka_settings, topic, [orjson.dumps(old)])
    new = [orjson.dumps(_firing()), orjson.dumps(_resolved_feature())]

    async def scenario() -> list[str]:
        out = io.StringIO()
        task = asyncio.create_task(
            atail(kafka_settings, topic, follow=True, from_beginning=False, out=out)
        )
        deadline = time.monotonic() + 30
        try:
            # The tail starts at the end offsets it finds, per partition: alerts sent before
            # it got there are not shown (and the two of one send can straddle that moment, one
            # per partition), so send until both kinds are shown.
            while len(set(out.getvalue().splitlines())) < 2:
                assert time.monotonic() < deadline, f"tail printed {out.getvalue()!r}"
                assert not task.done(), task.result()
                await aproduce(kafka_settings, topic, new)
                shown = len(set(out.getvalue().splitlines()))
                shown_by = time.monotonic() + 1.0
                while len(set(out.getvalue().splitlines())) == shown:
                    if time.monotonic() > shown_by:
                        break
                    await asyncio.sleep(0.02)  # poll the output, bounded by a deadline
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return out.getvalue().splitlines()

    lines = asyncio.run(scenario())
    assert len(lines) >= 2 and "before-the-tail" not in "".join(lines)
    assert set(lines) == {format_alert(_firing()), format_alert(_resolved_feature())}
