"""The console's pages: each one asks the same use cases and read-side queries as the HTTP API,
as the signed-in token's actor; what a role may see or do is decided there, never here."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from uuid import UUID, uuid4

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from application.clock import Clock
from application.registry import Registry
from domain.access import PERMISSIONS, PERSONAL_DATA, Action, ReadScope, authorise, read_scope
from domain.acts import Actor
from domain.applications import Status
from domain.calendar import local_date
from domain.errors import Forbidden, GnlcError, InvalidInput, NotAuthenticated
from domain.intakes import CALENDAR_ID, IntakeCalendar
from domain.reporting import REVIEW_AFTER_DAYS
from infrastructure.audit.log import StoredLog, export
from infrastructure.console import i18n, worldmap
from infrastructure.console.sessions import COOKIE, SIGN_IN_CSRF_COOKIE, Session, Sessions, same
from infrastructure.console.verification import Verifications
from infrastructure.eventstore.head_watch import HeadWatcher
from infrastructure.http import problems
from infrastructure.http.limits import RateLimiter
from infrastructure.readmodels.read_side import ReadSide
from infrastructure.views import application_view, city_view, history_view, with_contacts
from projections import answers
from projections.base import Row

HERE = Path(__file__).parent
DUE_WITHIN_DAYS = 90
PAGE_SIZE = 100
WAIT_SECONDS = 10.0  # for the projection runner to include what was just committed
ACTIONS = ("endorse", "decline", "admit", "reject", "retract", "withdraw")


def N_(text: str) -> str:
    """Marks a message for the catalogue (pybabel extract); translated where it is shown."""
    return text


# What a page says after an act went through (the `done` of its redirect).
DONE = {
    "opened": N_("The intake is open."), "extended": N_("The intake is extended."),
    "submitted": N_("The application is submitted."),
    "endorsed": N_("The application is endorsed."),
    "declined": N_("The application is declined."), "admitted": N_("The city is admitted."),
    "rejected": N_("The application is rejected."),
    "retracted": N_("The admission is retracted."),
    "withdrawn": N_("The application is withdrawn."),
    "report_submitted": N_("The report is submitted."),
}
# Words the pages show from data (statuses, roles, steps), translated by the templates.
WORDS = (
    N_("submitted"), N_("endorsed"), N_("declined"), N_("withdrawn"), N_("admitted"),
    N_("rejected"), N_("retracted"), N_("active"), N_("ended"), N_("all"), N_("applicant"),
    N_("upcoming"), N_("overdue"), N_("secretariat"), N_("national_commission"), N_("city"),
    N_("auditor"), N_("subscriber"),
)
MEMBER_SORTS = ("name", "country", "status", "intake_year", "next_report_due", "days_overdue")
DEADLINE_VIEWS = ("due", "overdue", "flagged", "all")


@dataclass
class ConsoleServices:
    registry: Registry
    read_side: ReadSide
    log: StoredLog
    watcher: HeadWatcher
    clock: Clock
    timezone: str
    limiter: RateLimiter | None = None
    heartbeat_seconds: float = 15.0


class SignedOut(Exception):
    """No session, or its token is no longer in force: back to the sign-in page."""


@dataclass
class Context:
    request: Request
    language: str
    actor: Actor | None = None
    session_id: str | None = None
    session: Session | None = None

    @property
    def who(self) -> Actor:
        """The signed-in actor (pages are only reached signed in)."""
        assert self.actor is not None
        return self.actor

    @property
    def may(self) -> frozenset[Action]:
        return PERMISSIONS[self.actor.role] if self.actor else frozenset()


def add_console(api: FastAPI, services: ConsoleServices) -> None:
    """Mount the console on the API's app, outside its OpenAPI schema."""
    console = Console(services)
    api.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    api.include_router(console.router)

    @api.exception_handler(SignedOut)
    async def signed_out(request: Request, _: SignedOut) -> Response:
        response = RedirectResponse("/?expired=1", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


class Console:
    def __init__(self, services: ConsoleServices) -> None:
        self.s = services
        self.sessions = Sessions()
        self.verifications = Verifications(services.log)
        self.router = APIRouter(include_in_schema=False)
        self.environments = {lang: self._environment(lang) for lang in i18n.LANGUAGES}
        self._routes()

    # --- rendering ---------------------------------------------------------------------------

    def _environment(self, language: str) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True, extensions=["jinja2.ext.i18n"], trim_blocks=True,
            lstrip_blocks=True)
        # jinja2.ext.i18n adds this method to the environment
        env.install_gettext_translations(  # type: ignore[attr-defined]
            i18n.translations(language), newstyle=True)
        env.globals.update(
            day=lambda v: i18n.day(v, language),
            moment=lambda v: i18n.moment(v, language, self.s.timezone),
            country=lambda c: i18n.country_name(c, language),
            done_text=lambda key: i18n.translations(language).gettext(DONE.get(key, "")),
            language=language, languages=i18n.LANGUAGES, Action=Action)
        return env

    def render(self, ctx: Context, template: str, status: int = 200, **values: Any
               ) -> HTMLResponse:
        html = self.environments[ctx.language].get_template(template).render(
            request=ctx.request, actor=ctx.actor, may=ctx.may,
            csrf=ctx.session.csrf if ctx.session else "", path=ctx.request.url.path,
            query=str(ctx.request.url.query), **values)
        response = HTMLResponse(html, status_code=status)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def refused(self, ctx: Context, error: GnlcError, template: str = "error.html",
                **values: Any) -> HTMLResponse:
        status, _ = problems.for_error(error)
        return self.render(ctx, template, status, error=error, **values)

    # --- sessions ----------------------------------------------------------------------------

    def context(self, request: Request, signed_in: bool = True) -> Context:
        language = i18n.negotiate(request.cookies.get(i18n.LANG_COOKIE),
                                  request.headers.get("Accept-Language"))
        ctx = Context(request, language)
        if not signed_in:
            return ctx
        session_id = request.cookies.get(COOKIE)
        session = self.sessions.get(session_id)
        if session is None:
            raise SignedOut
        try:
            actor = self.s.registry.authenticate(session.token)
        except NotAuthenticated:
            self.sessions.end(session_id)  # revoked since sign-in: the session ends now
            raise SignedOut from None
        wait = self.s.limiter.admit(actor.name) if self.s.limiter is not None else 0.0
        if wait:
            raise problems.TooManyRequests(wait)
        ctx.actor = replace(actor, correlation_id=str(uuid4()))
        ctx.session_id, ctx.session = session_id, session
        return ctx

    async def posted(self, request: Request) -> tuple[Context, dict[str, str]]:
        """A signed-in POST's form fields, once its CSRF token matched the session's."""
        ctx = self.context(request)
        form = await _form(request)
        if ctx.session is None or not same(form.get("csrf"), ctx.session.csrf):
            raise Forbidden("the form's CSRF token does not match the session's",
                            field="csrf")
        return ctx, form

    def rows(self, table: str, scope: ReadScope) -> list[Row]:
        """A read model's rows within `scope`, including every event committed so far: a page
        shown after an act includes it (read-your-writes), as the API's `min_position` does."""
        head = self.s.registry.recorder.max_notification_id() or 0
        self.s.read_side.reach(head, table, WAIT_SECONDS)
        return scope.narrow(self.s.read_side.stored_rows(table, country=scope.country))

    def today(self) -> date:
        return local_date(self.s.clock.now(), self.s.timezone)

    # --- routes ------------------------------------------------------------------------------

    def _routes(self) -> None:
        r, reg = self.router, self.s.registry

        @r.get("/", response_class=HTMLResponse)
        def sign_in_page(request: Request) -> Response:
            ctx = self.context(request, signed_in=False)
            if self.sessions.get(request.cookies.get(COOKIE)):
                return RedirectResponse("/console/members", status_code=303)
            return self._sign_in(ctx, expired="expired" in request.query_params)

        @r.post("/console/sign-in")
        async def sign_in(request: Request) -> Response:
            ctx = self.context(request, signed_in=False)
            form = await _form(request)
            if not same(form.get("csrf"), request.cookies.get(SIGN_IN_CSRF_COOKIE)):
                return self._sign_in(ctx, status=403, error="csrf")
            token = form.get("token", "").strip()
            try:
                await run_in_threadpool(reg.authenticate, token)
            except NotAuthenticated:
                return self._sign_in(ctx, status=401, error="token")
            session_id, _session = self.sessions.start(token)
            response = RedirectResponse("/console/members", status_code=303)
            response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
            response.delete_cookie(SIGN_IN_CSRF_COOKIE, path="/")
            return response

        @r.post("/console/sign-out")
        async def sign_out(request: Request) -> Response:
            form = await _form(request)
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is not None and same(form.get("csrf"), session.csrf):
                self.sessions.end(request.cookies.get(COOKIE))
            response = RedirectResponse("/", status_code=303)
            response.delete_cookie(COOKIE, path="/")
            return response

        @r.get("/console/language")
        def language(request: Request, to: str = "en", next: str = "/") -> Response:
            # Only a path of this server: "//host" and "/\\host" would leave it.
            target = next if next.startswith("/") and next[1:2] not in ("/", "\\") else "/"
            response = RedirectResponse(target, status_code=303)
            if to in i18n.LANGUAGES:
                response.set_cookie(i18n.LANG_COOKIE, to, samesite="strict",
                                    max_age=365 * 86400, path="/")
            return response

        @r.get("/console/members", response_class=HTMLResponse)
        def members(request: Request, country: str = "", status: str = "active",
                    year: str = "", overdue: str = "", flagged: str = "",
                    sort: str = "country", order: str = "asc", page: str = "1") -> Response:
            ctx = self.context(request)
            try:
                scope = read_scope(ctx.who, country.upper() or None)
            except GnlcError as error:
                return self.refused(ctx, error)
            rows = self.rows("members", scope)
            every = answers.members(rows, self.today(), scope.country,
                                    status if status in ("active", "ended", "all") else "active")
            # The map shows where the active members are, whatever the table's filters.
            active = answers.members(rows, self.today(), scope.country, "active")
            shown = [m for m in every
                     if (not year or str(m["intake_year"]) == year)
                     and (not overdue or (m["days_overdue"] or 0) > 0)
                     and (not flagged or m["flagged_for_review"])]
            key = sort if sort in MEMBER_SORTS else "country"
            shown.sort(key=lambda m: (m[key] is None, m[key] if m[key] is not None else 0,
                                      m["name"]), reverse=order == "desc")
            counts: dict[str, int] = {}
            for m in active:
                counts[m["country"]] = counts.get(m["country"], 0) + 1
            most = max(counts.values(), default=0)
            shapes = [(shape, counts.get(shape.code, 0),
                       worldmap.shade(counts.get(shape.code, 0), most))
                      for shape in worldmap.shapes()]
            return self.render(ctx, "members.html", shapes=shapes,
                               **_paged(request, shown, page),
                               map_size=(worldmap.WIDTH, worldmap.HEIGHT),
                               filters={"country": country.upper(), "status": status,
                                        "year": year, "overdue": overdue, "flagged": flagged},
                               sort=key, order=order, sorts=MEMBER_SORTS,
                               sort_link=lambda column: _link(request, sort=column, order=(
                                   "desc" if key == column and order == "asc" else "asc")))

        @r.get("/console/quotas", response_class=HTMLResponse)
        def quotas(request: Request, year: str = "") -> Response:
            ctx = self.context(request)
            try:
                scope = read_scope(ctx.who)
                intakes = reg.intakes(ctx.who)
            except GnlcError as error:
                return self.refused(ctx, error)
            chosen = _year(year) or (intakes[-1].year if intakes else self.today().year)
            rows = answers.quotas(self.rows("quotas", scope),
                                  chosen, scope.country)
            intake = next((i for i in intakes if i.year == chosen), None)
            extensions = self._extensions(chosen)
            return self.render(ctx, "quotas.html", rows=rows, year=chosen, intake=intake,
                               intakes=intakes, extensions=extensions)

        @r.get("/console/deadlines", response_model=None)
        def deadlines(request: Request, view: str = "due", country: str = "",
                      format: str = "html", page: str = "1") -> Response:
            ctx = self.context(request)
            try:
                scope = read_scope(ctx.who, country.upper() or None)
            except GnlcError as error:
                return self.refused(ctx, error)
            today = self.today()
            rows = self.rows("deadlines", scope)
            view = view if view in DEADLINE_VIEWS else "due"
            listed = answers.deadline_list(
                rows, today, overdue=view in ("overdue", "flagged"),
                due_before=today + timedelta(days=DUE_WITHIN_DAYS + 1) if view == "due"
                else None, country=scope.country)
            if view == "due":
                listed = [d for d in listed if d["status"] == "upcoming" and d["due"] >= today]
            if view == "flagged":
                listed = [d for d in listed if (d["days_overdue"] or 0) > REVIEW_AFTER_DAYS]
            if format == "csv":
                return _csv(listed, f"deadlines-{view}-{today.isoformat()}.csv")
            return self.render(ctx, "deadlines.html", **_paged(request, listed, page),
                               view=view, views=DEADLINE_VIEWS,
                               country_filter=country.upper(), today=today,
                               csv_link=_link(request, format="csv"),
                               review_days=REVIEW_AFTER_DAYS, within=DUE_WITHIN_DAYS)

        @r.get("/console/applications", response_class=HTMLResponse)
        def applications(request: Request, year: str = "", country: str = "") -> Response:
            ctx = self.context(request)
            try:
                scope = read_scope(ctx.who, country.upper() or None)
                intakes = reg.intakes(ctx.who)
            except GnlcError as error:
                return self.refused(ctx, error)
            chosen = _year(year) or (intakes[-1].year if intakes else self.today().year)
            rows = answers.applications(self.rows("applications", scope), chosen, None,
                                        scope.country)
            columns = [(status, [row for row in rows if row["status"] == status])
                       for status in Status]
            return self.render(ctx, "applications.html", columns=columns, year=chosen,
                               intakes=intakes, country_filter=country.upper())

        @r.get("/console/applications/new", response_class=HTMLResponse)
        def new_application(request: Request) -> Response:
            ctx = self.context(request)
            return self.render(ctx, "apply.html", form={}, today=self.today())

        @r.post("/console/applications")
        async def submit(request: Request) -> Response:
            ctx, form = await self.posted(request)
            data = _application_form(form)
            try:
                done = await run_in_threadpool(reg.submit_application, ctx.who, data)
            except GnlcError as error:
                return self.refused(ctx, error, "apply.html", form=form, today=self.today())
            return RedirectResponse(f"/console/applications/{done.application_id}?done=submitted",
                                    status_code=303)

        @r.get("/console/applications/{application_id}", response_class=HTMLResponse)
        def application(request: Request, application_id: str, done: str = "") -> Response:
            ctx = self.context(request)
            try:
                return self._application(ctx, _uuid(application_id), done=done)
            except GnlcError as error:
                return self.refused(ctx, error)

        @r.get("/console/applications/{application_id}/admit", response_class=HTMLResponse)
        def confirm_admission(request: Request, application_id: str) -> Response:
            ctx = self.context(request)
            try:
                found = reg.application(ctx.who, _uuid(application_id))
                authorise(ctx.who, Action.ADMIT, found.country, found.city_id)
                quota = self._quota(ctx, found.country, found.intake_year)
            except GnlcError as error:
                return self.refused(ctx, error)
            return self.render(ctx, "admit.html",
                               application=application_view(reg.personal_data, found, False),
                               quota=quota)

        @r.post("/console/applications/{application_id}/{action}")
        async def act(request: Request, application_id: str, action: str) -> Response:
            ctx, form = await self.posted(request)
            actor, reason = ctx.who, form.get("reason", "").strip()
            jury = form.get("jury") or None
            verbs: dict[str, Callable[[UUID], Any]] = {
                "endorse": lambda i: reg.endorse(actor, i),
                "decline": lambda i: reg.decline(actor, i, reason),
                "withdraw": lambda i: reg.withdraw(actor, i, reason),
                "admit": lambda i: reg.admit(actor, i, reason or None, jury),
                "reject": lambda i: reg.reject(actor, i, reason, jury),
                "retract": lambda i: reg.retract(actor, i, reason),
            }
            try:
                identifier = _uuid(application_id)
                if action not in verbs:
                    raise InvalidInput(f"unknown action {action!r}", field="action")
                await run_in_threadpool(verbs[action], identifier)
            except GnlcError as error:
                refusal = error
                try:
                    return await run_in_threadpool(
                        lambda: self._application(ctx, _uuid(application_id), error=refusal))
                except GnlcError:
                    return self.refused(ctx, refusal)
            past = {"endorse": "endorsed", "decline": "declined", "admit": "admitted",
                    "reject": "rejected", "retract": "retracted", "withdraw": "withdrawn"}
            return RedirectResponse(f"/console/applications/{identifier}?done={past[action]}",
                                    status_code=303)

        @r.get("/console/intakes", response_class=HTMLResponse)
        def intakes(request: Request, done: str = "") -> Response:
            ctx = self.context(request)
            try:
                found = reg.intakes(ctx.who)
            except GnlcError as error:
                return self.refused(ctx, error)
            return self.render(ctx, "intakes.html", intakes=found, done=done,
                               today=self.today())

        @r.post("/console/intakes")
        async def open_intake(request: Request) -> Response:
            ctx, form = await self.posted(request)
            try:
                year = _int(form.get("year", ""), "year")
                opens = _date(form.get("opens", ""), "opens")
                closes = _date(form.get("closes", ""), "closes")
                await run_in_threadpool(reg.open_intake, ctx.who, year, opens, closes)
            except GnlcError as error:
                found = reg.intakes(ctx.who)
                return self.refused(ctx, error, "intakes.html", intakes=found, done="",
                                    today=self.today())
            return RedirectResponse("/console/intakes?done=opened", status_code=303)

        @r.post("/console/intakes/{year}/extensions")
        async def extend_intake(request: Request, year: str) -> Response:
            ctx, form = await self.posted(request)
            try:
                closes = _date(form.get("closes", ""), "closes")
                if closes is None:
                    raise InvalidInput("closes is required", field="closes")
                await run_in_threadpool(reg.extend_intake, ctx.who, _int(year, "year"),
                                        closes, form.get("reason", "").strip())
            except GnlcError as error:
                found = reg.intakes(ctx.who)
                return self.refused(ctx, error, "intakes.html", intakes=found, done="",
                                    today=self.today())
            return RedirectResponse("/console/intakes?done=extended", status_code=303)

        @r.get("/console/cities/{city_id}", response_class=HTMLResponse)
        def city(request: Request, city_id: str, as_of: str = "", done: str = "") -> Response:
            ctx = self.context(request)
            try:
                return self._city(ctx, _uuid(city_id), _date(as_of, "as_of"), done=done)
            except GnlcError as error:
                return self.refused(ctx, error)

        @r.post("/console/cities/{city_id}/reports")
        async def report(request: Request, city_id: str) -> Response:
            ctx, form = await self.posted(request)
            data = {"covering_from": form.get("covering_from", ""),
                    "covering_to": form.get("covering_to", ""),
                    "summary": form.get("summary", "")}
            try:
                identifier = _uuid(city_id)
                await run_in_threadpool(reg.submit_report, ctx.who, identifier, data)
            except GnlcError as error:
                refusal = error
                try:
                    return await run_in_threadpool(
                        lambda: self._city(ctx, _uuid(city_id), None, error=refusal))
                except GnlcError:
                    return self.refused(ctx, refusal)
            return RedirectResponse(f"/console/cities/{identifier}?done=report_submitted",
                                    status_code=303)

        @r.get("/console/audit", response_class=HTMLResponse)
        def audit(request: Request) -> Response:
            ctx = self.context(request)
            try:
                authorise(ctx.who, Action.READ_PAST)
            except GnlcError as error:
                return self.refused(ctx, error)
            latest = self.verifications.latest()
            return self.render(ctx, "audit.html", head=self.s.log.head(),
                               verification=latest if latest and latest.running else None)

        @r.post("/console/audit/verify", response_class=HTMLResponse)
        async def verify_chain(request: Request) -> Response:
            ctx, _form = await self.posted(request)
            try:
                authorise(ctx.who, Action.READ_PAST)
            except GnlcError as error:
                return self.refused(ctx, error)
            # In the background, one at a time: the page polls its progress (a long log takes
            # minutes); a second click while one runs shows that one.
            verification = self.verifications.start()
            return self.render(ctx, "audit.html", head=self.s.log.head(),
                               verification=verification)

        @r.get("/console/audit/verification", response_class=HTMLResponse)
        def verification(request: Request) -> Response:
            ctx = self.context(request)
            try:
                authorise(ctx.who, Action.READ_PAST)
            except GnlcError as error:
                return self.refused(ctx, error)
            return self.render(ctx, "verification.html",
                               verification=self.verifications.latest())

        @r.get("/console/audit/export")
        def audit_export(request: Request) -> Response:
            ctx = self.context(request)
            try:
                authorise(ctx.who, Action.READ_PAST)
                out = io.StringIO()
                export(self.s.log, out)
            except GnlcError as error:
                return self.refused(ctx, error)
            return Response(out.getvalue(), media_type="application/x-ndjson", headers={
                "Content-Disposition": 'attachment; filename="gnlc-audit-export.jsonl"'})

        @r.get("/console/stream")
        async def stream(request: Request) -> Response:
            """A signal, no content: the head of the log moved, so listed pages redraw
            themselves (asking their own page again, with the reader's own scope)."""
            self.context(request)
            watcher = self.s.watcher
            start = await run_in_threadpool(lambda: reg.recorder.max_notification_id() or 0)

            async def signals() -> AsyncIterator[str]:
                after = start
                yield f"retry: 2000\nid: {after}\ndata: {after}\n\n"
                while not await request.is_disconnected():
                    if await watcher.wait_beyond(after, self.s.heartbeat_seconds):
                        after = await run_in_threadpool(
                            lambda: reg.recorder.max_notification_id() or 0)
                        yield f"id: {after}\nevent: changed\ndata: {after}\n\n"
                    else:
                        yield ": heartbeat\n\n"
            return StreamingResponse(signals(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

    # --- page parts --------------------------------------------------------------------------

    def _sign_in(self, ctx: Context, status: int = 200, error: str | None = None,
                 expired: bool = False) -> HTMLResponse:
        csrf = ctx.request.cookies.get(SIGN_IN_CSRF_COOKIE) or uuid4().hex + uuid4().hex
        response = self.render(ctx, "sign_in.html", status, sign_in_csrf=csrf, error=error,
                               expired=expired)
        response.set_cookie(SIGN_IN_CSRF_COOKIE, csrf, httponly=True, samesite="strict",
                            secure=ctx.request.url.scheme == "https", path="/")
        return response

    def _application(self, ctx: Context, application_id: UUID, error: GnlcError | None = None,
                     done: str = "") -> HTMLResponse:
        actor = ctx.actor
        assert actor is not None
        found = self.s.registry.application(actor, application_id)
        view = application_view(self.s.registry.personal_data, found,
                                PERSONAL_DATA in actor.scopes)
        actions = [a for a in ACTIONS if Action(a) in ctx.may]
        status = problems.for_error(error)[0] if error else 200
        return self.render(ctx, "application.html", status, application=view, actions=actions,
                           error=error, done=done, personal=PERSONAL_DATA in actor.scopes)

    def _city(self, ctx: Context, city_id: UUID, as_of: date | None,
              error: GnlcError | None = None, done: str = "") -> HTMLResponse:
        actor = ctx.actor
        assert actor is not None
        reg = self.s.registry
        personal = PERSONAL_DATA in actor.scopes
        if as_of is not None:
            past, applications = reg.city_at(actor, city_id, as_of)
            if past is None:
                raise InvalidInput(f"the city did not exist yet on {as_of}", field="as_of")
            view = city_view(past)
        else:
            view = city_view(reg.city(actor, city_id))
            applications = []
        timeline = history_view(reg, reg.history(actor, city_id), personal)
        if as_of is None:  # read-your-writes: the contact update just made included
            self.s.read_side.reach(reg.recorder.max_notification_id() or 0, "contacts",
                                   WAIT_SECONDS)
        contacts = with_contacts(reg, self.s.read_side, actor, [{"city_id": str(city_id)}],
                                 personal, as_of)[0]["contacts"]
        if as_of is not None:
            timeline = [e for e in timeline
                        if local_date(_datetime(e["effective_at"]), self.s.timezone) <= as_of]
        # As of a past day the cycles come from the log replayed to then (`city_at` has
        # authorised reading the past), else from the read model.
        scope = read_scope(actor, view["country"], past=as_of is not None)
        cycles = [d for d in answers.deadline_list(
            scope.narrow(self.s.read_side.rows("deadlines", as_of, reader=actor))
            if as_of is not None else self.rows("deadlines", scope),
            as_of or self.today(), country=view["country"]) if d["city_id"] == str(city_id)]
        status = problems.for_error(error)[0] if error else 200
        return self.render(ctx, "city.html", status, city=view, timeline=list(reversed(timeline)),
                           cycles=cycles, as_of=as_of, error=error, done=done,
                           contacts=contacts,
                           past_applications=[application_view(reg.personal_data, a, personal)
                                              for a in applications])

    def _quota(self, ctx: Context, country: str, year: int) -> Row | None:
        scope = read_scope(ctx.who, country)
        rows = answers.quotas(self.rows("quotas", scope), year, country)
        return rows[0] if rows else None

    def _extensions(self, year: int) -> list[dict[str, Any]]:
        """The year's intake extensions (the calendar is the network's, readable by every role
        that reads: `Registry.intakes` authorised it)."""
        found = []
        for event in self.s.registry.repository.event_store.get(CALENDAR_ID):
            if isinstance(event, IntakeCalendar.IntakeExtended) and event.year == year:
                found.append({"closes": event.closes, "reason": event.reason,
                              "effective_at": event.effective_at})
        return found


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body, first value of each field (no multipart in the console)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _link(request: Request, **changes: str) -> str:
    query = dict(request.query_params)
    query.update(changes)
    return f"{request.url.path}?{urlencode(query)}"


def _paged(request: Request, rows: list[Row], page: str) -> dict[str, Any]:
    """One page of a long table (PAGE_SIZE rows), with the count and the links to the others;
    the CSV download has every row of the filter."""
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    number = min(pages, max(1, int(page))) if page.isdigit() else 1
    return {"rows": rows[(number - 1) * PAGE_SIZE:number * PAGE_SIZE], "total": len(rows),
            "page": number, "pages": pages,
            "page_link": lambda n: _link(request, page=str(n))}


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an id (a UUID)", field="id") from None


def _year(text: str) -> int | None:
    return int(text) if text.isdigit() and 1900 <= int(text) <= 9998 else None


def _int(text: str, field: str) -> int:
    if not text.strip().isdigit():
        raise InvalidInput(f"{field} must be a whole number", field=field)
    return int(text)


def _date(text: str, field: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{field} must be a date (YYYY-MM-DD)", field=field) from None


def _datetime(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _application_form(form: dict[str, str]) -> dict[str, Any]:
    """Part 1 of the form from the page's fields; the use case validates it (field names
    follow the form's, so a refusal names the field as the page labels it)."""
    data: dict[str, Any] = {
        "city": form.get("city", ""), "country": form.get("country", "").upper(),
        "website": form.get("website") or None,
        "mayor": {"title": form.get("mayor.title", ""),
                  "full_name": form.get("mayor.full_name", ""),
                  "official_title": form.get("mayor.official_title", "")},
        "contact": {"full_name": form.get("contact.full_name", ""),
                    "official_title": form.get("contact.official_title", ""),
                    "organisation": form.get("contact.organisation", ""),
                    "postal_address": form.get("contact.postal_address", ""),
                    "phone": form.get("contact.phone", ""),
                    "email": form.get("contact.email", "")},
        "language": form.get("language", "en"),
        "motivation": form.get("motivation", ""),
        "implementation": form.get("implementation", ""),
        "pledge": form.get("pledge") == "yes",
        "signed_on": form.get("signed_on", ""),
    }
    # A field left empty is a field not given (the form's optional fields refuse "").
    for part in ("mayor", "contact"):
        data[part] = {k: v for k, v in data[part].items() if v.strip()}
    return {k: v for k, v in data.items() if v not in (None, "")}


def _csv(rows: list[Row], filename: str) -> Response:
    out = io.StringIO()
    columns = ["city_id", "name", "country", "period", "cycle", "due", "submitted_on", "late",
               "status", "days_overdue"]
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
