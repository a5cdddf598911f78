"""The HTTP API: the CLI's use cases and queries over JSON, for bearer tokens with roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from application.clock import Clock
from application.registry import Admission, Registry
from domain.access import PERSONAL_DATA, ReadScope, read_scope
from domain.acts import Actor
from domain.applications import CityApplication, Status
from domain.calendar import local_date
from domain.cities import City, Report
from domain.errors import GnlcError, InvalidInput, NotAuthenticated
from domain.forms import (
    ApplicationForm,
    ContactUpdate,
    CountryCode,
    IsoDate,
    IsoDateTime,
    ProgressReport,
)
from domain.intakes import IntakeCalendar
from domain.quotas import QuotaLedger
from infrastructure.http import problems
from infrastructure.http.idempotency import IdempotencyKeys, Outcome, Recorded, fingerprint
from infrastructure.http.limits import FailedAuthentications, RateLimiter
from infrastructure.http.schemas import (
    AdmissionRequest,
    Admitted,
    ApplicationPage,
    ApplicationView,
    CityView,
    ContactsWritten,
    DeadlinePage,
    Empty,
    ErasureRequest,
    ErasureWritten,
    EventView,
    ExtensionRequest,
    Health,
    IntakeRequest,
    IntakeWritten,
    MemberPage,
    MembershipEnded,
    MembershipEndRequest,
    QuotaPage,
    Readiness,
    ReasonRequest,
    RejectionRequest,
    ReportWritten,
    StatusWritten,
    Submitted,
)
from infrastructure.readmodels.read_side import ReadSide
from infrastructure.views import (
    application_view,
    city_view,
    history_view,
    intake_view,
    plain,
    with_contacts,
)
from projections import answers
from projections.base import Row

MIN_POSITION_WAIT_SECONDS = 5.0


@dataclass
class Services:
    """What the API works with, built by the composition root."""

    registry: Registry
    read_side: ReadSide
    keys: IdempotencyKeys
    limiter: RateLimiter
    clock: Clock
    timezone: str
    # Runs for the server's lifetime (the in-process projection runner), or does nothing.
    background: Callable[[], AbstractContextManager[object]] = nullcontext
    # Failed authentications per client address (off unless configured).
    failures: FailedAuthentications = field(
        default_factory=lambda: FailedAuthentications(0.0, 0))


bearer = HTTPBearer(auto_error=False, description="a token from `gnlc tokens create`")


def create_api(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with services.background():
            yield

    api = FastAPI(
        title="gnlc",
        summary="The membership registry of the UNESCO Global Network of Learning Cities",
        version="1",
        lifespan=lifespan,
        responses=problems.COMMON,
    )
    api.state.services = services
    problems.install(api)
    _commands(api, services)
    _queries(api, services)
    _probes(api, services)
    return api


# --- authentication --------------------------------------------------------------------------

async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Actor:
    """The token's actor; refused without a valid token, or over its rate.

    Run on the event loop, not in the thread pool: the token is cached and checked with one
    indexed query, far cheaper than handing the request to a thread and back (see
    benchmarks/README.md, "HTTP API")."""
    services: Services = request.app.state.services
    if credentials is None:
        raise NotAuthenticated("an Authorization: Bearer token is required")
    address = request.client.host if request.client else "unknown"
    if wait := services.failures.refusal(address, credentials.credentials):
        raise problems.TooManyRequests(
            wait, "too many failed authentications from this address")
    try:
        actor = services.registry.authenticate(credentials.credentials)
    except NotAuthenticated:
        services.failures.failed(address)
        raise
    services.failures.succeeded(credentials.credentials)
    wait = services.limiter.admit(actor.name)
    if wait:
        raise problems.TooManyRequests(wait)
    return replace(actor, correlation_id=request_id(request))


def request_id(request: Request) -> str:
    """The caller's X-Request-ID when it is a sensible one, else a new id; events record it."""
    given = request.headers.get("X-Request-ID", "")
    if 0 < len(given) <= 100 and given.isascii() and given.isprintable():
        return given
    return str(uuid4())


Caller = Annotated[Actor, Depends(authenticated)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255,
    description="a retry with the same key and body returns the first response")]
ApplicationId = Annotated[UUID, Path(description="the application's id")]
CityId = Annotated[UUID, Path(description="the city's id")]


