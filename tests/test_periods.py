"""Periods and due-ness: pure functions, driven by explicit instants (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from newsletter.errors import ConfigError
from newsletter.periods import (
    Schedule,
    due_period,
    next_send_at,
    period_key,
    period_length,
    period_of,
    periods_spanned,
)

SEVEN = time(7, 0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def minutes(start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += timedelta(minutes=1)
    return out


@pytest.mark.parametrize(
    ("tz", "local_seven_in_utc"),
    [
        ("UTC", utc(2026, 6, 15, 7, 0)),
        ("Europe/Berlin", utc(2026, 6, 15, 5, 0)),  # CEST, UTC+2
        ("America/Los_Angeles", utc(2026, 6, 15, 14, 0)),  # PDT, UTC-7
        ("Asia/Kolkata", utc(2026, 6, 15, 1, 30)),  # IST, UTC+5:30
    ],
)
def test_daily_due_exactly_at_local_send_time_once_per_day(
    tz: str, local_seven_in_utc: datetime
) -> None:
    s = Schedule(timezone=tz)
    # From 01:00 local, walk 36 hours minute by minute, as the scheduler's send job does, recording
    # a digest the first time one is due: exactly one per local day, at 07:00 local.
    sent: dict[str, datetime] = {}
    for now in minutes(
        local_seven_in_utc - timedelta(hours=6), local_seven_in_utc + timedelta(hours=30)
    ):
        period = due_period(s, now, SEVEN, "UTC")
        if period is not None and period not in sent:
            sent[period] = now
    assert list(sent.values()) == [local_seven_in_utc, local_seven_in_utc + timedelta(days=1)]
    assert list(sent) == ["2026-06-15", "2026-06-16"]


def test_period_is_the_local_day_not_the_utc_day() -> None:
    kolkata = Schedule(timezone="Asia/Kolkata")
    la = Schedule(timezone="America/Los_Angeles")
    now = utc(2026, 6, 15, 20, 0)  # 01:30 next day in Kolkata, 13:00 in Los Angeles
    assert period_key(kolkata, now, "UTC") == "2026-06-16"
    assert period_key(la, now, "UTC") == "2026-06-15"


def test_defaults_apply_when_the_profile_says_nothing() -> None:
    s = Schedule()
    assert due_period(s, utc(2026, 6, 15, 8, 59), time(9, 0), "Europe/Berlin") == "2026-06-15"
    assert due_period(s, utc(2026, 6, 15, 6, 59), time(9, 0), "Europe/Berlin") is None


def test_spring_forward_skipped_send_time_is_due_when_the_clock_jumps() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    s = Schedule(timezone="Europe/Berlin", send_time=time(2, 30))
    sent: dict[str, datetime] = {}
    for now in minutes(utc(2026, 3, 28, 12, 0), utc(2026, 3, 30, 12, 0)):
        period = due_period(s, now, SEVEN, "UTC")
        if period and period not in sent:
            sent[period] = now
    assert sent == {
        "2026-03-28": utc(2026, 3, 28, 12, 0),  # 13:00 local, already past 02:30 that day
        "2026-03-29": utc(2026, 3, 29, 1, 0),  # the jump: 01:59 CET -> 03:00 CEST
        "2026-03-30": utc(2026, 3, 30, 0, 30),  # 02:30 CEST again
    }
    assert next_send_at(s, utc(2026, 3, 28, 12, 0), SEVEN, "UTC") == utc(2026, 3, 29, 1, 0)


def test_fall_back_repeated_send_time_is_due_once_at_its_first_occurrence() -> None:
    # America/Los_Angeles, 2026-11-01: 02:00 PDT falls back to 01:00 PST (09:00 UTC),
    # so 01:30 happens twice: 08:30 UTC and 09:30 UTC.
    s = Schedule(timezone="America/Los_Angeles", send_time=time(1, 30))
    sent: dict[str, datetime] = {}
    for now in minutes(utc(2026, 11, 1, 7, 0), utc(2026, 11, 2, 7, 0)):
        period = due_period(s, now, SEVEN, "UTC")
        if period and period not in sent:
            sent[period] = now
    assert sent == {"2026-11-01": utc(2026, 11, 1, 8, 30)}
    assert next_send_at(s, utc(2026, 11, 1, 7, 0), SEVEN, "UTC") == utc(2026, 11, 1, 8, 30)


def test_dst_day_in_berlin_at_normal_time_is_due_once() -> None:
    # The day clocks change, 07:00 local is 05:00 UTC (CEST), the day before 06:00 (CET).
    s = Schedule(timezone="Europe/Berlin")
    sent: dict[str, datetime] = {}
    for now in minutes(utc(2026, 3, 28, 0, 0), utc(2026, 3, 30, 0, 0)):
        period = due_period(s, now, SEVEN, "UTC")
        if period and period not in sent:
            sent[period] = now
    assert sent == {"2026-03-28": utc(2026, 3, 28, 6, 0), "2026-03-29": utc(2026, 3, 29, 5, 0)}


def test_weekly_due_on_its_weekday_and_caught_up_later_that_week() -> None:
    s = Schedule(frequency="weekly", weekday=2, timezone="Europe/Berlin")  # Wednesday
    # 2026-06-15 is a Monday; ISO week 25.
    assert due_period(s, utc(2026, 6, 16, 12, 0), SEVEN, "UTC") is None  # Tuesday
    assert due_period(s, utc(2026, 6, 17, 4, 59), SEVEN, "UTC") is None  # Wed 06:59 CEST
    assert due_period(s, utc(2026, 6, 17, 5, 0), SEVEN, "UTC") == "2026-W25"
    # Down on Wednesday, back on Friday: still this week's digest, and only one.
    assert due_period(s, utc(2026, 6, 19, 12, 0), SEVEN, "UTC") == "2026-W25"
    assert due_period(s, utc(2026, 6, 19, 12, 0), SEVEN, "UTC") in {"2026-W25"}  # already sent
    # Next Monday is a new week whose Wednesday has not come yet.
    assert due_period(s, utc(2026, 6, 22, 12, 0), SEVEN, "UTC") is None
    assert next_send_at(s, utc(2026, 6, 19, 12, 0), SEVEN, "UTC") == utc(2026, 6, 24, 5, 0)


def test_iso_week_keys_at_year_boundaries() -> None:
    assert period_of("weekly", datetime(2026, 12, 31).date()) == "2026-W53"
    assert period_of("weekly", datetime(2027, 1, 1).date()) == "2026-W53"
    assert period_of("weekly", datetime(2027, 1, 4).date()) == "2027-W01"
    assert period_of("daily", datetime(2027, 1, 1).date()) == "2027-01-01"


def test_period_length_and_input_checks() -> None:
    assert period_length("daily") == timedelta(days=1)
    assert period_length("weekly") == timedelta(days=7)
    with pytest.raises(ValueError, match="naive"):
        period_key(Schedule(), datetime(2026, 1, 1), "UTC")
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        period_key(Schedule(timezone="Mars/Olympus"), utc(2026, 1, 1), "UTC")


def test_next_send_at_daily() -> None:
    s = Schedule(timezone="Asia/Kolkata", send_time=time(8, 15))
    assert next_send_at(s, utc(2026, 6, 15, 0, 0), SEVEN, "UTC") == utc(2026, 6, 15, 2, 45)
    assert next_send_at(s, utc(2026, 6, 15, 2, 45), SEVEN, "UTC") == utc(2026, 6, 16, 2, 45)


def test_periods_spanned_rounds_to_whole_periods_and_is_at_least_one() -> None:
    t = utc(2026, 3, 2, 8)
    assert periods_spanned("daily", t, t) == 1
    assert periods_spanned("daily", t, t + timedelta(hours=20)) == 1
    assert periods_spanned("daily", t, t + timedelta(hours=30)) == 1
    assert periods_spanned("daily", t, t + timedelta(hours=37)) == 2
    assert periods_spanned("weekly", t, t + timedelta(days=7, hours=3)) == 1
    assert periods_spanned("weekly", t, t + timedelta(days=15)) == 2
