"""A city (or county, consortium, commune): its applications, memberships and progress reports."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.acts import Act, AuditedAggregate
from domain.calendar import local_date
from domain.errors import (
    AlreadyMember,
    DuplicateApplication,
    InvalidInput,
    InvalidTransition,
    NotAMember,
)
from domain.personal import person as known_person
from domain.regulations import first_reporting_regulations
from domain.reporting import report_due

END_REASONS = ("not_reporting", "withdrawn_by_city", "other")
LAPSED_NOTE = "lapsed, imported"


def normalise_name(name: str) -> str:
    """The name with case, accents and spacing folded away."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def city_id(country: str, name: str) -> UUID:
    """The deterministic id of a city: the same country and normalised name give the same id."""
    return uuid5(NAMESPACE_URL, f"gnlc:city:{country.upper()}:{normalise_name(name)}")


def membership_status(retracted: bool, ended: bool) -> str:
    """A membership period's status: `retracted`, `ended` or `active`."""
    if retracted:
        return "retracted"
    return "ended" if ended else "active"


def city_status(membership_statuses: Iterable[str]) -> str:
    """A city's status from its periods' statuses, oldest first: that of the latest period not
    retracted, `applicant` if there is none (a retracted admission is as if it had not happened).

    The one definition of a city's status: the `City` aggregate and the `members` read model
    (which holds the periods as rows, not as `Membership` objects) both ask here.
    """
    status = "applicant"
    for period in membership_statuses:
        if period != "retracted":
            status = period
    return status


def days_late(due: date | str, submitted_on: date | str) -> int:
    """Whole days a report came after its due date (0 if on time)."""
    due_day, submitted = (d if isinstance(d, date) else date.fromisoformat(d)
                          for d in (due, submitted_on))
    return max(0, (submitted - due_day).days)


@dataclass(frozen=True)
class Erasure:
    persons: tuple[str, ...]
    key_ids: tuple[str, ...]
    reason: str
    at: datetime


@dataclass
class Report:
    cycle: int
    due: date
    submitted_on: date
    late: bool


@dataclass
class Membership:
    """One period of membership, started by an admission."""

    period: int
    application_id: UUID
    intake_year: int
    admitted_on: date
    admitted_at: datetime
    ended_at: datetime | None = None
    ended_on: date | None = None
    end_reason: str | None = None
    retracted: bool = False
    reports: list[Report] = field(default_factory=list)

    @property
    def status(self) -> str:
        return membership_status(self.retracted, self.ended_at is not None)

    def covers(self, day: date) -> bool:
        """Whether the city is a member under this period on business date `day` (the days of
        admission and of the end included)."""
        return (
            not self.retracted
            and self.admitted_on <= day
            and (self.ended_on is None or day <= self.ended_on)
        )

    def due_date(self, cycle: int) -> date:
        return report_due(self.admitted_on, cycle)

    def next_cycle(self) -> int:
        return len(self.reports) + 1