A = TypeVar("A")
E = TypeVar("E")


@dataclass(frozen=True)
class Committed:
    """The events a keyed command committed, read back to rebuild its lost response."""

    registry: Registry
    events: list[Any]

    @classmethod
    def load(cls, registry: Registry, recorded: Recorded) -> Committed:
        found = registry.recorder.select_notifications(
            recorded.first, recorded.last - recorded.first + 1, stop=recorded.last)
        return cls(registry, [registry.mapper.to_domain_event(n) for n in found])

    def event(self, kind: type[E]) -> E:
        return next(e for e in self.events if isinstance(e, kind))

    def aggregate(self, kind: type[A]) -> A:
        """The aggregate of that type the command changed, as the command left it."""
        versions: dict[UUID, int] = {}
        for e in self.events:
            versions[e.originator_id] = e.originator_version
        for originator_id, version in versions.items():
            found = self.registry.repository.get(originator_id, version=version)
            if isinstance(found, kind):
                return found
        raise LookupError(f"no {kind.__name__} among the recorded events")


def _command(services: Services, request: Request, actor: Actor, key: str | None,
             body: BaseModel, status: int, action: Callable[[], dict[str, Any]],
             replay: Callable[[Committed], dict[str, Any]]) -> JSONResponse:
    """Run a use case once per idempotency key; the response carries the log position.

    `replay` gives what `action` returned, from the events the use case committed: a retry
    whose first request died after the commit answers with it (see idempotency.py)."""
    def execute() -> Outcome:
        services.registry.forget_last_position()
        try:
            result = plain(action())
        except GnlcError as error:
            return problems.for_error(error)
        return status, {**result, "position": services.registry.last_position()}

    def rebuilt(recorded: Recorded) -> Outcome:
        result = plain(replay(Committed.load(services.registry, recorded)))
        return status, {**result, "position": recorded.last}

    if key is None:
        code, content = execute()
    else:
        print_ = fingerprint(request.method, request.url.path, body)
        code, content = services.keys.once(actor.name, key, print_, execute, problems.keep,
                                           rebuilt)
    media = "application/problem+json" if code >= 400 else "application/json"
    return JSONResponse(content, status_code=code, media_type=media)


