"""Reading the ``alerts`` topic: one readable line per alert record, and a terminal tail.

:func:`format_alert` renders an :class:`~fraudstream.schema.AlertRecord` (written by
``fraudstream.models.drift`` and the model rollout) as one line::

    2023-11-14T22:46:39Z FIRING   warning  score_drift score_psi 0.2871 vs 0.1 over 2000 events
    [2023-11-14T22:13:20Z .. 2023-11-14T22:46:39Z] | models v0003/c0001 | PSI 0.287 over 2000
    events; largest change: champion score >= 0.1183: 10.0% -> 23.4% | runbook
    docs/runbook.md#score-drift | id score_psi/v0003/1700000000000

(one line on a terminal; wrapped here). The time in front is the last event time the record
accounts for, not the wall clock. A record it cannot fully read (another schema version, missing
fields) is still shown, with ``?`` for what is missing, so that a tail never stops on one.

:func:`tail` (and :func:`atail`) print a topic with manual assignment of every partition, no
consumer group (the house style of :func:`fraudstream.kafka.aconsume`): nothing is committed, any
number of people can tail at once. Records of one partition come in offset order; partitions are
interleaved as fetched (the topic is keyed by alert ``id``, so both records of an episode share a
partition). A payload that is not a JSON object is printed as ``undecodable`` with its
coordinates.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
from aiokafka import TopicPartition

from fraudstream.kafka import KafkaSettings, _assign_all, _consumer
from fraudstream.schema import ALERT_SCHEMA_VERSION
from fraudstream.timeutil import format_time_ms

__all__ = ["atail", "format_alert", "tail"]


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))  # counts (quiet periods) in full, not 1e+04
    return f"{value:.4g}"


def _time(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return "?"
    return format_time_ms(value)


def _window(window: Any) -> str:
    if not isinstance(window, Mapping):
        return "?"
    parts = [f"{window[unit]} {unit}" for unit in ("events", "labels") if unit in window]
    lo, hi = window.get("from_ms"), window.get("to_ms")
    if lo is not None and hi is not None:
        parts.append(f"[{_time(lo)} .. {_time(hi)}]")
    elif hi is not None:
        parts.append(f"up to {_time(hi)}")
    return " ".join(parts) or "?"


def format_alert(record: Mapping[str, Any]) -> str:
    """One line for a terminal: when, state, severity, kind (and feature), detector, statistic
    vs threshold, window, models, detail, runbook link and episode id."""
    get = record.get
    kind = str(get("kind", "?"))
    if get("feature") is not None:
        kind = f"{kind}[{get('feature')}]"
    models = get("models")
    if isinstance(models, Mapping):
        pair = str(models.get("champion", "?"))
        if models.get("challenger") is not None:
            pair += f"/{models['challenger']}"
    else:
        pair = "?"
    line = (
        f"{_time(get('last_event_ms'))} {str(get('state', '?')).upper():<8} "
        f"{get('severity', '?')!s:<8} {kind} {get('detector', '?')} "
        f"{_number(get('statistic'))} vs {_number(get('threshold'))} "
        f"over {_window(get('window'))} | models {pair}"
    )
    if get("detail"):
        line += f" | {get('detail')}"
    line += f" | runbook {get('runbook', '?')} | id {get('id', '?')}"
    version = get("schema_version")
    if version != ALERT_SCHEMA_VERSION:
        line += f" (schema version {version!r}, this reader knows {ALERT_SCHEMA_VERSION})"
    return line


def _line(tp: TopicPartition, offset: int, value: bytes | None) -> str:
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        shown = (value or b"")[:80]
        return f"undecodable record at {tp.topic}/{tp.partition}@{offset}: {shown!r}"
    return format_alert(record)


async def atail(
    settings: KafkaSettings,
    topic: str,
    *,
    follow: bool,
    from_beginning: bool,
    out: TextIO = sys.stdout,
    timeout_s: float = 30,
) -> int:
    """Print ``topic``'s alerts to ``out``, one line each; return how many were printed.

    ``from_beginning``: start at the earliest offsets, else at the end (only new alerts).
    ``follow``: keep printing new alerts until cancelled (Ctrl-C); else stop at the end offsets
    found at the start. ``timeout_s`` bounds the metadata look-ups and, without ``follow``, the
    whole read (:class:`TimeoutError`).
    """
    deadline = time.monotonic() + timeout_s
    consumer = _consumer(settings)
    await consumer.start()
    printed = 0
    try:
        ends = await _assign_all(consumer, topic, deadline, from_beginning=from_beginning)
        pending = set(ends)
        while True:
            if not follow:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    return printed
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"tail({topic!r}) printed {printed} alerts in {timeout_s}s without "
                        f"reaching the end offsets"
                    )
            batches = await consumer.getmany(timeout_ms=200)
            for tp in sorted(batches, key=lambda p: p.partition):
                for message in batches[tp]:
                    print(_line(tp, message.offset, message.value), file=out, flush=True)
                    printed += 1
    finally:
        await consumer.stop()


def tail(
    settings: KafkaSettings,
    topic: str,
    *,
    follow: bool,
    from_beginning: bool,
    out: TextIO = sys.stdout,
    timeout_s: float = 30,
) -> int:
    """Sync form of :func:`atail` (Ctrl-C ends a ``follow``)."""
    return asyncio.run(
        atail(
            settings,
            topic,
            follow=follow,
            from_beginning=from_beginning,
            out=out,
            timeout_s=timeout_s,
        )
    )
