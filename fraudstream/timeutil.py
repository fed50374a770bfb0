"""Time flags: how an instant or a window given on the command line becomes epoch milliseconds.

An instant is written as

* epoch milliseconds: ``1532476800000`` (any string of digits, so ``20180725`` is a time in 1970);
* an ISO datetime: ``2018-07-25T12:00``, ``2018-07-25 12:00:00.250``, ``2018-07-25T12:00+02:00``
  (UTC unless it carries an offset);
* an ISO date: ``2018-07-25``, read as midnight UTC at the start of that day.

Windows are half-open, ``[from, to)``. Only a date-only *end* is read differently: it includes the
whole of that day, as pandas' date slicing does, so ``2018-07-25`` to ``2018-07-31`` is seven days
and ends at ``2018-08-01T00:00:00Z``. An end with a time part, or in epoch milliseconds, is the
exclusive instant itself. A window whose end is not after its start is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import overload

__all__ = [
    "DAY_MS",
    "format_time_ms",
    "format_window",
    "parse_end_ms",
    "parse_time_ms",
    "parse_window",
]

DAY_MS = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS = re.compile(r"-?[0-9]+")
_FORMS = "epoch milliseconds, an ISO date (2018-07-25) or datetime (2018-07-25T12:00:00+02:00)"


def _date_only(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # exact integer arithmetic: a float timestamp can be off by one millisecond
    return (value - _EPOCH) // timedelta(milliseconds=1)


def parse_time_ms(text: str) -> int:
    """An instant: epoch ms, or an ISO date/datetime (UTC unless it has an offset).

    A date-only string is the start of that day (UTC). Raises ``ValueError`` naming the text.
    """
    value = text.strip()
    if _EPOCH_MS.fullmatch(value):
        return int(value)
    try:
        return _to_ms(datetime.fromisoformat(value))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time: use {_FORMS}") from exc


def parse_end_ms(text: str) -> int:
    """The exclusive end of a window: a date-only string means the end of that day (UTC)."""
    day = _date_only(text.strip())
    if day is None:
        return parse_time_ms(text)
    try:
        return _to_ms(datetime.combine(day + timedelta(days=1), datetime.min.time()))
    except OverflowError as exc:
        raise ValueError(f"{text!r}: the day after it is out of range") from exc


@overload
def parse_window(from_text: str, to_text: str) -> tuple[int, int]: ...


@overload
def parse_window(from_text: str | None, to_text: str | None) -> tuple[int | None, int | None]: ...


def parse_window(from_text: str | None, to_text: str | None) -> tuple[int | None, int | None]:
    """``[from, to)`` in epoch ms; a missing bound stays ``None`` (open).

    ``from_text`` is read with :func:`parse_time_ms` and ``to_text`` with :func:`parse_end_ms`.
    Raises ``ValueError`` when a bound does not parse or the window is empty or inverted.
    """
    from_ms = None if from_text is None else parse_time_ms(from_text)
    to_ms = None if to_text is None else parse_end_ms(to_text)
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ValueError(
            f"empty window: {from_text!r} to {to_text!r} resolves to "
            f"{format_window(from_ms, to_ms)}; the end must come after the start"
        )
    return from_ms, to_ms


def format_time_ms(ms: int) -> str:
    """ISO 8601 UTC with a ``Z``; milliseconds shown only when there are some."""
    try:
        value = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms} ms"
    spec = "milliseconds" if ms % 1000 else "seconds"
    return value.isoformat(timespec=spec).replace("+00:00", "Z")


def format_window(from_ms: int | None, to_ms: int | None) -> str:
    """``[from, to)`` in ISO UTC; an open bound is written ``-inf`` or ``+inf``."""
    lo = "(-inf" if from_ms is None else f"[{format_time_ms(from_ms)}"
    hi = "+inf)" if to_ms is None else f"{format_time_ms(to_ms)})"
    return f"{lo}, {hi}"
