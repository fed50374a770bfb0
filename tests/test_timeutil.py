"""Time flags: instants, date-only ends that include their day, half-open windows."""

from __future__ import annotations

import pytest

from fraudstream.timeutil import (
    DAY_MS,
    format_time_ms,
    format_window,
    parse_end_ms,
    parse_time_ms,
    parse_window,
)

JUL25 = 1_532_476_800_000  # 2018-07-25T00:00:00Z
HOUR = 3_600_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1532476800000", JUL25),
        ("-1000", -1000),
        ("20180725", 20_180_725),  # digits are always epoch ms, never a compact date
        ("2018-07-25", JUL25),  # a date-only start is midnight UTC
        (" 2018-07-25 ", JUL25),
        ("2018-07-25T12:00", JUL25 + 12 * HOUR),  # naive means UTC
        ("2018-07-25 12:00:00.250", JUL25 + 12 * HOUR + 250),
        ("2018-07-25T12:00:00Z", JUL25 + 12 * HOUR),
        ("2018-07-25T12:00:00+02:00", JUL25 + 10 * HOUR),
        ("2018-07-24T22:00:00-02:00", JUL25),
    ],
)
def test_parse_time_ms(text, expected):
    assert parse_time_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-07-25", JUL25 + DAY_MS),  # a date-only end includes the whole day
        ("2018-07-25T00:00", JUL25),  # a time part is the exclusive instant itself
        ("2018-07-25T00:00:00+02:00", JUL25 - 2 * HOUR),
        ("1532476800000", JUL25),
    ],
)
def test_parse_end_ms(text, expected):
    assert parse_end_ms(text) == expected


def test_a_week_of_dates_is_seven_days_as_in_pandas_date_slicing():
    assert parse_window("2018-07-25", "2018-07-31") == (JUL25, JUL25 + 7 * DAY_MS)
    assert parse_window("2018-07-25", "2018-07-25") == (JUL25, JUL25 + DAY_MS)


def test_timestamps_stay_half_open():
    assert parse_window("2018-07-25T00:00", "2018-07-31T00:00") == (JUL25, JUL25 + 6 * DAY_MS)
    assert parse_window(str(JUL25), str(JUL25 + 1)) == (JUL25, JUL25 + 1)


def test_open_bounds_stay_open():
    assert parse_window(None, None) == (None, None)
    assert parse_window("2018-07-25", None) == (JUL25, None)
    assert parse_window(None, "2018-07-25") == (None, JUL25 + DAY_MS)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2018-07-31", "2018-07-30"),  # inverted
        ("2018-07-25T12:00", "2018-07-25T12:00"),  # empty
        ("2018-07-26", "2018-07-25T23:59:59"),
        (str(JUL25), str(JUL25)),
    ],
)
def test_empty_or_inverted_windows_are_refused(start, end):
    with pytest.raises(ValueError, match="empty window") as info:
        parse_window(start, end)
    assert repr(start) in str(info.value)  # the message names what was given


@pytest.mark.parametrize("text", ["", "yesterday", "2018-13-01", "2018-07-25T25:00", "1e12"])
def test_unparseable_times_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="is not a time: use epoch milliseconds"):
        parse_time_ms(text)
    with pytest.raises(ValueError, match="is not a time"):
        parse_window("2018-07-25", text)


def test_a_date_end_past_the_calendar_is_refused():
    with pytest.raises(ValueError, match="out of range"):
        parse_end_ms("9999-12-31")


def test_format():
    assert format_time_ms(JUL25) == "2018-07-25T00:00:00Z"
    assert format_time_ms(JUL25 + 5) == "2018-07-25T00:00:00.005Z"
    assert format_window(JUL25, JUL25 + DAY_MS) == "[2018-07-25T00:00:00Z, 2018-07-26T00:00:00Z)"
    assert format_window(None, JUL25) == "(-inf, 2018-07-25T00:00:00Z)"
    assert format_window(JUL25, None) == "[2018-07-25T00:00:00Z, +inf)"