def _commands(api: FastAPI, s: Services) -> None:
    reg = s.registry

    @api.post("/intakes", status_code=201, response_model=IntakeWritten, tags=["intakes"])
    def open_intake(request: Request, body: IntakeRequest, actor: Caller,
                    key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 201, lambda: intake_view(
            reg.open_intake(actor, body.year, body.opens, body.closes)),
            lambda c: intake_view(c.aggregate(IntakeCalendar).intakes[body.year]))

    @api.post("/intakes/{year}/extensions", response_model=IntakeWritten, tags=["intakes"])
    def extend_intake(request: Request, year: Annotated[int, Path(ge=1900, le=9998)],
                      body: ExtensionRequest, actor: Caller,
                      key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 200, lambda: intake_view(
            reg.extend_intake(actor, year, body.closes, body.reason)),
            lambda c: intake_view(c.aggregate(IntakeCalendar).intakes[year]))

    @api.post("/applications", status_code=201, response_model=Submitted,
              tags=["applications"])
    def submit(request: Request, body: ApplicationForm, actor: Caller,
               key: IdempotencyKey = None) -> JSONResponse:
        def action() -> dict[str, Any]:
            done = reg.submit_application(actor, body)  # validated once, by FastAPI
            return {"application_id": done.application_id, "city_id": done.city_id}

        def replay(c: Committed) -> dict[str, Any]:
            application = c.aggregate(CityApplication)
            return {"application_id": application.id, "city_id": application.city_id}
        return _command(s, request, actor, key, body, 201, action, replay)

    def status_of(verb: Callable[[], Any], status: str) -> Callable[[], dict[str, Any]]:
        return lambda: {"application_id": verb().id, "status": status}

    def replayed(application_id: UUID, status: str) -> Callable[[Committed], dict[str, Any]]:
        return lambda _: {"application_id": application_id, "status": status}

    @api.post("/applications/{application_id}/endorsement", response_model=StatusWritten,
              tags=["applications"])
    def endorse(request: Request, application_id: ApplicationId, body: Empty, actor: Caller,
                key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 200, status_of(
            lambda: reg.endorse(actor, application_id), "endorsed"),
            replayed(application_id, "endorsed"))

    @api.post("/applications/{application_id}/declination", response_model=StatusWritten,
              tags=["applications"])
    def decline(request: Request, application_id: ApplicationId, body: ReasonRequest,
                actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 200, status_of(
            lambda: reg.decline(actor, application_id, body.reason), "declined"),
            replayed(application_id, "declined"))

    @api.post("/applications/{application_id}/withdrawal", response_model=StatusWritten,
              tags=["applications"])
    def withdraw(request: Request, application_id: ApplicationId, body: ReasonRequest,
                 actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 200, status_of(
            lambda: reg.withdraw(actor, application_id, body.reason), "withdrawn"),
            replayed(application_id, "withdrawn"))

    @api.post("/applications/{application_id}/admission", response_model=Admitted,
              tags=["applications"])
    def admit(request: Request, application_id: ApplicationId, body: AdmissionRequest,
              actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        def admitted(a: Admission) -> dict[str, Any]:
            return {"application_id": a.application_id, "city_id": a.city_id,
                    "status": "admitted", "quota": {"country": a.country, "year": a.quota_year,
                                                    "used": a.used, "limit": a.limit}}

        def replay(c: Committed) -> dict[str, Any]:
            taken, ledger = c.event(QuotaLedger.PlaceTaken), c.aggregate(QuotaLedger)
            return admitted(Admission(taken.application_id, taken.city_id, ledger.country,
                                      ledger.year, ledger.used, taken.limit))
        return _command(s, request, actor, key, body, 200, lambda: admitted(
            reg.admit(actor, application_id, body.reason, body.jury)), replay)

    @api.post("/applications/{application_id}/rejection", response_model=StatusWritten,
              tags=["applications"])
    def reject(request: Request, application_id: ApplicationId, body: RejectionRequest,
               actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 200, status_of(
            lambda: reg.reject(actor, application_id, body.reason, body.jury), "rejected"),
            replayed(application_id, "rejected"))

    @api.post("/applications/{application_id}/retraction", response_model=StatusWritten,
              tags=["applications"])
    def retract(request: Request, application_id: ApplicationId, body: ReasonRequest,
                actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        return _command(s, request, actor, key, body, 200, status_of(
            lambda: reg.retract(actor, application_id, body.reason), "retracted"),
            replayed(application_id, "retracted"))

    @api.post("/cities/{city_id}/reports", status_code=201, response_model=ReportWritten,
              tags=["cities"])
    def report(request: Request, city_id: CityId, body: ProgressReport, actor: Caller,
               key: IdempotencyKey = None) -> JSONResponse:
        def written(r: Report | City.ReportSubmitted) -> dict[str, Any]:
            return {"city_id": city_id, "cycle": r.cycle, "due": r.due, "late": r.late}
        return _command(s, request, actor, key, body, 201, lambda: written(
            reg.submit_report(actor, city_id, body)),  # validated once, by FastAPI
            lambda c: written(c.event(City.ReportSubmitted)))

    @api.post("/cities/{city_id}/membership-end", response_model=MembershipEnded,
              tags=["cities"])
    def end_membership(request: Request, city_id: CityId, body: MembershipEndRequest,
                       actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        def action() -> dict[str, Any]:
            reg.end_membership(actor, city_id, body.reason, body.note)
            return {"city_id": city_id, "status": "ended"}
        return _command(s, request, actor, key, body, 200, action,
                        lambda _: {"city_id": city_id, "status": "ended"})


    @api.post("/cities/{city_id}/contacts", response_model=ContactsWritten, tags=["cities"])
    def update_contacts(request: Request, city_id: CityId, body: ContactUpdate, actor: Caller,
                        key: IdempotencyKey = None) -> JSONResponse:
        """A new mayor and/or contact person (the city itself, or the secretariat)."""
        # The answer names who was updated, never their data: it is kept for retries.
        def action() -> dict[str, Any]:
            return {"city_id": city_id, "updated": reg.update_contacts(actor, city_id, body)}
        return _command(s, request, actor, key, body, 200, action, lambda c: {
            "city_id": city_id,
            "updated": [e.person for e in c.events if isinstance(e, City.ContactUpdated)]})

    @api.post("/cities/{city_id}/personal-data/erasure", response_model=ErasureWritten,
              tags=["cities"])
    def erase_personal_data(request: Request, city_id: CityId, body: ErasureRequest,
                            actor: Caller, key: IdempotencyKey = None) -> JSONResponse:
        """Erase the personal data of the city's mayors and/or contact persons (the
        secretariat): their data keys are destroyed; a `city.personal_data_erased` event
        records who, when, why and which keys. With every key gone already, nothing is
        recorded and `recorded` is false."""
        def action() -> dict[str, Any]:
            done = reg.erase_personal_data(actor, city_id, body.persons, body.reason)
            return {"city_id": city_id, "persons": list(done.persons),
                    "recorded": done.recorded, "erased_key_ids": done.erased_key_ids,
                    "erased_before": done.erased_before,
                    "plaintext_events": done.plaintext_events,
                    "message": None if done.recorded else (
                        "nothing to erase: every data key of these persons is gone already")}

        def replay(c: Committed) -> dict[str, Any]:
            e = c.event(City.PersonalDataErased)
            earlier = c.aggregate(City).erasures[:-1]  # the city as this erasure left it
            return {"city_id": city_id, "persons": e.persons, "recorded": True,
                    "erased_key_ids": e.key_ids,
                    "erased_before": sorted({k for x in earlier if set(x.persons) & set(e.persons)
                                             for k in x.key_ids}),
                    "plaintext_events": e.plaintext_events, "message": None}
        return _command(s, request, actor, key, body, 200, action, replay)


# --- queries ---------------------------------------------------------------------------------

Country = Annotated[CountryCode | None, Query(description="ISO 3166-1 alpha-2")]
# Days a query may name: reporting deadlines are counted up to the first one after `today`, so a
# day near the calendar's end would run past year 9999 (and list thousands of cycles).
Day = Annotated[IsoDate, Field(ge=date(1900, 1, 1), le=date(2999, 12, 31))]
AsOf = Annotated[Day | None, Query(
    description="the network as it stood at the end of this day (business time)")]
KnownAt = Annotated[IsoDateTime | None, Query(
    description="what the registry had recorded by this moment (ISO 8601 with offset)")]
Today = Annotated[Day | None, Query(description="the day deadlines are measured against")]
MinPosition = Annotated[int | None, Query(
    ge=0, description="wait (at most 5 s) until the read models include this log position")]
Year = Annotated[int | None, Query(ge=1900, le=9998)]
Limit = Annotated[int, Query(ge=1, le=answers.MAX_LIMIT, description="rows per page")]
Cursor = Annotated[str | None, Query(
    max_length=500, description="the `next_cursor` of the previous page (opaque)")]


def _scope(actor: Actor, country: str | None, as_of: date | None = None,
           known_at: datetime | None = None) -> ReadScope:
    """What the actor may read of the read models: the domain's one rule, `read_scope`."""
    return read_scope(actor, country, past=as_of is not None or known_at is not None)


async def _rows(s: Services, actor: Actor, scope: ReadScope, table: str, as_of: date | None,
                known_at: datetime | None, min_position: int | None) -> list[Row]:
    """The stored rows within `scope`, read on the event loop (one short query); what may take
    long (waiting for `min_position`, replaying the log to a past point) goes to the thread
    pool."""
    if as_of is not None or known_at is not None:
        if known_at is not None and known_at.tzinfo is None:
            raise InvalidInput("known_at must carry a UTC offset (e.g. +01:00)", field="known_at")
        return scope.narrow(await run_in_threadpool(
            lambda: s.read_side.rows(table, as_of, known_at, reader=actor)))
    if min_position is not None and not s.read_side.reached(min_position, table):
        await run_in_threadpool(s.read_side.reach, min_position, table,
                                MIN_POSITION_WAIT_SECONDS)
    return scope.narrow(s.read_side.stored_rows(table, country=scope.country))


def _with_contacts(s: Services, actor: Actor, members: list[Row], as_of: date | None,
                   known_at: datetime | None) -> list[Row]:
    """The members with their current mayor and contact person (as of the same point)."""
    return with_contacts(s.registry, s.read_side, actor, members,
                         PERSONAL_DATA in actor.scopes, as_of, known_at)


def _page(rows: list[Row], order: str, limit: int, cursor: str | None) -> dict[str, Any]:
    found = answers.page(rows, order, limit, cursor)
    return {"items": found.items, "total": found.total, "next_cursor": found.next_cursor}


def _today(s: Services, asked: date | None) -> date:
    return asked or local_date(s.clock.now(), s.timezone)


def _queries(api: FastAPI, s: Services) -> None:
    reg = s.registry

    @api.get("/members", response_model=MemberPage, tags=["queries"])
    async def members(actor: Caller, country: Country = None,
                status: Annotated[str, Query(pattern="^(active|ended|all)$")] = "active",
                as_of: AsOf = None, known_at: KnownAt = None, today: Today = None,
                min_position: MinPosition = None, limit: Limit = answers.DEFAULT_LIMIT,
                cursor: Cursor = None) -> dict[str, Any]:
        scope = _scope(actor, country, as_of, known_at)
        rows = await _rows(s, actor, scope, "members", as_of, known_at, min_position)
        on = today or as_of or _today(s, None)
        page = _page(answers.members(rows, on, scope.country, status), "members", limit, cursor)
        page["items"] = await run_in_threadpool(
            _with_contacts, s, actor, page["items"], as_of, known_at)
        return page

    @api.get("/quotas", response_model=QuotaPage, tags=["queries"])
    async def quotas(actor: Caller, year: Year = None, country: Country = None, as_of: AsOf = None,
               known_at: KnownAt = None, min_position: MinPosition = None,
               limit: Limit = answers.DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        scope = _scope(actor, country, as_of, known_at)
        rows = await _rows(s, actor, scope, "quotas", as_of, known_at, min_position)
        return _page(answers.quotas(rows, year, scope.country), "quotas", limit, cursor)

    @api.get("/deadlines", response_model=DeadlinePage, tags=["queries"])
    async def deadlines(actor: Caller, today: Today = None, overdue: bool = False,
                  due_before: Annotated[Day | None, Query()] = None, country: Country = None,
                  min_position: MinPosition = None, limit: Limit = answers.DEFAULT_LIMIT,
                  cursor: Cursor = None) -> dict[str, Any]:
        scope = _scope(actor, country)
        rows = await _rows(s, actor, scope, "deadlines", None, None, min_position)
        return _page(answers.deadline_list(rows, _today(s, today), overdue, due_before,
                                           scope.country), "deadlines", limit, cursor)

    @api.get("/applications", response_model=ApplicationPage, tags=["queries"])
    async def applications(actor: Caller, year: Year = None,
                     status: Annotated[str | None, Query(
                         pattern="^(" + "|".join(Status) + ")$")] = None,
                     country: Country = None, min_position: MinPosition = None,
                     limit: Limit = answers.DEFAULT_LIMIT,
                     cursor: Cursor = None) -> dict[str, Any]:
        scope = _scope(actor, country)
        rows = await _rows(s, actor, scope, "applications", None, None, min_position)
        return _page(answers.applications(rows, year, status, scope.country),
                     "applications", limit, cursor)

    @api.get("/applications/{application_id}", response_model=ApplicationView,
             tags=["applications"])
    def application(application_id: ApplicationId, actor: Caller) -> dict[str, Any]:
        return application_view(reg.personal_data, reg.application(actor, application_id),
                                PERSONAL_DATA in actor.scopes)

    @api.get("/cities/{city_id}", response_model=CityView, tags=["cities"])
    def city(city_id: CityId, actor: Caller) -> dict[str, Any]:
        return city_view(reg.city(actor, city_id))

    @api.get("/cities/{city_id}/history", response_model=list[EventView], tags=["cities"])
    def history(city_id: CityId, actor: Caller) -> list[dict[str, Any]]:
        return history_view(reg, reg.history(actor, city_id), PERSONAL_DATA in actor.scopes)


# --- probes ----------------------------------------------------------------------------------

def _probes(api: FastAPI, s: Services) -> None:
    @api.get("/health", response_model=Health, tags=["probes"])
    async def health() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @api.get("/ready", response_model=Readiness, tags=["probes"],
             responses={503: problems.RESPONSE})
    def ready() -> dict[str, Any]:
        """The database answers; the body says how many seconds each projection lags behind
        the log, and nothing else: it needs no token, so no positions and no audit head (those
        are `GET /audit/head`'s, for auditors)."""
        return {"ready": True, "projections": {
            name: {"lag_seconds": lag}
            for name, lag in sorted(s.read_side.lag_seconds().items())}}

