"""The intakes (calls for applications): one a year, at most one open at any time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.domain import Aggregate

from domain.acts import Act, AuditedAggregate
from domain.calendar import local_date
from domain.errors import InvalidInput, InvalidTransition, NotFound, WindowClosed
from domain.regulations import regulations_on

CALENDAR_ID = uuid5(NAMESPACE_URL, "gnlc:intake-calendar")


@dataclass
class Intake:
    """The intake of one year and its window (calendar dates, both bounds inclusive)."""

    year: int
    opens: date
    closes: date
    timezone: str
    regulation_version: str

    def contains(self, day: date) -> bool:
        return self.opens <= day <= self.closes

    def overlaps(self, opens: date, closes: date) -> bool:
        return self.opens <= closes and opens <= self.closes


class IntakeCalendar(AuditedAggregate):
    """Every intake the secretariat opened; one aggregate so that windows never overlap."""

    class Created(AuditedAggregate.Event, Aggregate.Created):
        pass

    def __init__(self, **_audit: Any) -> None:
        self.intakes: dict[int, Intake] = {}

    @classmethod
    def start(cls, act: Act) -> IntakeCalendar:
        return cls._create(cls.Created, id=CALENDAR_ID, **act.event_fields())

    class IntakeOpened(AuditedAggregate.Event):
        year: int
        opens: date
        closes: date
        timezone: str
        regulation_version: str

        def apply(self, calendar: IntakeCalendar) -> None:
            calendar.intakes[self.year] = Intake(
                self.year, self.opens, self.closes, self.timezone, self.regulation_version
            )

    class IntakeExtended(AuditedAggregate.Event):
        year: int
        previous_closes: date
        closes: date
        reason: str

        def apply(self, calendar: IntakeCalendar) -> None:
            calendar.intakes[self.year].closes = self.closes

    def open_intake(
        self, act: Act, year: int, opens: date | None = None, closes: date | None = None
    ) -> Intake:
        """Open the intake of `year`; by default the window of the rules in force on 1 January."""
        if not 1900 <= year <= 9998:
            raise InvalidInput(f"year {year} is out of range", field="year")
        if year in self.intakes:
            raise InvalidTransition(f"the intake of {year} is already open", field="year")
        regulations = regulations_on(date(year, 1, 1))
        default_opens, default_closes = regulations.default_window(year)
        opens = opens or default_opens
        closes = closes or default_closes
        if opens.year != year:
            raise InvalidInput(f"the intake of {year} must open in {year}", field="opens")
        if closes < opens:
            raise InvalidInput("the window must close on or after the day it opens", field="closes")
        self._refuse_overlap(year, opens, closes)
        self.trigger_event(
            self.IntakeOpened,
            year=year,
            opens=opens,
            closes=closes,
            timezone=act.timezone,
            regulation_version=regulations.version,
            **act.event_fields(),
        )
        return self.intakes[year]

    def extend_intake(self, act: Act, year: int, closes: date, reason: str) -> Intake:
        """Move the close of `year`'s window later, for a recorded reason."""
        intake = self.intake(year)
        if closes <= intake.closes:
            raise InvalidInput(
                f"the new close {closes} must be after the current close {intake.closes}",
                field="closes",
            )
        if not reason.strip():
            raise InvalidInput("an extension needs a reason", field="reason")
        self._refuse_overlap(year, intake.opens, closes)
        self.trigger_event(
            self.IntakeExtended,
            year=year,
            previous_closes=intake.closes,
            closes=closes,
            reason=reason,
            **act.event_fields(),
        )
        return intake

    def intake(self, year: int) -> Intake:
        try:
            return self.intakes[year]
        except KeyError:
            raise NotFound(f"no intake of {year} has been opened", field="year") from None

    def intake_open_on(self, act: Act) -> Intake:
        """The intake whose window contains the act's business date (one at most)."""
        for intake in self.intakes.values():
            if intake.contains(local_date(act.effective_at, intake.timezone)):
                return intake
        raise WindowClosed(f"no intake is open on {act.day.isoformat()}")

    def check_open(self, year: int, act: Act) -> Intake:
        """Refuse the act unless the intake of `year` is open at its time."""
        intake = self.intakes.get(year)
        if intake is None or not intake.contains(local_date(act.effective_at, intake.timezone)):
            raise WindowClosed(f"the intake of {year} is not open on {act.day.isoformat()}")
        return intake

    def _refuse_overlap(self, year: int, opens: date, closes: date) -> None:
        for other in self.intakes.values():
            if other.year != year and other.overlaps(opens, closes):
                raise InvalidTransition(
                    f"the window {opens}..{closes} overlaps the intake of {other.year} "
                    f"({other.opens}..{other.closes})",
                    field="closes",
                )

