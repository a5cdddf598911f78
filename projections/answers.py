"""The answers to staff queries, computed the same way from stored rows or from a replay."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from domain.errors import InvalidInput
from domain.reporting import REVIEW_AFTER_DAYS, deadlines, next_report_due
from projections.base import Row

MEMBER_STATUSES = {"active": ("active",), "ended": ("ended",), "all": ("active", "ended")}


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


def _dates(values: Iterable[Any]) -> list[date]:
    return [d for d in (_date(v) for v in values) if d is not None]


def members(rows: Iterable[Row], today: date, country: str | None = None,
            status: str = "active") -> list[Row]:
    """Members with the reporting state on `today`: next report due, days overdue, review flag."""
    answer = []
    for row in rows:
        if row["status"] not in MEMBER_STATUSES[status]:
            continue
        if country and row["country"] != country:
            continue
        admitted_on = _date(row["admitted_on"])
        assert admitted_on is not None
        reports = [d for d in _dates(row["reports"]) if d <= today]
        active = row["status"] == "active"
        due = next_report_due(admitted_on, reports, today) if active else None
        overdue = max(0, (today - due).days) if due else None
        answer.append({
            "city_id": row["city_id"], "name": row["name"], "country": row["country"],
            "status": row["status"], "admitted_on": admitted_on,
            "intake_year": row["intake_year"], "periods": row["periods"],
            "reports_submitted": len(reports), "next_report_due": due,
            "days_overdue": overdue,
            "flagged_for_review": bool(overdue and overdue > REVIEW_AFTER_DAYS),
            "ended_on": _date(row["ended_on"]),
        })
    return sorted(answer, key=lambda r: (r["country"], r["name"], r["city_id"]))


def deadline_list(rows: Iterable[Row], today: date, overdue: bool = False,
                  due_before: date | None = None, country: str | None = None) -> list[Row]:
    """One row per membership and reporting cycle, as listed on `today`."""
    answer = []
    for row in rows:
        if country and row["country"] != country:
            continue
        for membership in row["memberships"]:
            if membership["retracted"]:
                continue
            admitted_on = _date(membership["admitted_on"])
            assert admitted_on is not None
            ended_on = _date(membership["ended_on"])
            for deadline in deadlines(admitted_on, _dates(membership["reports"]), today,
                                      ended_on):
                if overdue and deadline.status != "overdue":
                    continue
                if due_before and not deadline.due < due_before:
                    continue
                answer.append({
                    "city_id": row["city_id"], "name": row["name"], "country": row["country"],
                    "period": membership["period"], "cycle": deadline.cycle,
                    "due": deadline.due, "submitted_on": deadline.submitted_on,
                    "late": deadline.late, "status": deadline.status,
                    "days_overdue": deadline.days_overdue(today),
                })
    return sorted(answer, key=lambda r: (r["due"], r["country"], r["name"], r["period"]))


def quotas(rows: Iterable[Row], year: int | None = None,
           country: str | None = None) -> list[Row]:
    answer = []
    for row in rows:
        if (year and row["year"] != year) or (country and row["country"] != country):
            continue
        limit = row["limit"]
        answer.append({
            "country": row["country"], "year": row["year"], "limit": limit,
            "admitted": row["admitted"], "retracted": row["retracted"],
            "remaining": None if limit is None else limit - row["admitted"],
            "pending": row["pending"],
        })
    return sorted(answer, key=lambda r: (r["year"], r["country"]))


def applications(rows: Iterable[Row], year: int | None = None, status: str | None = None,
                 country: str | None = None) -> list[Row]:
    answer = [
        {k: (_date(v) if k.endswith("_on") else v) for k, v in row.items()}
        for row in rows
        if not (year and row["intake_year"] != year)
        and not (status and row["status"] != status)
        and not (country and row["country"] != country)
    ]
    return sorted(answer, key=lambda r: (r["intake_year"], r["country"], r["city"],
                                         r["application_id"]))


# --- pages of an answer ----------------------------------------------------------------------

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

# Each list's order: a key that is unique per row, so that a cursor names one place in it.
ORDER = {
    "members": ("country", "name", "city_id"),
    "quotas": ("year", "country"),
    "deadlines": ("due", "country", "name", "city_id", "period", "cycle"),
    "applications": ("intake_year", "country", "city", "application_id"),
}

# Whole-number sort fields; the rest compare as text (dates as ISO dates, ids as UUID text).
NUMBERS = frozenset({"year", "intake_year", "period", "cycle"})

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Page:
    """Part of an answer: up to `limit` rows after the cursor, the answer's size, and the cursor
    of the next page (None on the last)."""

    items: list[Row]
    total: int
    next_cursor: str | None


def page(rows: Sequence[Row], order: str, limit: int = DEFAULT_LIMIT,
         cursor: str | None = None) -> Page:
    """The rows after `cursor` in the list's order. The cursor is the last row's sort key, not
    an offset: rows added or removed before it do not shift the next page."""
    fields = ORDER[order]
    keyed = sorted(((_key(row, fields), row) for row in rows), key=lambda pair: pair[0])
    after = _decoded(cursor, fields) if cursor else None
    following = [pair for pair in keyed if after is None or pair[0] > after]
    chosen = following[:limit]
    more = len(following) > limit
    return Page([row for _, row in chosen], len(rows),
                _encoded(chosen[-1][0]) if more and chosen else None)


def _key(row: Row, fields: tuple[str, ...]) -> Key:
    return tuple(int(row[f]) if f in NUMBERS else _text(row[f]) for f in fields)


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _encoded(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def _decoded(cursor: str, fields: tuple[str, ...]) -> Key:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        key = None
    if not (isinstance(key, list) and len(key) == len(fields)
            and all(type(v) is (int if f in NUMBERS else str) for v, f in zip(key, fields,
                                                                               strict=True))):
        raise InvalidInput("cursor must be a next_cursor this list gave", field="cursor")
    return tuple(key)
