"""Calendar arithmetic on business dates (local dates in the secretariat's time zone)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo


def local_date(moment: datetime, timezone: str) -> date:
    """The calendar date of `moment` in `timezone`."""
    return moment.astimezone(ZoneInfo(timezone)).date()


def add_years(day: date, years: int) -> date:
    """`day` moved by whole years; 29 February falls on 28 February in a common year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)
