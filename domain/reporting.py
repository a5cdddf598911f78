"""The reporting rule: a progress report every two years, and what counts as overdue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from domain.calendar import add_years
from domain.regulations import first_reporting_regulations

# A membership whose report is more than this many days overdue is flagged for review.
REVIEW_AFTER_DAYS = 180


def report_due(admitted_on: date, cycle: int) -> date:
    """Report `cycle` falls due 2k years after admission, or after the reporting rule began."""
    rules = first_reporting_regulations()
    assert rules.report_every_years is not None
    start = max(admitted_on, rules.effective_from)
    return add_years(start, rules.report_every_years * cycle)


@dataclass(frozen=True)
class Deadline:
    """One reporting cycle of a membership, as seen on a given day."""

    cycle: int
    due: date
    submitted_on: date | None
    late: bool | None
    status: str  # upcoming, submitted, overdue

    def days_overdue(self, today: date) -> int:
        return max(0, (today - self.due).days) if self.status == "overdue" else 0


def deadlines(
    admitted_on: date, submitted: list[date], today: date, ended_on: date | None = None
) -> list[Deadline]:
    """The cycles listed for a membership on `today`: every cycle due up to then plus the first
    due after it (for an ended membership, those due up to its end), and every reported cycle.

    `submitted` are the report dates in cycle order; a report dated after `today` does not count.
    """
    reported = [d for d in submitted if d <= today]
    horizon = min(today, ended_on) if ended_on else today
    listed: list[Deadline] = []
    cycle = 1
    while True:
        due = report_due(admitted_on, cycle)
        if cycle <= len(reported):
            on = reported[cycle - 1]
            listed.append(Deadline(cycle, due, on, on > due, "submitted"))
        elif due <= horizon:
            status = "overdue" if today > due else "upcoming"
            listed.append(Deadline(cycle, due, None, None, status))
        else:
            if ended_on is None:
                listed.append(Deadline(cycle, due, None, None, "upcoming"))
            return listed
        cycle += 1


def next_report_due(admitted_on: date, submitted: list[date], today: date) -> date:
    """The due date of the earliest cycle without a report on `today`, even if it is past."""
    return report_due(admitted_on, len([d for d in submitted if d <= today]) + 1)
