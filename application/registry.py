"""The registry: one method per command, each loads, decides and saves in one transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoding
from eventsourcing.utils import retry

from application.clock import Clock, SystemClock
from domain.acts import Act, Actor, AuditedAggregate
from domain.applications import CityApplication
from domain.cities import City, Membership, Report, city_id
from domain.errors import Conflict, InvalidInput, NotFound, WindowClosed
from domain.forms import ApplicationForm, ProgressReport, parse
from domain.intakes import CALENDAR_ID, Intake, IntakeCalendar
from domain.quotas import QuotaLedger, ledger_id
from domain.regulations import regulations_on

# Enough for every racing writer to lose a few times: each conflict means another writer committed.
MAX_ATTEMPTS = 12

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A", bound=AuditedAggregate)


def retried_on_conflict(method: Callable[P, R]) -> Callable[P, R]:
    """Reload and decide again when a concurrent writer won; give up with `Conflict`."""
    attempt = retry(IntegrityError, max_attempts=MAX_ATTEMPTS, wait=0.002)(method)

    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return cast(R, attempt(*args, **kwargs))
        except IntegrityError:
            raise Conflict(
                f"concurrent changes kept conflicting after {MAX_ATTEMPTS} attempts; "
                "nothing was written, try again"
            ) from None

    return wrapper


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


def parse_id(text: str, field: str) -> UUID:
    """An id given by a user; anything but a UUID is invalid input."""
    try:
        return UUID(text)
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"{field} must be a UUID, got {text!r}", field=field) from None


@dataclass(frozen=True)
class Submission:
    application_id: UUID
    city_id: UUID


@dataclass(frozen=True)
class Admission:
    application_id: UUID
    city_id: UUID
    country: str
    quota_year: int
    used: int
    limit: int | None


@dataclass(frozen=True)
class RecordedEvent:
    """An event with its place in the log."""

    position: int
    event: AuditedAggregate.Event


class Registry(Application[UUID]):
    """The membership registry of the Global Network of Learning Cities."""

    name = "gnlc"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        timezone: str = "Europe/Berlin",
        new_id: Callable[[], UUID] = uuid4,
    ) -> None:
        super().__init__(env)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.timezone = timezone
        self.new_id = new_id

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    # --- intakes ------------------------------------------------------------------------------

    @retried_on_conflict
    def open_intake(
        self, actor: Actor, year: int, opens: date | None = None, closes: date | None = None
    ) -> Intake:
        act = self._act(actor)
        calendar = self._calendar() or IntakeCalendar.start(act)
        intake = calendar.open_intake(act, year, opens, closes)
        self.save(calendar)
        return intake

    @retried_on_conflict
    def extend_intake(self, actor: Actor, year: int, closes: date, reason: str) -> Intake:
        act = self._act(actor)
        calendar = self._calendar()
        if calendar is None:
            raise NotFound(f"no intake of {year} has been opened", field="year")
        intake = calendar.extend_intake(act, year, closes, reason)
        self.save(calendar)
        return intake

    def intakes(self) -> list[Intake]:
        calendar = self._calendar()
        return sorted(calendar.intakes.values(), key=lambda i: i.year) if calendar else []

    # --- applications -------------------------------------------------------------------------

    @retried_on_conflict
    def submit_application(self, actor: Actor, data: Any) -> Submission:
        """Part 1 of the form, submitted while an intake is open; one open application per city."""
        form = parse(ApplicationForm, data)
        act = self._act(actor)
        calendar = self._calendar()
        if calendar is None:
            raise WindowClosed(f"no intake is open on {act.day.isoformat()}")
        intake = calendar.intake_open_on(act)
        city = self._city_of(act, form.country, form.city)
        application = CityApplication.submit(
            act, self.new_id(), city.id, intake.year, form.model_dump(mode="json")
        )
        city.lodge_application(act, application.id)
        self.save(city, application)
        return Submission(application.id, city.id)

    @retried_on_conflict
    def endorse(self, actor: Actor, application_id: UUID) -> CityApplication:
        application = self.application(application_id)
        application.endorse(self._act(actor))
        self.save(application)
        return application

    @retried_on_conflict
    def decline(self, actor: Actor, application_id: UUID, reason: str) -> CityApplication:
        return self._close(actor, application_id, "declined", reason)

    @retried_on_conflict
    def withdraw(self, actor: Actor, application_id: UUID, reason: str) -> CityApplication:
        return self._close(actor, application_id, "withdrawn", reason)

    @retried_on_conflict
    def reject(
        self, actor: Actor, application_id: UUID, reason: str, jury: str | None = None
    ) -> CityApplication:
        act = self._act(actor)
        application = self.application(application_id)
        application.check_decidable()
        self._require_calendar().check_open(application.intake_year, act)
        application.reject(act, reason, jury)
        city = self.city(application.city_id)
        city.close_application(act, application.id, "rejected")
        self.save(application, city)
        return application

    @retried_on_conflict
    def admit(
        self,
        actor: Actor,
        application_id: UUID,
        reason: str | None = None,
        jury: str | None = None,
    ) -> Admission:
        """Admit within the window and the quota; the ledger is saved with the decision."""
        act = self._act(actor)
        application = self.application(application_id)
        application.check_decidable()
        self._require_calendar().check_open(application.intake_year, act)
        ledger = self._ledger(act, application.country, application.intake_year)
        city = self.city(application.city_id)
        place = ledger.take_place(act, application.id, city.id, regulations_on(act.day))
        application.admit(act, reason, jury, place)
        city.start_membership(act, application.id, application.intake_year)
        self.save(application, city, ledger)
        return Admission(
            application.id, city.id, application.country, application.intake_year,
            ledger.used, place.limit,
        )

    @retried_on_conflict
    def retract(self, actor: Actor, application_id: UUID, reason: str) -> CityApplication:
        """A corrigendum: undo an admission, free its quota place; refused once a report exists."""
        act = self._act(actor)
        application = self.application(application_id)
        application.retract(act, reason)
        city = self.city(application.city_id)
        city.retract_membership(act, application.id, reason)
        ledger = self._ledger(act, application.country, application.intake_year)
        ledger.free_place(act, application.id, reason)
        self.save(application, city, ledger)
        return application

    # --- memberships --------------------------------------------------------------------------

    @retried_on_conflict
    def submit_report(self, actor: Actor, city_id: UUID, data: Any) -> Report:
        report = parse(ProgressReport, data)
        city = self.city(city_id)
        submitted = city.submit_report(self._act(actor), report.model_dump(mode="json"))
        self.save(city)
        return submitted

    @retried_on_conflict
    def end_membership(
        self, actor: Actor, city_id: UUID, reason: str, note: str | None = None
    ) -> Membership:
        city = self.city(city_id)
        membership = city.end_membership(self._act(actor), reason, note)
        self.save(city)
        return membership

    # --- reading ------------------------------------------------------------------------------

    def application(self, application_id: UUID) -> CityApplication:
        return self._get(CityApplication, application_id, "application_id")

    def city(self, city_id: UUID) -> City:
        return self._get(City, city_id, "city_id")

    def history(self, city_id: UUID) -> list[RecordedEvent]:
        """Every event of the city and of its applications, in log order."""
        city = self.city(city_id)
        ids = {city.id} | {
            e.application_id
            for e in self.repository.event_store.get(city.id)
            if isinstance(e, City.ApplicationLodged)
        }
        return [r for r in self.read_log() if r.event.originator_id in ids]

    def read_log(self, start: int = 1, page: int = 1000) -> Iterator[RecordedEvent]:
        """The whole log in position order (positions may have gaps on PostgreSQL)."""
        while True:
            notifications = self.recorder.select_notifications(start, page)
            for notification in notifications:
                event = self.mapper.to_domain_event(notification)
                yield RecordedEvent(notification.id, cast(AuditedAggregate.Event, event))
            if len(notifications) < page:
                return
            start = notifications[-1].id + 1

    def count_events(self) -> int:
        return sum(1 for _ in self.read_log())

    # --- helpers ------------------------------------------------------------------------------

    def _act(self, actor: Actor) -> Act:
        return Act(
            actor=actor.name,
            role=actor.role,
            effective_at=self.clock.now(),
            timezone=self.timezone,
            clock_overridden=self.clock.overridden,
            source=actor.source,
        )

    def _close(
        self, actor: Actor, application_id: UUID, outcome: str, reason: str
    ) -> CityApplication:
        act = self._act(actor)
        application = self.application(application_id)
        if outcome == "declined":
            application.decline(act, reason)
        else:
            application.withdraw(act, reason)
        city = self.city(application.city_id)
        city.close_application(act, application.id, outcome)
        self.save(application, city)
        return application

    def _get(self, kind: type[A], aggregate_id: UUID, field: str) -> A:
        aggregate: object = None
        with contextlib.suppress(AggregateNotFoundError):
            aggregate = self.repository.get(aggregate_id)
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {kind.__name__} with id {aggregate_id}", field=field)
        return aggregate

    def _calendar(self) -> IntakeCalendar | None:
        try:
            return cast(IntakeCalendar, self.repository.get(CALENDAR_ID))
        except AggregateNotFoundError:
            return None

    def _require_calendar(self) -> IntakeCalendar:
        calendar = self._calendar()
        if calendar is None:
            raise WindowClosed("no intake has been opened")
        return calendar

    def _city_of(self, act: Act, country: str, name: str) -> City:
        try:
            return self._get(City, city_id(country, name), "city")
        except NotFound:
            return City.register(act, country, name)

    def _ledger(self, act: Act, country: str, year: int) -> QuotaLedger:
        try:
            return cast(QuotaLedger, self.repository.get(ledger_id(country, year)))
        except AggregateNotFoundError:
            return QuotaLedger.open(act, country, year)

