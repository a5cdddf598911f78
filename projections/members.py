"""`members`: one row per city with its membership periods and report dates; and `contacts`:
the mayor and contact person each city gave in its latest contact update, as stored (personal
values sealed, see domain/personal.py). Those a city gave in its application's form are read from
the form itself (infrastructure/views.py, `with_contacts`): a row per person of every application
would cost every rebuild. `contacts` is folded with `members` (it reads city events too), so a
rebuild reads the log for it in the same pass."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any

from domain.cities import City, city_status, membership_status
from projections.base import Projection, Row, text_id


@lru_cache(maxsize=16384)  # a few thousand days: one date object each, shared by the rows
def _day(iso: str | None) -> date | None:
    return date.fromisoformat(iso) if iso else None


def _summarise(row: Row) -> None:
    """Set the summary columns from the periods: the latest period not retracted counts."""
    periods = [p for p in row["memberships"] if not p["retracted"]]
    current = periods[-1] if periods else None
    row["periods"] = len(periods)
    row["status"] = city_status(membership_status(p["retracted"], p["ended_on"] is not None)
                                for p in row["memberships"])
    row["period"] = current["period"] if current else None
    row["admitted_on"] = _day(current["admitted_on"]) if current else None
    row["intake_year"] = current["intake_year"] if current else None
    row["ended_on"] = _day(current["ended_on"]) if current else None
    row["reports"] = list(current["reports"]) if current else []


class MembersProjection(Projection):
    name = "members"
    table = "members"
    keys = {"members": ("city_id",), "contacts": ("city_id", "person")}

    def _registered(self, e: City.Registered) -> None:
        self.put(self.table, {
            "city_id": text_id(e.originator_id), "name": e.name, "country": self.same(e.country),
            "status": "applicant", "period": None, "admitted_on": None, "intake_year": None,
            "ended_on": None, "periods": 0, "reports": [], "memberships": [],
        })

    def _membership(self, e: Any) -> tuple[Row, dict[str, Any]]:
        row = self.touch(self.table, text_id(e.originator_id))
        return row, row["memberships"][e.period - 1]

    def _started(self, e: City.MembershipStarted) -> None:
        row = self.touch(self.table, text_id(e.originator_id))
        row["memberships"] = [*row["memberships"], {
            "period": e.period, "intake_year": self.same(e.intake_year),
            "admitted_on": self.same(e.admitted_on.isoformat()), "ended_on": None,
            "retracted": False,
            "reports": [],
        }]
        _summarise(row)

    def _retracted(self, e: City.MembershipRetracted) -> None:
        row, membership = self._membership(e)
        membership["retracted"] = True
        _summarise(row)

    def _reported(self, e: City.ReportSubmitted) -> None:
        row, membership = self._membership(e)
        membership["reports"] = [*membership["reports"], self.same(e.submitted_on.isoformat())]
        _summarise(row)

    def _ended(self, e: City.MembershipEnded) -> None:
        row, membership = self._membership(e)
        membership["ended_on"] = self.same(e.ended_on.isoformat())
        _summarise(row)

    def _contact_updated(self, e: City.ContactUpdated) -> None:
        if "contacts" not in self.tables:  # `deadlines`: the same handlers, not this table
            return
        self.put("contacts", {"city_id": text_id(e.originator_id), "person": e.person,
                              "since": self.day(e.effective_at), "source": "update",
                              "details": e.details})

    handlers = {
        City.Registered: _registered,
        City.MembershipStarted: _started,
        City.MembershipRetracted: _retracted,
        City.ReportSubmitted: _reported,
        City.MembershipEnded: _ended,
        City.ContactUpdated: _contact_updated,
    }


class DeadlinesProjection(MembersProjection):
    """`deadlines`: the same periods and report dates, kept for the deadline list; the cycles
    themselves depend on the day asked about and are listed when asked (domain.reporting)."""

    name = "deadlines"
    table = "deadlines"
    keys = {"deadlines": ("city_id",)}
