"""The registry: one method per command, each loads, decides and saves in one transaction."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar, cast, runtime_checkable
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Notification,
    Recording,
    StoredEvent,
    Transcoding,
)
from eventsourcing.utils import get_topic, retry

from application.clock import Clock, SystemClock
from domain.access import AccessToken, Action, authorise, parse_token, token_id, token_text
from domain.acts import Act, Actor, AuditedAggregate, Role
from domain.applications import CityApplication
from domain.calendar import local_date
from domain.cities import City, Membership, Report, city_id
from domain.errors import (
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotAuthenticated,
    NotFound,
    WindowClosed,
)
from domain.forms import ApplicationForm, ContactUpdate, ProgressReport, parse
from domain.history import HistoryRow
from domain.intakes import CALENDAR_ID, Intake, IntakeCalendar
from domain.personal import PERSONS, holds_plaintext, personal_values, sealed_part
from domain.personal import persons as chosen_persons
from domain.quotas import QuotaLedger, ledger_id
from domain.regulations import regulations_on

# Tokens kept in memory for authentication (each is re-read from the store on use).
TOKEN_CACHE_SIZE = 10_000

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


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply events in order: the library's projector without its per-event runtime protocol
    check, which cost a fifth of an admission's time (see benchmarks/README.md)."""
    for domain_event in events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


def replay_selection(events: Sequence[Any]) -> Any:
    """Replay some of an aggregate's events, in order: its state at a past point (the as-of
    folds may skip events the history import recorded later for an earlier time)."""
    aggregate = None
    for domain_event in events:
        if aggregate is not None:
            aggregate.version = domain_event.originator_version - 1
        aggregate = domain_event.mutate(aggregate)
    return aggregate


def _applications_of(city_events: Iterable[object]) -> set[UUID]:
    """The ids of the applications a city's events name."""
    return {e.application_id for e in city_events
            if isinstance(e, City.ApplicationLodged | City.MembershipStarted)}


@runtime_checkable
class StreamReader(Protocol):
    """A recorder that reads several aggregates' events in one query (the store's adapters do)."""

    def select_streams(self, originator_ids: Sequence[UUID]) -> Sequence[StoredEvent]: ...


@runtime_checkable
class PositionedStreamReader(Protocol):
    """A recorder that reads several aggregates' events with their log positions, in log order
    (the store's adapters do): a city's history without decoding the rest of the log."""

    def select_positioned_streams(self, originator_ids: Sequence[UUID]
                                  ) -> Sequence[tuple[int, StoredEvent]]: ...


class PersonalDataKeys(Protocol):
    """The data keys that seal personal values (domain.personal), one per person entered.

    New keys and erasures are staged, then written by the next `save` in its own transaction:
    a key exists exactly when the event that uses it was stored, and an erasure's event and the
    destruction of its keys commit together."""

    def staging(self) -> contextlib.AbstractContextManager[None]:
        """A fresh stage for the keys of one attempt of a command."""
        ...

    def seal(self, city_id: UUID, person: str, values: Mapping[str, Any]) -> dict[str, str]:
        """The envelope of the values, under a new key staged for the next save."""
        ...

    def live(self, city_id: UUID, persons: Sequence[str]) -> list[str]:
        """The ids of the persons' keys not yet erased."""
        ...

    def erase(self, key_ids: Sequence[str]) -> None:
        """Stage the destruction of these keys for the next save."""
        ...

    def purge(self) -> None:
        """After an erasure committed: leave no copy of the destroyed keys in the database's
        files where the database allows it."""
        ...

    def shown(self, datas: Sequence[Mapping[str, Any]], personal: bool
              ) -> list[dict[str, Any]]:
        """Events' data as a reader sees them: each person's values opened where `personal`,
        null otherwise, and marked erased once their key is gone (no envelope left)."""
        ...

    def close(self) -> None:
        """Let go of the connections (the registry closes it with itself)."""
        ...