class City(AuditedAggregate):
    """A city is identified by its country and normalised name; it may come back after leaving."""

    class Registered(AuditedAggregate.Event, Aggregate.Created):
        country: str
        name: str

        def took_effect_by(self, day: date, timezone: str) -> bool:
            """A city's identity has no business date: the history import may record its
            membership of years before the registry first heard of it (see
            `City.import_membership`), so its registration counts on every day."""
            return True

    def __init__(self, country: str, name: str, **_audit: Any) -> None:
        self.country = country
        self.name = name
        self.open_application_id: UUID | None = None
        self.memberships: list[Membership] = []
        # Each application lodged: when, and when it closed (None while open).
        self.application_periods: dict[UUID, tuple[datetime, datetime | None]] = {}
        # The latest business time of an act on the memberships (start, report, end, retraction).
        self.membership_acts_until: datetime | None = None
        self.erasures: list[Erasure] = []

    @classmethod
    def register(cls, act: Act, country: str, name: str) -> City:
        return cls._create(
            cls.Registered,
            id=city_id(country, name),
            country=country,
            name=name,
            **act.event_fields(),
        )

    # --- events -------------------------------------------------------------------------------

    class ApplicationLodged(AuditedAggregate.Event):
        application_id: UUID

        def apply(self, city: City) -> None:
            city.open_application_id = self.application_id
            city.application_periods[self.application_id] = (self.effective_at, None)

    class ApplicationClosed(AuditedAggregate.Event):
        application_id: UUID
        outcome: str

        def apply(self, city: City) -> None:
            city.open_application_id = None
            city.close_period(self.application_id, self.effective_at)

    class MembershipStarted(AuditedAggregate.Event):
        regulation_version: str
        application_id: UUID
        period: int
        intake_year: int
        admitted_on: date

        def apply(self, city: City) -> None:
            # The admitted application closes; an imported admission is an application of its
            # own and leaves the city's open application (if any) open.
            if city.open_application_id == self.application_id:
                city.open_application_id = None
            city.close_period(self.application_id, self.effective_at)
            city.membership_act(self.effective_at)
            city.memberships.append(
                Membership(
                    period=self.period,
                    application_id=self.application_id,
                    intake_year=self.intake_year,
                    admitted_on=self.admitted_on,
                    admitted_at=self.effective_at,
                )
            )

    class MembershipRetracted(AuditedAggregate.Event):
        regulation_version: str
        application_id: UUID
        period: int
        reason: str

        def apply(self, city: City) -> None:
            city.memberships[self.period - 1].retracted = True
            city.membership_act(self.effective_at)

    class ReportSubmitted(AuditedAggregate.Event):
        # v2 added `days_late` (for the network's statistics), v3 the `correlation_id` every event
        # has; older events are upcast on reading.
        class_version = 3

        regulation_version: str
        period: int
        cycle: int
        due: date
        submitted_on: date
        late: bool
        days_late: int
        report: dict[str, Any]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["days_late"] = days_late(state["due"], state["submitted_on"])

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state.setdefault("correlation_id", None)

        def apply(self, city: City) -> None:
            city.memberships[self.period - 1].reports.append(
                Report(self.cycle, self.due, self.submitted_on, self.late)
            )
            city.membership_act(self.effective_at)

    class MembershipEnded(AuditedAggregate.Event):
        regulation_version: str
        period: int
        reason: str
        note: str | None
        ended_on: date

        def apply(self, city: City) -> None:
            membership = city.memberships[self.period - 1]
            membership.ended_at = self.effective_at
            membership.ended_on = self.ended_on
            membership.end_reason = self.reason
            city.membership_act(self.effective_at)

    class ContactUpdated(AuditedAggregate.Event):
        """A new mayor or contact person; `details` is the part with its personal values sealed
        (domain.personal)."""

        person: str
        details: dict[str, Any]

        def apply(self, city: City) -> None:
            pass  # the current contacts are the read models' (projections/members.py)

    class PersonalDataErased(AuditedAggregate.Event):
        """The data keys of persons of the city were destroyed: their sealed values can no
        longer be read anywhere. Holds no personal data: who, when, why, which keys."""

        persons: list[str]
        key_ids: list[str]
        reason: str
        # Events that hold these persons' values in the clear (stored before values were
        # sealed): the erasure cannot reach them without breaking the audit chain.
        plaintext_events: int

        def apply(self, city: City) -> None:
            city.erasures.append(Erasure(
                tuple(self.persons), tuple(self.key_ids), self.reason, self.effective_at))

    def membership_act(self, at: datetime) -> None:
        """Note the time of an act on a membership (the history import must come after it)."""
        if self.membership_acts_until is None or at > self.membership_acts_until:
            self.membership_acts_until = at

    def close_period(self, application_id: UUID, at: datetime) -> None:
        lodged, closed = self.application_periods.get(application_id, (None, at))
        if lodged is not None and closed is None:
            self.application_periods[application_id] = (lodged, at)

    # --- queries ------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """`applicant`, `active` or `ended`: see `city_status`."""
        return city_status(m.status for m in self.memberships)

    @property
    def active_membership(self) -> Membership | None:
        return next((m for m in self.memberships if m.status == "active"), None)

    def membership_on(self, act: Act) -> Membership | None:
        """The period under which the city is a member on the act's business date.

        Two periods cover one day only when a membership ended and the next began that day: the
        act counts for the later one if it had begun by the act's moment, else for the earlier.
        """
        covering = [m for m in self.memberships if m.covers(act.day)]
        begun = [m for m in covering if m.admitted_at <= act.effective_at]
        return begun[-1] if begun else next(iter(covering), None)

    # --- commands -----------------------------------------------------------------------------

    def lodge_application(self, act: Act, application_id: UUID) -> None:
        """Refuse a second open application and an application from a current member."""
        if self.open_application_id is not None:
            raise DuplicateApplication(
                f"{self.name} ({self.country}) already has an open application "
                f"{self.open_application_id}"
            )
        if self.active_membership is not None:
            raise AlreadyMember(f"{self.name} ({self.country}) is already a member")
        self.trigger_event(
            self.ApplicationLodged, application_id=application_id, **act.event_fields()
        )

    def close_application(self, act: Act, application_id: UUID, outcome: str) -> None:
        if self.open_application_id == application_id:
            self.trigger_event(
                self.ApplicationClosed,
                application_id=application_id,
                outcome=outcome,
                **act.event_fields(),
            )

    def start_membership(
        self, act: Act, application_id: UUID, intake_year: int, historical: bool = False
    ) -> Membership:
        if self.active_membership is not None:
            raise AlreadyMember(f"{self.name} ({self.country}) is already a member")
        self.trigger_event(
            self.MembershipStarted,
            historical=historical,
            application_id=application_id,
            period=len(self.memberships) + 1,
            intake_year=intake_year,
            admitted_on=act.day,
            **act.decision_fields(),
        )
        return self.memberships[-1]

    def import_membership(
        self, act: Act, application_id: UUID, intake_year: int, lapse: Act,
        left: Act | None = None, end_reason: str = "other",
    ) -> Membership:
        """A membership from the network's records (the history import), admitted at `act`,
        ended at `left` if given; a membership still active ends at `lapse` (the day before).

        History may reach back before acts already recorded for the city: the registry heard of
        it when it applied, its membership of years ago is imported afterwards. Its stream then
        runs backwards in business time, which the as-of folds represent only when nothing
        recorded later depends on the imported membership. So the import must come after every
        act on the city's memberships (history is imported oldest first), and must not overlap
        any application of the city, open or closed: a member does not apply, and a city has
        one open application at a time (an import never closes one). A membership that ended
        before the city applied comes in; one that would still run when it applied is refused.
        """
        first = lapse if self.active_membership is not None else act
        self._check_history_fits(act, first, left)
        if self.active_membership is not None:
            self.end_membership(lapse, "other", LAPSED_NOTE, historical=True)
        membership = self.start_membership(act, application_id, intake_year, historical=True)
        if left is not None:
            self.end_membership(left, end_reason, None, historical=True)
        return membership

    def _check_history_fits(self, act: Act, first: Act, left: Act | None) -> None:
        who, admitted = f"{self.name} ({self.country})", act.day

        def day(moment: datetime) -> date:
            return local_date(moment, act.timezone)

        for membership in self.memberships:
            if membership.retracted:
                continue
            if membership.admitted_on > admitted:
                raise InvalidTransition(
                    f"{who} has a later membership already; history is imported oldest first",
                    field="admitted_on")
            if membership.ended_on is not None and membership.ended_on >= admitted:
                raise InvalidTransition(
                    f"{who} was still a member on {admitted}: an earlier membership ends on or "
                    "after it", field="admitted_on")
        until = self.membership_acts_until
        if until is not None and until >= first.effective_at:
            raise InvalidTransition(
                f"{who} has an act on a membership on {day(until)}, not before {first.day}: "
                "history is imported oldest first", field="admitted_on")
        for lodged, closed in self.application_periods.values():
            overlaps = ((left is None or lodged <= left.effective_at)
                        and (closed is None or closed >= first.effective_at))
            if overlaps:
                state = "still open" if closed is None else f"closed on {day(closed)}"
                runs = f"to {left.day}" if left is not None else "with no end"
                raise InvalidTransition(
                    f"{who} has an application submitted on {day(lodged)} ({state}): an "
                    f"imported membership may not overlap it (a member does not apply, and a "
                    f"city has one open application at a time); this one runs from {admitted} "
                    f"{runs}", field="admitted_on")

    def update_contact(self, act: Act, person: str, details: dict[str, Any]) -> None:
        """Record a new mayor or contact person (`details` already sealed)."""
        self.trigger_event(self.ContactUpdated, person=known_person(person), details=details,
                           **act.event_fields())

    def erase_personal_data(self, act: Act, persons: tuple[str, ...], key_ids: list[str],
                            reason: str, plaintext_events: int) -> None:
        """Record the erasure of the persons' data keys (the keys are destroyed with it)."""
        if not reason.strip():
            raise InvalidInput("a reason is required", field="reason")
        if not key_ids:
            raise InvalidTransition(
                f"no data key of the {' or '.join(persons)} of {self.name} ({self.country}) "
                "is left to erase")
        self.trigger_event(self.PersonalDataErased, persons=list(persons),
                           key_ids=sorted(key_ids), reason=reason.strip(),
                           plaintext_events=plaintext_events, **act.event_fields())

    def retract_membership(self, act: Act, application_id: UUID, reason: str) -> None:
        """Undo the membership an admission started, unless it already has a report."""
        membership = next(m for m in self.memberships if m.application_id == application_id)
        if membership.reports:
            raise InvalidTransition(
                "the admission cannot be retracted: the membership already has a progress report"
            )
        self.trigger_event(
            self.MembershipRetracted,
            application_id=application_id,
            period=membership.period,
            reason=reason,
            **act.decision_fields(),
        )

    def submit_report(self, act: Act, report: dict[str, Any]) -> Report:
        """Count the report for the earliest cycle not yet reported; late if after its due date.

        Eligibility is by business date: a city is a member from the day of its admission to the
        day its membership ended, both included, whatever the hour of the act.
        """
        regulations = act.regulations
        if regulations.report_every_years is None:
            # Refused as a transition the rules of that date do not have, not as `not_a_member`:
            # the city may well have been a member then.
            raise InvalidTransition(
                f"no progress report can be dated {act.day}: the regulations in force then "
                f"({regulations.version}) had no reporting; reporting began on "
                f"{first_reporting_regulations().effective_from}"
            )
        membership = self.membership_on(act)
        if membership is None:
            raise NotAMember(f"{self.name} ({self.country}) is not a member on {act.day}")
        cycle = membership.next_cycle()
        due = membership.due_date(cycle)
        self.trigger_event(
            self.ReportSubmitted,
            period=membership.period,
            cycle=cycle,
            due=due,
            submitted_on=act.day,
            late=act.day > due,
            days_late=days_late(due, act.day),
            report=report,
            **act.decision_fields(),
        )
        return membership.reports[-1]

    def end_membership(
        self, act: Act, reason: str, note: str | None, historical: bool = False
    ) -> Membership:
        if reason not in END_REASONS:
            raise InvalidInput(
                f"reason must be one of {', '.join(END_REASONS)}, got {reason!r}", field="reason"
            )
        membership = self.active_membership
        if membership is None:
            raise NotAMember(f"{self.name} ({self.country}) has no active membership to end")
        if act.effective_at < membership.admitted_at:
            raise InvalidTransition("a membership cannot end before it began")
        self.trigger_event(
            self.MembershipEnded,
            historical=historical,
            period=membership.period,
            reason=reason,
            note=note,
            ended_on=act.day,
            **act.decision_fields(),
        )
        return membership
