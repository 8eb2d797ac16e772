"""When a subscriber's digest is due, and which period it belongs to. Pure: no I/O.

A period is the unit of exactly-once delivery: the local day ``"2026-03-29"`` for daily
subscribers, the ISO week ``"2026-W13"`` for weekly ones, both in the subscriber's own
timezone. Due-ness compares *wall-clock* time in that timezone, which makes DST days
behave as a person expects: a ``send_time`` inside the hour skipped in spring is due as
soon as the clock jumps past it, and one inside the hour repeated in autumn is due at its
first occurrence — and in both cases only once, because the period key is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import ConfigError


class Schedulable(Protocol):
    """What due-ness needs of a subscriber; ``domain.Profile`` satisfies it."""

    @property
    def frequency(self) -> str: ...
    @property
    def weekday(self) -> int: ...
    @property
    def send_time(self) -> time | None: ...
    @property
    def timezone(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Schedule:
    """The scheduling fields of a subscriber, without the rest of the profile."""

    frequency: str = "daily"
    weekday: int = 0  # 0 = Monday, for weekly subscribers
    send_time: time | None = None
    timezone: str | None = None


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """A cached ``ZoneInfo``; an unknown name is a configuration error."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"unknown timezone {name!r}") from e


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware instant (e.g. datetime.now(UTC))")
    return now


def local_now(s: Schedulable, now: datetime, default_tz: str) -> datetime:
    """``now`` as the subscriber's wall clock."""
    return _aware(now).astimezone(zone(s.timezone or default_tz))


def period_of(frequency: str, day: date) -> str:
    """The period key of a local date: ``YYYY-MM-DD``, or ``YYYY-Www`` for weekly."""
    if frequency == "weekly":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return day.isoformat()


def period_key(s: Schedulable, now: datetime, default_tz: str) -> str:
    """The subscriber's current period at the instant ``now``."""
    return period_of(s.frequency, local_now(s, now, default_tz).date())


def send_day(s: Schedulable, local_day: date) -> date:
    """The local date on which the period containing ``local_day`` is sent."""
    if s.frequency == "weekly":
        monday = local_day - timedelta(days=local_day.weekday())
        return monday + timedelta(days=s.weekday % 7)
    return local_day


def due_period(
    s: Schedulable, now: datetime, default_send_time: time, default_tz: str
) -> str | None:
    """The current period if its send moment has passed at ``now``, else ``None``.

    Daily: today's local ``send_time`` has passed. Weekly: the week's ``weekday`` at
    ``send_time`` has passed — so a scheduler that was down on Monday still sends that
    week's digest on Tuesday (catch-up), but never a second one that week.
    """
    local = local_now(s, now, default_tz)
    today = local.date()
    at = s.send_time or default_send_time
    day = send_day(s, today)
    wall = local.replace(tzinfo=None)
    if wall >= datetime.combine(day, at):
        return period_of(s.frequency, today)
    return None


def period_day(period: str, s: Schedulable) -> date:
    """The local date a period's digest is dated: the day, or the week's send day."""
    if "-W" in period:
        year, week = period.split("-W")
        return send_day(s, date.fromisocalendar(int(year), int(week), 1))
    return date.fromisoformat(period)


def send_moment(s: Schedulable, day: date, default_send_time: time, default_tz: str) -> datetime:
    """When the digest dated ``day`` is due: the subscriber's send time in their zone.

    The ``Date`` of a preview, and the end of the window ``preview`` shows.
    """
    return datetime.combine(day, s.send_time or default_send_time, zone(s.timezone or default_tz))


def period_length(frequency: str) -> timedelta:
    """How far back a first digest looks: one day, or one week for weekly subscribers."""
    return timedelta(days=7) if frequency == "weekly" else timedelta(days=1)


def periods_spanned(frequency: str, start: datetime, end: datetime) -> int:
    """How many periods a window of new entries covers, at least one, to the nearest.

    A digest's ``max_items`` is per period: the digest that catches up on a failed or
    superseded one spans two periods and may carry twice as many, so a failure never
    costs a subscriber the entries that only missed their own digest.
    """
    return max(1, int((end - start) / period_length(frequency) + 0.5))


def next_send_at(
    s: Schedulable, now: datetime, default_send_time: time, default_tz: str
) -> datetime:
    """The next UTC instant at which a new period becomes due (for ``status``).

    A wall-clock time skipped by a DST jump resolves to the instant after the jump.
    """
    tz = zone(s.timezone or default_tz)
    local = local_now(s, now, default_tz)
    at = s.send_time or default_send_time
    step = timedelta(days=7) if s.frequency == "weekly" else timedelta(days=1)
    day = send_day(s, local.date())
    wall = local.replace(tzinfo=None)
    while datetime.combine(day, at) <= wall:
        day += step
    return _first_instant_at_or_after(datetime.combine(day, at), tz)


def _first_instant_at_or_after(naive: datetime, tz: ZoneInfo) -> datetime:
    """The first UTC instant whose wall clock in ``tz`` reads ``naive`` or later.

    Usually ``naive`` itself; for a wall time skipped by a DST jump it is the jump.
    """
    late = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if late.astimezone(tz).replace(tzinfo=None) == naive:
        early = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return min(early, late) if early.astimezone(tz).replace(tzinfo=None) == naive else late
    # In a gap: fold=1 lands before the jump, fold=0 after it; bisect on whole seconds.
    lo = int(naive.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    hi = int(late.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