class NoPersonalDataKeys:
    """The registry of a process that never records personal data (a projection runner)."""

    def _refuse(self) -> Any:
        raise RuntimeError("this registry was built without data keys: build it with "
                           "infrastructure.bootstrap.build_registry")

    def staging(self) -> contextlib.AbstractContextManager[None]:
        return cast(contextlib.AbstractContextManager[None], self._refuse())

    def seal(self, city_id: UUID, person: str, values: Mapping[str, Any]) -> dict[str, str]:
        return cast(dict[str, str], self._refuse())

    def live(self, city_id: UUID, persons: Sequence[str]) -> list[str]:
        return cast(list[str], self._refuse())

    def erase(self, key_ids: Sequence[str]) -> None:
        self._refuse()

    def purge(self) -> None:
        self._refuse()

    def shown(self, datas: Sequence[Mapping[str, Any]], personal: bool
              ) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._refuse())

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Erasure:
    """What an erasure did: the keys it destroyed (none: they were gone already)."""

    city_id: UUID
    persons: tuple[str, ...]
    erased_key_ids: list[str]
    # Keys of these persons erased before, by earlier erasures.
    erased_before: list[str]
    # Events holding these persons' values in the clear (stored before values were sealed).
    plaintext_events: int

    @property
    def recorded(self) -> bool:
        return bool(self.erased_key_ids)


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
class IssuedToken:
    """A new token: its secret is shown once, here, and never stored."""

    name: str
    role: str
    token: str


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
        personal_data: PersonalDataKeys | None = None,
    ) -> None:
        super().__init__(env)
        self.personal_data: PersonalDataKeys = personal_data or NoPersonalDataKeys()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.timezone = timezone
        self.new_id = new_id
        self._saved = threading.local()
        # Tokens are read on every request: the library's aggregate cache keeps them, and
        # fast-forwards each one from the store on every read (one indexed query, no rows when
        # nothing changed), so a revocation counts from the next request, in any process.
        self._tokens: Repository[UUID] = Repository(
            self.events, cache_maxsize=TOKEN_CACHE_SIZE, fastforward=True,
            deepcopy_from_cache=False)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        recordings = super().save(*objs, **kwargs)
        if recordings:
            self._saved.position = recordings[-1].notification.id
        return recordings

    def close(self) -> None:
        super().close()
        self.personal_data.close()

    def forget_last_position(self) -> None:
        self._saved.position = None

    def last_position(self) -> int | None:
        """The log position of the last event this thread saved (for read-your-writes)."""
        return cast(int | None, getattr(self._saved, "position", None))

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    # --- intakes ------------------------------------------------------------------------------

    @retried_on_conflict
    def open_intake(
        self, actor: Actor, year: int, opens: date | None = None, closes: date | None = None
    ) -> Intake:
        authorise(actor, Action.OPEN_INTAKE)
        act = self._act(actor)
        calendar = self._calendar() or IntakeCalendar.start(act)
        intake = calendar.open_intake(act, year, opens, closes)
        self.save(calendar)
        return intake

    @retried_on_conflict
    def extend_intake(self, actor: Actor, year: int, closes: date, reason: str) -> Intake:
        authorise(actor, Action.EXTEND_INTAKE)
        act = self._act(actor)
        calendar = self._calendar()
        if calendar is None:
            raise NotFound(f"no intake of {year} has been opened", field="year")
        intake = calendar.extend_intake(act, year, closes, reason)
        self.save(calendar)
        return intake

    def intakes(self, actor: Actor) -> list[Intake]:
        """Every intake opened, oldest first (the network's calendar: no country's or city's)."""
        authorise(actor, Action.READ, actor.country, actor.city_id)
        calendar = self._calendar()
        return sorted(calendar.intakes.values(), key=lambda i: i.year) if calendar else []

    # --- applications -------------------------------------------------------------------------

    @retried_on_conflict
    def submit_application(self, actor: Actor, data: Any) -> Submission:
        """Part 1 of the form, submitted while an intake is open; one open application per city."""
        authorise(actor, Action.SUBMIT_APPLICATION, actor.country, actor.city_id)
        form = parse(ApplicationForm, data)
        authorise(actor, Action.SUBMIT_APPLICATION, form.country, city_id(form.country, form.city))
        act = self._act(actor)
        calendar, city = self._load(CALENDAR_ID, city_id(form.country, form.city))
        if not isinstance(calendar, IntakeCalendar):
            raise WindowClosed(f"no intake is open on {act.day.isoformat()}")
        intake = calendar.intake_open_on(act)
        if not isinstance(city, City):
            city = City.register(act, form.country, form.city)
        application_id = self.new_id()
        city.lodge_application(act, application_id)
        with self.personal_data.staging():
            application = CityApplication.submit(
                act, application_id, city.id, intake.year,
                self.sealed_form(city.id, form.model_dump(mode="json")))
            self.save(city, application)
        return Submission(application.id, city.id)

    def sealed_form(self, city_id: UUID, form: dict[str, Any]) -> dict[str, Any]:
        """The form with each person's personal values sealed under a key of their own (staged:
        call it within `personal_data.staging()`, and save within the same stage)."""
        for person in PERSONS:
            if isinstance(form.get(person), dict):
                form[person] = self._sealed(city_id, person, form[person])
        return form

    def _sealed(self, city_id: UUID, person: str, part: dict[str, Any]) -> dict[str, Any]:
        envelope = self.personal_data.seal(city_id, person, personal_values(person, part))
        return sealed_part(person, part, envelope)

    @retried_on_conflict
    def endorse(self, actor: Actor, application_id: UUID) -> CityApplication:
        application = self._authorised(actor, Action.ENDORSE, application_id)
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
        application = self._authorised(actor, Action.REJECT, application_id)
        application.check_decidable()
        calendar, city = self._load(CALENDAR_ID, application.city_id)
        self._check_open(calendar, application, act)
        application.reject(act, reason, jury)
        city = self._expect(City, city, application.city_id)
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
        application = self._authorised(actor, Action.ADMIT, application_id)
        application.check_decidable()
        quota_id = ledger_id(application.country, application.intake_year)
        calendar, city, ledger = self._load(CALENDAR_ID, application.city_id, quota_id)
        self._check_open(calendar, application, act)
        city = self._expect(City, city, application.city_id)
        ledger = self._ledger(act, ledger, application)
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
        application = self._authorised(actor, Action.RETRACT, application_id)
        application.retract(act, reason)
        quota_id = ledger_id(application.country, application.intake_year)
        city, ledger = self._load(application.city_id, quota_id)
        city = self._expect(City, city, application.city_id)
        city.retract_membership(act, application.id, reason)
        ledger = self._ledger(act, ledger, application)
        ledger.free_place(act, application.id, reason)
        self.save(application, city, ledger)
        return application

    # --- memberships --------------------------------------------------------------------------

    @retried_on_conflict
    def submit_report(self, actor: Actor, city_id: UUID, data: Any) -> Report:
        city = self._authorised_city(actor, Action.SUBMIT_REPORT, city_id)
        report = parse(ProgressReport, data)
        submitted = city.submit_report(self._act(actor), report.model_dump(mode="json"))
        self.save(city)
        return submitted

    @retried_on_conflict
    def end_membership(
        self, actor: Actor, city_id: UUID, reason: str, note: str | None = None
    ) -> Membership:
        city = self._authorised_city(actor, Action.END_MEMBERSHIP, city_id)
        membership = city.end_membership(self._act(actor), reason, note)
        self.save(city)
        return membership

    # --- personal data ------------------------------------------------------------------------

    @retried_on_conflict
    def update_contacts(self, actor: Actor, city_id: UUID, data: Any) -> list[str]:
        """Record the city's new mayor and/or contact person; the persons updated."""
        city = self._authorised_city(actor, Action.UPDATE_CONTACTS, city_id)
        update = parse(ContactUpdate, data)
        act = self._act(actor)
        given = {p: getattr(update, p) for p in PERSONS if getattr(update, p) is not None}
        with self.personal_data.staging():
            for person, part in given.items():
                city.update_contact(act, person,
                                    self._sealed(city.id, person, part.model_dump(mode="json")))
            self.save(city)
        return list(given)

    @retried_on_conflict
    def erase_personal_data(self, actor: Actor, city_id: UUID, persons: Sequence[str] | None,
                            reason: str) -> Erasure:
        """Destroy the data keys of the city's mayors and/or contact persons (every one it
        recorded) and record it; with no key left, nothing is recorded and the answer says so."""
        authorise(actor, Action.ERASE_PERSONAL_DATA)
        city = self._authorised_city(actor, Action.ERASE_PERSONAL_DATA, city_id)
        chosen = chosen_persons(persons)
        if not reason or not reason.strip():
            raise InvalidInput("a reason is required", field="reason")
        act = self._act(actor)
        key_ids = self.personal_data.live(city.id, chosen)
        before = sorted({k for e in city.erasures if set(e.persons) & set(chosen)
                         for k in e.key_ids})
        plaintext = self._plaintext_events(actor, city.id, chosen)
        if key_ids:
            with self.personal_data.staging():
                city.erase_personal_data(act, chosen, key_ids, reason, plaintext)
                self.personal_data.erase(key_ids)
                self.save(city)
            self.personal_data.purge()
        return Erasure(city.id, chosen, sorted(key_ids), before, plaintext)

    def plaintext_events(self, actor: Actor) -> dict[UUID, int]:
        """Per city, how many events hold a person's values in the clear: stored before values
        were sealed, beyond the reach of an erasure (the README's "Personal data" says why)."""
        authorise(actor, Action.ERASE_PERSONAL_DATA)
        counts: dict[UUID, int] = {}
        for recorded in self._read_log():
            data = vars(recorded.event)
            if holds_plaintext(data):
                city_id = data.get("city_id") or recorded.event.originator_id
                counts[city_id] = counts.get(city_id, 0) + 1
        return counts

    def _plaintext_events(self, actor: Actor, city_id: UUID, persons: Sequence[str]) -> int:
        """How many of the city's events hold these persons' values in the clear."""
        return sum(1 for recorded in self.history(actor, city_id)
                   if holds_plaintext(vars(recorded.event), persons))

    # --- history ------------------------------------------------------------------------------

    @retried_on_conflict
    def import_membership(self, actor: Actor, row: HistoryRow) -> bool:
        """Record an admission from the network's records; False if it is already recorded.

        The rules of its own date apply (the quota from 2018-10-01; windows do not apply to facts
        that happened). A city admitted again is readmitted: its earlier membership, if still
        active, ends the day before. Where the row may fall among the city's recorded acts (it
        may precede them, but not overlap an application) is `City.import_membership`'s rule.
        """
        authorise(actor, Action.IMPORT_HISTORY, row.country)
        today = self._act(actor).day
        if row.admitted > today or (row.left_on is not None and row.left_on > today):
            raise InvalidInput(f"the row is dated after today ({today})", field="admitted_on")
        act = self._act_on(actor, row.admitted)
        cid, quota_id = city_id(row.country, row.city), ledger_id(row.country, row.year_joined)
        city, ledger = self._load(cid, quota_id)
        if isinstance(city, City) and any(m.admitted_on == row.admitted and not m.retracted
                                          for m in city.memberships):
            return False
        if not isinstance(city, City):
            city = City.register(act, row.country, row.city)
        application_id = self.new_id()
        city.import_membership(
            act, application_id, row.year_joined,
            lapse=self._act_on(actor, row.admitted - timedelta(days=1)),
            left=self._act_on(actor, row.left_on) if row.left_on is not None else None,
            end_reason=row.end_reason)
        ledger = ledger if isinstance(ledger, QuotaLedger) else QuotaLedger.open(
            act, row.country, row.year_joined)
        place = ledger.take_place(act, application_id, city.id, regulations_on(act.day),
                                  historical=True)
        application = CityApplication.import_admission(
            act, application_id, city.id, city.name, row.country, row.year_joined,
            str(row.source_url) if row.source_url else None, place)
        self.save(city, application, ledger)  # the city's registration first, as in the process
        return True

    def _act_on(self, actor: Actor, day: date) -> Act:
        """An act that took effect at noon of a past business day (in the secretariat's zone)."""
        return self._act(actor, datetime.combine(day, time(12), ZoneInfo(self.timezone)))

    # --- access -------------------------------------------------------------------------------

    @retried_on_conflict
    def issue_token(
        self, actor: Actor, name: str, role: Role, country: str | None = None,
        city: UUID | None = None, scopes: frozenset[str] = frozenset(),
    ) -> IssuedToken:
        """A new bearer token (an operator's act on the server, not a role's)."""
        if self._get_or_none(token_id(name)) is not None:
            raise InvalidTransition(f"a token named {name!r} already exists", field="name")
        secret = secrets.token_urlsafe(32)
        token = AccessToken.issue(
            self._act(actor), name, role, country, city, scopes, secrets.token_hex(16), secret
        )
        self.save(token)
        return IssuedToken(name, str(role), token_text(token.id, secret))

    @retried_on_conflict
    def revoke_token(self, actor: Actor, name: str, reason: str) -> None:
        token = self._get_or_none(token_id(name))
        if not isinstance(token, AccessToken):
            raise NotFound(f"no token named {name!r}", field="name")
        token.revoke(self._act(actor), reason)
        self.save(token)

    def tokens(self) -> list[AccessToken]:
        """Every token ever issued, revoked ones included, in order of issue."""
        topics = [get_topic(AccessToken.Issued)]
        found: list[AccessToken] = []
        start = 1
        while notifications := self.recorder.select_notifications(start, 1000, topics=topics):
            for notification in notifications:
                token = self._get_or_none(cast(UUID, notification.originator_id))
                found.append(cast(AccessToken, token))
            start = notifications[-1].id + 1
        return found

    def authenticate(self, bearer: str, source: str = "http") -> Actor:
        """The actor a bearer token stands for; `NotAuthenticated` if it is not in force."""
        token_id_, secret = parse_token(bearer)
        token: object = None
        with contextlib.suppress(AggregateNotFoundError):
            token = self._tokens.get(token_id_, projector_func=replay)
        if not isinstance(token, AccessToken):
            raise NotAuthenticated("the bearer token is unknown or revoked")
        return token.actor(secret, source)

    # --- reading ------------------------------------------------------------------------------

    # Every read is authorised here, as every write is, so that no edge can skip it: the
    # CLI acts in the role of its command, HTTP in its token's.

    def application(self, actor: Actor, application_id: UUID) -> CityApplication:
        """An application, if it is within what the actor may read."""
        return self._authorised(actor, Action.READ, application_id)

    def city(self, actor: Actor, city_id: UUID) -> City:
        """A city, if it is within what the actor may read."""
        return self._authorised_city(actor, Action.READ, city_id)

    def history(self, actor: Actor, city_id: UUID) -> list[RecordedEvent]:
        """Every event of the city and of its applications, in log order."""
        city = self._authorised_city(actor, Action.READ, city_id)
        ids = {city.id} | _applications_of(self.repository.event_store.get(city.id))
        if not isinstance(self.recorder, PositionedStreamReader):
            return [r for r in self._read_log() if r.event.originator_id in ids]
        # The city's events name its applications: read just those streams. Each read is one
        # statement (a consistent snapshot); an application lodged since the previous read
        # shows up among the city's events, and is then read too.
        while True:
            recorded = [RecordedEvent(position, cast(AuditedAggregate.Event,
                                                     self.mapper.to_domain_event(stored)))
                        for position, stored in self.recorder.select_positioned_streams(
                            sorted(ids, key=str))]
            named = {city.id} | _applications_of(
                r.event for r in recorded if r.event.originator_id == city.id)
            if named <= ids:
                return recorded
            ids |= named

    def latest_forms(self, actor: Actor, city_ids: Iterable[UUID]
                     ) -> dict[UUID, tuple[datetime, dict[str, Any]]]:
        """Per city, when its latest application was submitted and its form as stored
        (personal values sealed): two queries, whatever the number of cities. The caller
        scopes the cities to the reader (as `domain.access.read_scope` does)."""
        authorise(actor, Action.READ, actor.country, actor.city_id)
        ids = sorted(set(city_ids), key=str)
        if not ids:
            return {}
        latest: dict[UUID, UUID] = {}
        if isinstance(self.recorder, PositionedStreamReader):
            lodged = get_topic(City.ApplicationLodged)
            # Only the lodgings are decoded; in log order, the last one of a city wins.
            for _, stored in self.recorder.select_positioned_streams(ids):
                if stored.topic == lodged:
                    event = cast(City.ApplicationLodged, self.mapper.to_domain_event(stored))
                    latest[event.originator_id] = event.application_id
        else:
            for city_id in ids:
                for e in self.repository.event_store.get(city_id):
                    if isinstance(e, City.ApplicationLodged):
                        latest[city_id] = e.application_id
        submitted = self.submitted_forms(actor, latest.values())
        return {city: submitted[app] for city, app in latest.items() if app in submitted}

    def submitted_forms(self, actor: Actor, application_ids: Iterable[UUID]
                        ) -> dict[UUID, tuple[datetime, dict[str, Any]]]:
        """When each of these applications was submitted and its form as stored (personal
        values sealed), read in one query; the caller scopes the applications to the reader."""
        authorise(actor, Action.READ, actor.country, actor.city_id)
        ids = sorted(set(application_ids), key=str)
        if not ids:
            return {}
        if isinstance(self.recorder, PositionedStreamReader):
            # A submission is its application's first event: only those are decoded.
            events = [self.mapper.to_domain_event(stored)
                      for _, stored in self.recorder.select_positioned_streams(ids)
                      if stored.originator_version == 1]
        else:
            events = [e for i in ids for e in self.repository.event_store.get(i, lte=1)]
        return {e.originator_id: (e.effective_at, e.form) for e in events
                if isinstance(e, CityApplication.Submitted)}

    def city_at(
        self, actor: Actor, city_id: UUID, as_of: date | None = None,
        position: int | None = None,
    ) -> tuple[City | None, list[CityApplication]]:
        """The city and its applications as they stood at the end of the business day `as_of`
        and/or as of log `position` (what was known at a moment is a position: see the edges).

        Each aggregate is its events that took effect by then (`took_effect_by`): a prefix of
        its stream, except where the history import recorded a city's past after later acts."""
        self._authorised_city(actor, Action.READ_PAST, city_id)

        def counts(recorded: RecordedEvent) -> bool:
            return ((position is None or recorded.position <= position)
                    and (as_of is None or recorded.event.took_effect_by(as_of, self.timezone)))

        streams: dict[UUID, list[Any]] = {}
        for recorded in self.history(actor, city_id):
            if counts(recorded):
                streams.setdefault(recorded.event.originator_id, []).append(recorded.event)
        city_events = streams.pop(city_id, [])
        # Its registration counts on every day (`City.Registered`), the city only from its first
        # act dated by then.
        if as_of is not None and not any(
                local_date(e.effective_at, self.timezone) <= as_of for e in city_events):
            city_events = []
        city = replay_selection(city_events)
        applications = [replay_selection(events) for events in streams.values()]
        return city, applications

    def read_log(self, actor: Actor, start: int = 1, page: int = 1000
                 ) -> Iterator[RecordedEvent]:
        """The whole log in position order (positions may have gaps on PostgreSQL): everything
        of every country, so only for those who read everything, past included."""
        authorise(actor, Action.READ_PAST)
        return self._read_log(start, page)

    def count_events(self) -> int:
        """How many events the log holds (a figure, no content: for operators and tests)."""
        return sum(1 for _ in self._read_log())

    def _read_log(self, start: int = 1, page: int = 1000) -> Iterator[RecordedEvent]:
        for notification in self._notifications(start, page):
            event = self.mapper.to_domain_event(notification)
            yield RecordedEvent(notification.id, cast(AuditedAggregate.Event, event))

    def _notifications(self, start: int = 1, page: int = 1000) -> Iterator[Notification]:
        """The stored log in position order, not decoded."""
        while True:
            notifications = self.recorder.select_notifications(start, page)
            yield from notifications
            if len(notifications) < page:
                return
            start = notifications[-1].id + 1

    # --- helpers ------------------------------------------------------------------------------

    def _act(self, actor: Actor, effective_at: datetime | None = None) -> Act:
        """The act of `actor` now, by the clock, or at a given past moment (not the clock's)."""
        return Act(
            actor=actor.name,
            role=actor.role,
            effective_at=self.clock.now() if effective_at is None else effective_at,
            timezone=self.timezone,
            clock_overridden=self.clock.overridden or effective_at is not None,
            source=actor.source,
            correlation_id=actor.correlation_id,
        )

    def _close(
        self, actor: Actor, application_id: UUID, outcome: str, reason: str
    ) -> CityApplication:
        act = self._act(actor)
        action = Action.DECLINE if outcome == "declined" else Action.WITHDRAW
        application = self._authorised(actor, action, application_id)
        if outcome == "declined":
            application.decline(act, reason)
        else:
            application.withdraw(act, reason)
        city = self._get(City, application.city_id, "city_id")
        city.close_application(act, application.id, outcome)
        self.save(application, city)
        return application

    def _authorised(self, actor: Actor, action: Action, application_id: UUID) -> CityApplication:
        """The application, once the actor may act on it; authorised before `NotFound`, so a
        scoped actor cannot tell an unknown id from another country's or city's."""
        found = self._get_or_none(application_id)
        application = found if isinstance(found, CityApplication) else None
        authorise(actor, action, application.country if application else None,
                  application.city_id if application else None)
        return self._expect(CityApplication, application, application_id, "application_id")

    def _authorised_city(self, actor: Actor, action: Action, city_id: UUID) -> City:
        """The city, once the actor may act on it; authorised before `NotFound` (a city's id
        is derivable from its name: an answer must not tell whether it ever applied)."""
        found = self._get_or_none(city_id)
        city = found if isinstance(found, City) else None
        authorise(actor, action, city.country if city else None, city_id)
        return self._expect(City, city, city_id, "city_id")

    def _get(self, kind: type[A], aggregate_id: UUID, field: str) -> A:
        return self._expect(kind, self._get_or_none(aggregate_id), aggregate_id, field)

    @staticmethod
    def _expect(kind: type[A], aggregate: object, aggregate_id: UUID, field: str = "id") -> A:
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {kind.__name__} with id {aggregate_id}", field=field)
        return aggregate

    def _load(self, *ids: UUID) -> list[object | None]:
        """The current state of several aggregates (None where absent), in one query if possible."""
        if not isinstance(self.recorder, StreamReader):
            return [self._get_or_none(i) for i in ids]
        streams: dict[UUID, list[Any]] = {i: [] for i in ids}
        for stored in self.recorder.select_streams(ids):
            streams[cast(UUID, stored.originator_id)].append(self.mapper.to_domain_event(stored))
        return [replay(None, streams[i]) if streams[i] else None for i in ids]

    def _get_or_none(self, aggregate_id: UUID) -> object | None:
        aggregate: object = None
        with contextlib.suppress(AggregateNotFoundError):
            aggregate = self.repository.get(aggregate_id, projector_func=replay)
        return aggregate

    def _calendar(self) -> IntakeCalendar | None:
        calendar = self._get_or_none(CALENDAR_ID)
        return calendar if isinstance(calendar, IntakeCalendar) else None

    @staticmethod
    def _check_open(calendar: object, application: CityApplication, act: Act) -> None:
        if not isinstance(calendar, IntakeCalendar):
            raise WindowClosed("no intake has been opened")
        calendar.check_open(application.intake_year, act)

    @staticmethod
    def _ledger(act: Act, ledger: object, application: CityApplication) -> QuotaLedger:
        if isinstance(ledger, QuotaLedger):
            return ledger
        return QuotaLedger.open(act, application.country, application.intake_year)
