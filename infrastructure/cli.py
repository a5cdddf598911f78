"""The `gnlc` command line: Typer with Rich output for people and `--json` for programs."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from uuid import uuid4

import psycopg
import typer
from eventsourcing.persistence import OperationalError, PersistenceError
from pydantic import TypeAdapter, ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from application.clock import Clock, FixedClock, SystemClock
from application.registry import Registry, parse_id
from domain.access import AccessToken, read_scope
from domain.acts import Actor, Role
from domain.applications import Status
from domain.calendar import local_date
from domain.cities import city_id
from domain.errors import (
    Conflict,
    GnlcError,
    InvalidInput,
    NotFound,
    RuleViolation,
)
from domain.forms import CountryCode, parse
from infrastructure.audit import Head, StoredLog, Verdict, export, verify, verify_export
from infrastructure.bootstrap import (
    build_api,
    build_read_models,
    build_read_side,
    build_registry,
    build_relay,
    build_runner,
    event_store,
    initialise,
    projection_thread,
)
from infrastructure.history_import import import_history
from infrastructure.read_side import ReadSide
from infrastructure.recorded_times import RecordedTimes
from infrastructure.relay import NatsTarget
from infrastructure.settings import Settings, settings_environment
from infrastructure.views import (
    application_view,
    audit_state_view,
    city_view,
    history_view,
    intake_view,
    plain,
)
from projections import answers
from projections.catalogue import PROJECTIONS

EXIT_CODES: dict[type[GnlcError], int] = {
    InvalidInput: 2,
    RuleViolation: 3,
    NotFound: 4,
    Conflict: 5,
}
EXIT_UNAVAILABLE = 6
EXIT_INTERNAL = 70  # EX_SOFTWARE

app = typer.Typer(
    name="gnlc",
    help="The membership registry of the UNESCO Global Network of Learning Cities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
intake_app = typer.Typer(help="Open and extend the yearly intakes (calls for applications).")
db_app = typer.Typer(help="The event store.")
show_app = typer.Typer(help="Current state of one application or city, from the event store.")
app.add_typer(intake_app, name="intake")
app.add_typer(db_app, name="db")
app.add_typer(show_app, name="show")

JsonFlag = Annotated[bool, typer.Option("--json", help="Write JSON for programs.")]
Reason = Annotated[str, typer.Option("--reason", help="Why; recorded with the event.")]

out = Console()
err = Console(stderr=True, soft_wrap=True)


class UnavailableError(Exception):
    """The database cannot be reached."""


@dataclass
class Session:
    """The global options of one invocation; settings, clock and registry are built on first use,
    inside the command, so that bad options are reported like any other bad input."""

    database_url: str | None
    now: str | None
    actor_name: str
    builder: Callable[[Settings, Clock], Registry] = build_registry
    # Every event of one invocation carries this id (the audit's correlation id).
    invocation: str = field(default_factory=lambda: str(uuid4()))
    _registry: Registry | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        overrides = {"database_url": self.database_url} if self.database_url else {}
        try:
            return Settings(**overrides)  # type: ignore[arg-type]
        except ValidationError as error:
            first = error.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "settings"
            raise InvalidInput(f"{name}: {first['msg']}", field=name) from None

    def clock(self) -> Clock:
        return FixedClock(parse_timestamp(self.now, "--now")) if self.now else SystemClock()

    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self.builder(self.settings(), self.clock())
        return self._registry

    def read_side(self) -> ReadSide:
        return build_read_side(self.settings(), self.registry())

    def today(self) -> date:
        return local_date(self.clock().now(), self.settings().timezone)

    def actor(self, role: Role) -> Actor:
        return Actor(self.actor_name, role, source="cli", correlation_id=self.invocation)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


def _fail(error: GnlcError, as_json: bool) -> NoReturn:
    code = next(c for kind, c in EXIT_CODES.items() if isinstance(error, kind))
    if as_json:
        body = {"error": {"code": error.code, "message": error.message, "field": error.field}}
        print(json.dumps(body), file=sys.stderr)
    else:
        where = f" [{error.field}]" if error.field else ""
        err.print(f"[bold red]{error.code}[/]{escape(where)}: {escape(error.message)}",
                  highlight=False)
    raise typer.Exit(code)


def _stop(code: str, message: str, as_json: bool, exit_code: int) -> NoReturn:
    """Report a failure that is not a refusal (no field to name), then exit."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "field": None}}),
              file=sys.stderr)
    else:
        err.print(f"[bold red]{code}[/]: {escape(message)}", highlight=False)
    raise typer.Exit(exit_code)


def _run(ctx: typer.Context, as_json: bool, action: Callable[[Session], Any]) -> None:
    """Run one command: map refusals to exit codes, print the result for people or programs."""
    session: Session = ctx.obj
    try:
        result = plain(action(session))
    except GnlcError as error:
        _fail(error, as_json)
    except (OperationalError, PersistenceError, psycopg.Error, sqlite3.Error, OSError) as error:
        _stop("unavailable", f"the database is unavailable: {type(error).__name__}: {error}",
              as_json, EXIT_UNAVAILABLE)
    except Exception as error:  # a bug: one line for the user, never a stack trace
        _stop("internal_error", f"internal error: {type(error).__name__}: {error}", as_json,
              EXIT_INTERNAL)
    finally:
        session.close()
    if as_json and result is not None:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _render(result)


def _render(result: Any) -> None:
    if result is None:
        return
    if isinstance(result, list):
        table = Table(box=box.SIMPLE_HEAD)
        for column in result[0].keys() if result else ["(none)"]:
            table.add_column(column, overflow="fold")
        for row in result:
            table.add_row(*(json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                            for v in row.values()))
        out.print(table)
        return
    table = Table(show_header=False, box=None)
    for key, value in result.items():
        shown = json.dumps(value, indent=1, ensure_ascii=False) if isinstance(
            value, (dict, list)) else str(value)
        table.add_row(f"[bold]{key}[/]", shown)
    out.print(table)


# --- parsing of user input -------------------------------------------------------------------

def parse_timestamp(text: str, field: str) -> datetime:
    """ISO 8601 with an offset; a timestamp without one is invalid input."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field} must be an ISO 8601 timestamp, got {text!r}",
                           field=field) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} must carry a UTC offset (e.g. +01:00), got {text!r}",
                           field=field)
    return moment


def parse_date(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field} must be a date YYYY-MM-DD, got {text!r}",
                           field=field) from None
    # The registry's dates lie between 1900 and 2999 (as over HTTP): due dates are counted from
    # a day, and a day near the calendar's end would run past year 9999.
    if not date(1900, 1, 1) <= day <= date(2999, 12, 31):
        raise InvalidInput(f"{field} must lie between 1900-01-01 and 2999-12-31, got {text!r}",
                           field=field)
    return day


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}", field="file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{path} is not valid JSON: {error}", field="file") from None


# --- global options --------------------------------------------------------------------------

@app.callback()
def main(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Overrides GNLC_DATABASE_URL.")] = None,
    now: Annotated[str | None, typer.Option(
        "--now", help="Business clock for this invocation (ISO 8601 with offset).")] = None,
    actor: Annotated[str | None, typer.Option(
        "--actor", help="Who is acting (default: the operating-system user).")] = None,
) -> None:
    ctx.obj = Session(database_url=database_url, now=now,
                      actor_name=actor or getpass.getuser())


# --- commands --------------------------------------------------------------------------------

@db_app.command("init")
def db_init(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Create the event store's tables (done automatically by the first command)."""
    def action(s: Session) -> dict[str, Any]:
        settings = s.settings()
        created = initialise(settings)
        return {"database": event_store(settings).redacted(), "created": created}
    _run(ctx, as_json, action)


@app.command("city-id")
def city_id_command(
    ctx: typer.Context, country: str, name: str, as_json: JsonFlag = False
) -> None:
    """Print the deterministic id of a city (country code and name)."""
    def action(_: Session) -> dict[str, Any]:
        code = _country(country)
        assert code is not None
        if not name.strip():
            raise InvalidInput("the city name must not be empty", field="name")
        return {"city_id": city_id(code, name)}
    _run(ctx, as_json, action)


@intake_app.command("open")
def intake_open(
    ctx: typer.Context,
    year: int,
    opens: Annotated[str | None, typer.Option(help="First day (default: regulations).")] = None,
    closes: Annotated[str | None, typer.Option(help="Last day (default: regulations).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open the intake of YEAR; the window defaults to 1 March to 30 April."""
    _run(ctx, as_json, lambda s: intake_view(s.registry().open_intake(
        s.actor(Role.SECRETARIAT), year, parse_date(opens, "opens"),
        parse_date(closes, "closes"))))


@intake_app.command("extend")
def intake_extend(
    ctx: typer.Context,
    year: int,
    closes: Annotated[str, typer.Option(help="The new last day.")],
    reason: Reason,
    as_json: JsonFlag = False,
) -> None:
    """Extend the window of YEAR's intake, for a recorded reason."""
    def action(s: Session) -> dict[str, Any]:
        new_close = parse_date(closes, "closes")
        assert new_close is not None
        return intake_view(s.registry().extend_intake(
            s.actor(Role.SECRETARIAT), year, new_close, reason))
    _run(ctx, as_json, action)


@app.command("apply")
def apply_command(ctx: typer.Context, file: Path, as_json: JsonFlag = False) -> None:
    """Submit a city's application (Part 1 of the form, as JSON)."""
    def action(s: Session) -> dict[str, Any]:
        data = read_json(file)
        submission = s.registry().submit_application(s.actor(Role.CITY), data)
        return {"application_id": submission.application_id, "city_id": submission.city_id}
    _run(ctx, as_json, action)


def _status(application_id: str, status: str) -> dict[str, Any]:
    return {"application_id": application_id, "status": status}


@app.command("endorse")
def endorse(ctx: typer.Context, application_id: str, as_json: JsonFlag = False) -> None:
    """Endorse an application (National Commission)."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().endorse(s.actor(Role.NATIONAL_COMMISSION),
                                 parse_id(application_id, "application_id"))
        return _status(str(a.id), "endorsed")
    _run(ctx, as_json, action)


@app.command("decline")
def decline(ctx: typer.Context, application_id: str, reason: Reason,
            as_json: JsonFlag = False) -> None:
    """Decline an application (National Commission)."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().decline(s.actor(Role.NATIONAL_COMMISSION),
                                 parse_id(application_id, "application_id"), reason)
        return _status(str(a.id), "declined")
    _run(ctx, as_json, action)


@app.command("withdraw")
def withdraw(ctx: typer.Context, application_id: str, reason: Reason,
             as_json: JsonFlag = False) -> None:
    """Withdraw an open application (the city)."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().withdraw(s.actor(Role.CITY),
                                  parse_id(application_id, "application_id"), reason)
        return _status(str(a.id), "withdrawn")
    _run(ctx, as_json, action)


JuryOption = Annotated[str | None, typer.Option(
    "--jury", help="The jury's recommendation: recommended or not_recommended.")]


@app.command("admit")
def admit(
    ctx: typer.Context,
    application_id: str,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    jury: JuryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Admit an endorsed application, within the window and the country's quota."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().admit(s.actor(Role.SECRETARIAT),
                               parse_id(application_id, "application_id"), reason, jury)
        return {
            "application_id": a.application_id, "city_id": a.city_id, "status": "admitted",
            "quota": {"country": a.country, "year": a.quota_year, "used": a.used,
                      "limit": a.limit},
        }
    _run(ctx, as_json, action)


@app.command("reject")
def reject(ctx: typer.Context, application_id: str, reason: Reason, jury: JuryOption = None,
           as_json: JsonFlag = False) -> None:
    """Reject an endorsed application."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().reject(s.actor(Role.SECRETARIAT),
                                parse_id(application_id, "application_id"), reason, jury)
        return _status(str(a.id), "rejected")
    _run(ctx, as_json, action)


@app.command("retract")
def retract(ctx: typer.Context, application_id: str, reason: Reason,
            as_json: JsonFlag = False) -> None:
    """Retract an admission (a corrigendum); frees the quota place."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().retract(s.actor(Role.SECRETARIAT),
                                 parse_id(application_id, "application_id"), reason)
        return _status(str(a.id), "retracted")
    _run(ctx, as_json, action)


@app.command("report")
def report(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
           file: Path, as_json: JsonFlag = False) -> None:
    """Submit a member's progress report (JSON)."""
    def action(s: Session) -> dict[str, Any]:
        cid = parse_id(city, "city_id")
        data = read_json(file)
        r = s.registry().submit_report(s.actor(Role.CITY), cid, data)
        return {"city_id": cid, "cycle": r.cycle, "due": r.due, "late": r.late}
    _run(ctx, as_json, action)


@app.command("end-membership")
def end_membership(
    ctx: typer.Context,
    city: Annotated[str, typer.Argument(metavar="CITY_ID")],
    reason: Annotated[str, typer.Option(
        "--reason", help="not_reporting, withdrawn_by_city or other")],
    note: Annotated[str | None, typer.Option("--note")] = None,
    as_json: JsonFlag = False,
) -> None:
    """End a city's membership (the secretariat)."""
    def action(s: Session) -> dict[str, Any]:
        cid = parse_id(city, "city_id")
        s.registry().end_membership(s.actor(Role.SECRETARIAT), cid, reason, note)
        return {"city_id": cid, "status": "ended"}
    _run(ctx, as_json, action)


@show_app.command("application")
def show_application(ctx: typer.Context, application_id: str, as_json: JsonFlag = False) -> None:
    """The current state of an application."""
    _run(ctx, as_json, lambda s: application_view(s.registry().application(
        s.actor(Role.SECRETARIAT), parse_id(application_id, "application_id"))))


@show_app.command("city")
def show_city(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
              as_json: JsonFlag = False) -> None:
    """The current state of a city and its memberships."""
    _run(ctx, as_json, lambda s: city_view(s.registry().city(
        s.actor(Role.SECRETARIAT), parse_id(city, "city_id"))))


@app.command("history")
def history(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
            as_json: JsonFlag = False) -> None:
    """Every event of a city and its applications, oldest first."""
    _run(ctx, as_json, lambda s: history_view(s.registry(), s.registry().history(
        s.actor(Role.SECRETARIAT), parse_id(city, "city_id"))))


# --- queries (read models) ------------------------------------------------------------------

CountryOption = Annotated[str | None, typer.Option("--country", help="ISO 3166-1 alpha-2 code.")]
AsOfOption = Annotated[str | None, typer.Option(
    "--as-of", help="The network as it stood at the end of this day (business time).")]
KnownAtOption = Annotated[str | None, typer.Option(
    "--known-at", help="What the registry had recorded by this moment (ISO 8601 with offset).")]
TodayOption = Annotated[str | None, typer.Option(
    "--today", help="The day deadlines are measured against (default: the clock).")]


def _country(code: str | None) -> str | None:
    if code is None:
        return None
    try:
        return TypeAdapter(CountryCode).validate_python(code)
    except ValidationError:
        raise InvalidInput(f"{code!r} is not an ISO 3166-1 alpha-2 country code",
                           field="country") from None


def _past(as_of: str | None, known_at: str | None) -> tuple[date | None, datetime | None]:
    return (parse_date(as_of, "as_of"),
            parse_timestamp(known_at, "known_at") if known_at else None)


@app.command("members")
def members_command(
    ctx: typer.Context, country: CountryOption = None,
    status: Annotated[str, typer.Option(help="active, ended or all")] = "active",
    as_of: AsOfOption = None, known_at: KnownAtOption = None, today: TodayOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Member cities, with their reporting state (next report due, days overdue, review flag)."""
    def action(s: Session) -> list[dict[str, Any]]:
        if status not in answers.MEMBER_STATUSES:
            raise InvalidInput("status must be active, ended or all", field="status")
        code, (day, moment) = _country(country), _past(as_of, known_at)
        on = parse_date(today, "today") or day or s.today()
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, code, past=day is not None or moment is not None)
        rows = scope.narrow(s.read_side().rows("members", day, moment, reader=reader))
        return answers.members(rows, on, scope.country, status)
    _run(ctx, as_json, action)


@app.command("quotas")
def quotas_command(
    ctx: typer.Context, year: Annotated[int | None, typer.Option()] = None,
    country: CountryOption = None, as_of: AsOfOption = None, known_at: KnownAtOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Places used and left per country and intake year."""
    def action(s: Session) -> list[dict[str, Any]]:
        code, (day, moment) = _country(country), _past(as_of, known_at)
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, code, past=day is not None or moment is not None)
        rows = scope.narrow(s.read_side().rows("quotas", day, moment, reader=reader))
        return answers.quotas(rows, year, scope.country)
    _run(ctx, as_json, action)


@app.command("deadlines")
def deadlines_command(
    ctx: typer.Context, today: TodayOption = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue reports.")] = False,
    due_before: Annotated[str | None, typer.Option("--due-before")] = None,
    country: CountryOption = None, as_json: JsonFlag = False,
) -> None:
    """Reporting deadlines: one row per membership and cycle, as on the day asked about."""
    def action(s: Session) -> list[dict[str, Any]]:
        code = _country(country)
        on = parse_date(today, "today") or s.today()
        before = parse_date(due_before, "due_before")
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, code)
        rows = scope.narrow(s.read_side().rows("deadlines", reader=reader))
        return answers.deadline_list(rows, on, overdue, before, scope.country)
    _run(ctx, as_json, action)


@app.command("applications")
def applications_command(
    ctx: typer.Context, year: Annotated[int | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None, country: CountryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Applications with the date of each step."""
    def action(s: Session) -> list[dict[str, Any]]:
        if status is not None and status not in {str(x) for x in Status}:
            raise InvalidInput(f"status must be one of {', '.join(Status)}", field="status")
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, _country(country))
        rows = scope.narrow(s.read_side().rows("applications", reader=reader))
        return answers.applications(rows, year, status, scope.country)
    _run(ctx, as_json, action)


# --- projections --------------------------------------------------------------------------

projections_app = typer.Typer(help="The projections that keep the read models.")
app.add_typer(projections_app, name="projections")


@projections_app.command("run")
def projections_run(ctx: typer.Context) -> None:
    """Keep the read models up to date until interrupted (Ctrl-C or SIGTERM)."""
    def action(s: Session) -> None:
        settings = s.settings()
        registry = s.registry()
        runner = build_runner(settings, registry, build_read_models(settings))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        err.print(f"projection runner on {event_store(settings).redacted()}; "
                  f"working on those no other runner holds")
        runner.run(stop, on_failure=lambda failure: err.print(f"[red]{escape(str(failure))}"))
    _run(ctx, False, action)


@projections_app.command("status")
def projections_status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Per projection: position, head of the log, lag in events and seconds."""
    def action(s: Session) -> list[dict[str, Any]]:
        registry = s.registry()
        store = build_read_models(s.settings())
        head = registry.recorder.max_notification_id() or 0
        rows = []
        for name, (position, generation) in sorted(store.positions().items()):
            waiting = registry.recorder.select_notifications(position + 1, 1, stop=head) \
                if position < head else []
            # Recorded when its chain row was written (infrastructure/recorded_times.py).
            recorded = RecordedTimes(registry.recorder).of([waiting[0].id]) if waiting else {}
            oldest = datetime.fromisoformat(recorded[waiting[0].id]) if recorded else None
            lag_seconds = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
            rows.append({"projection": name, "position": position, "head": head,
                         "lag_events": head - position, "lag_seconds": round(lag_seconds, 3),
                         "generation": generation})
        return rows
    _run(ctx, as_json, action)


@projections_app.command("rebuild")
def projections_rebuild(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One projection (default: all).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rebuild from zero into new tables; the old ones answer until the new are swapped in."""
    def action(s: Session) -> list[dict[str, Any]]:
        if name is not None and name not in PROJECTIONS:
            raise InvalidInput(f"unknown projection {name!r}; one of {', '.join(PROJECTIONS)}",
                               field="name")
        settings = s.settings()
        runner = build_runner(settings, s.registry(), build_read_models(settings))
        names = [name] if name else list(PROJECTIONS)
        with Progress(console=err, disable=as_json) as bar:
            task = bar.add_task(f"rebuilding {', '.join(names)}", total=None)
            started = time.monotonic()
            position = runner.rebuild(names, lambda at, head: bar.update(
                task, completed=at, total=head))
        seconds = round(time.monotonic() - started, 3)
        done = [{"projection": n, "position": position, "seconds": seconds} for n in names]
        return done
    _run(ctx, as_json, action)


# --- tokens and the server ---------------------------------------------------------------

tokens_app = typer.Typer(help="Bearer tokens of the HTTP API (an operator's task, on the server).")
app.add_typer(tokens_app, name="tokens")
FIRST_TOKEN = "first-secretariat"


def _token_row(token: AccessToken) -> dict[str, Any]:
    return {"name": token.name, "role": str(token.role), "country": token.country,
            "city": token.city_id, "scopes": sorted(token.scopes),
            "revoked": token.revoked, "issued_at": token.created_on}


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help=", ".join(Role))],
    name: Annotated[str, typer.Option("--name", help="Unique; recorded as the actor.")],
    country: CountryOption = None,
    city: Annotated[str | None, typer.Option("--city", help="CITY_ID (see `gnlc city-id`).")
                    ] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="Extra scope: personal_data.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token; its secret is printed once and only a salted hash is stored."""
    def action(s: Session) -> dict[str, Any]:
        if role not in {str(r) for r in Role}:
            raise InvalidInput(f"role must be one of {', '.join(Role)}", field="role")
        issued = s.registry().issue_token(
            s.actor(Role.SECRETARIAT), name, Role(role), _country(country),
            parse_id(city, "city") if city else None, frozenset(scope or ()))
        if not as_json:
            err.print("[yellow]The token is shown only now; keep it secret.[/]")
        return {"name": issued.name, "role": issued.role, "token": issued.token}
    _run(ctx, as_json, action)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every token issued (never their secrets)."""
    _run(ctx, as_json, lambda s: [_token_row(t) for t in s.registry().tokens()])


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, name: str,
                  reason: Annotated[str, typer.Option("--reason")] = "revoked",
                  as_json: JsonFlag = False) -> None:
    """Revoke a token; it is refused from the next request on."""
    def action(s: Session) -> dict[str, Any]:
        s.registry().revoke_token(s.actor(Role.SECRETARIAT), name, reason)
        return {"name": name, "revoked": True}
    _run(ctx, as_json, action)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    projections: Annotated[bool, typer.Option(
        "--projections/--no-projections",
        help="Run the projection runner in this process (off when runners are separate).")
    ] = True,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, max=64,
        help="Server processes (default GNLC_HTTP_WORKERS, 1); each has its own event loop.")
    ] = None,
) -> None:
    """Serve the HTTP API (docs at /docs); creates a first secretariat token on first start."""
    import uvicorn

    def action(s: Session) -> None:
        settings = s.settings()
        if workers is not None:
            settings = settings.model_copy(update={"http_workers": workers})
        if settings.http_workers > 1 and s.now:
            raise InvalidInput("--now sets the clock of one server process; "
                               "it cannot be used with --workers", field="now")
        registry = s.registry()
        if not registry.tokens():
            issued = registry.issue_token(s.actor(Role.SECRETARIAT), FIRST_TOKEN,
                                          Role.SECRETARIAT)
            print(f"First start: created the secretariat token {FIRST_TOKEN!r}; "
                  "it is shown only now, keep it secret:")
            print(f"export GNLC_TOKEN={issued.token}")
        else:
            print("Tokens exist already; create more with `gnlc tokens create`.")
        print(f"gnlc API on http://{host}:{port} (docs: http://{host}:{port}/docs), "
              f"store {event_store(settings).redacted()}"
              + (f", {settings.http_workers} processes" if settings.http_workers > 1 else ""),
              flush=True)
        if settings.http_workers == 1:
            app = build_api(settings, registry, s.clock(), projections)
            uvicorn.run(app, host=host, port=port, log_level="warning")
            return
        # uvicorn starts the processes; each builds its own API from the same settings, which
        # reach it through the environment (the settings' own source). The projection runner
        # works here, in the supervising process, which is otherwise idle: requests never wait
        # for the runner's turn at a process's interpreter lock.
        os.environ.update(settings_environment(settings))
        runner = build_runner(settings, registry, build_read_models(settings)) \
            if projections else None
        with projection_thread(runner) if runner else contextlib.nullcontext():
            uvicorn.run("infrastructure.bootstrap:served_api", factory=True, host=host,
                        port=port, workers=settings.http_workers, log_level="warning")
    _run(ctx, False, action)


audit_app = typer.Typer(help="The tamper-evident log: verify, publish the head, export.")
app.add_typer(audit_app, name="audit")
ExpectOption = Annotated[str | None, typer.Option(
    "--expect", help="A head published earlier, HASH@POSITION, that the log must contain.")]


def _stored_log(s: Session) -> StoredLog:
    initialise(s.settings())
    return StoredLog(event_store(s.settings()))


def _verdict(verdict: Verdict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(verdict.json()))
    elif verdict.ok:
        print(f"ok: {verdict.checked} events verified; head {verdict.head}")
    else:
        err.print(f"[bold red]tampered[/]: the log differs at position "
                  f"{verdict.first_bad_position} ({verdict.reason}); {verdict.checked} events "
                  f"verified before it; last good head {verdict.head}", highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, expect: ExpectOption = None,
                 as_json: JsonFlag = False) -> None:
    """Recompute the hash chain; exit 1 at the first position where the stored log differs."""
    verdicts: list[Verdict] = []

    def action(s: Session) -> None:
        verdicts.append(verify(_stored_log(s), Head.parse(expect) if expect else None))
    _run(ctx, as_json, action)
    _verdict(verdicts[0], as_json)


@audit_app.command("head")
def audit_head(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The position and hash of the head of the log, for publishing outside the system."""
    def action(s: Session) -> dict[str, Any] | None:
        head = _stored_log(s).head()
        if not as_json:
            print(head)
            return None
        return {"position": head.position, "hash": head.hash}
    _run(ctx, as_json, action)


@audit_app.command("state")
def audit_state(
    ctx: typer.Context,
    city: Annotated[str, typer.Argument(metavar="CITY_ID")],
    as_of: AsOfOption = None, known_at: KnownAtOption = None,
    position: Annotated[int | None, typer.Option("--position", min=0,
                                                 help="Only events up to this log position.")
                        ] = None,
    as_json: JsonFlag = False,
) -> None:
    """A city's full state at a point: end of a business day, a moment of the registry's
    knowledge, or a log position (combinable)."""
    def action(s: Session) -> dict[str, Any]:
        day, moment = _past(as_of, known_at)
        limit = _stored_log(s).limit(position, moment)
        state = s.registry().city_at(s.actor(Role.AUDITOR), parse_id(city, "city_id"), day,
                                     limit)
        return audit_state_view(*state)
    _run(ctx, as_json, action)


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    after: Annotated[int, typer.Option("--after", min=0)] = 0,
    until: Annotated[int | None, typer.Option("--until", min=0)] = None,
) -> None:
    """Write the log as JSON Lines (one stored event per line, with its hash) to stdout."""
    def action(s: Session) -> None:
        count = export(_stored_log(s), sys.stdout, after, until)
        err.print(f"exported {count} events")
    _run(ctx, False, action)


@audit_app.command("verify-export")
def audit_verify_export(file: Path, expect: ExpectOption = None,
                        as_json: JsonFlag = False) -> None:
    """Check an export offline (no database needed)."""
    try:
        if not file.is_file():
            raise InvalidInput(f"no such file: {file}", field="file")
        verdict = verify_export(file, Head.parse(expect) if expect else None)
    except GnlcError as error:
        _fail(error, as_json)
    _verdict(verdict, as_json)


import_app = typer.Typer(help="Bring the network's history in.")
app.add_typer(import_app, name="import")


@import_app.command("history")
def import_history_command(ctx: typer.Context, file: Path, as_json: JsonFlag = False) -> None:
    """Import admissions from CSV: city,country,year_joined[,admitted_on,left_on,left_reason,
    source_url]. Rows that break a rule of their time are refused and listed."""
    def action(s: Session) -> dict[str, Any]:
        actor = Actor(s.actor_name, Role.SECRETARIAT, source="import",
                      correlation_id=s.invocation)
        registry = s.registry()
        with Progress(console=err, disable=as_json) as bar:
            task = bar.add_task(f"importing {file.name}", total=None)
            summary = import_history(registry, actor, file, lambda done, total: bar.update(
                task, completed=done, total=total))
        return summary.json()
    _run(ctx, as_json, action)


events_app = typer.Typer(help="The public event contract.")
app.add_typer(events_app, name="events")


@events_app.command("schemas")
def events_schemas(
    out_dir: Annotated[Path, typer.Argument(
        help="The directory to write one file per type to (docs/events in a checkout).")],
) -> None:
    """Write the JSON Schema of every public event type and version, one file each."""
    from projections.public import schemas

    out_dir.mkdir(parents=True, exist_ok=True)
    for key, schema in schemas().items():
        (out_dir / f"{key}.json").write_text(
            json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            encoding="utf-8")
    out.print(f"wrote {len(schemas())} schemas to {out_dir}")


example_app = typer.Typer(help="Example input files, shipped with the package.")
app.add_typer(example_app, name="example")


@example_app.command("application")
def example_application() -> None:
    """Print an example application form (Part 1), as `gnlc apply` and POST /applications take."""
    from importlib.resources import files

    # Package data, so that an installed gnlc has it wherever it runs (the README's quick start).
    sys.stdout.write(files("infrastructure.examples").joinpath("application.json")
                     .read_text(encoding="utf-8"))


relay_app = typer.Typer(help="Relays of the event feed to streaming engines.")
app.add_typer(relay_app, name="relay")


@relay_app.command("nats")
def relay_nats(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url")] = "nats://127.0.0.1:4222",
    stream: Annotated[str, typer.Option("--stream")] = "GNLC",
    subjects: Annotated[str, typer.Option(
        "--subjects", help="Subject prefix: events go to PREFIX.<type>.")] = "gnlc.events",
) -> None:
    """Publish every event to NATS JetStream, exactly once, in order (until interrupted)."""
    import asyncio

    def action(s: Session) -> None:
        relay = build_relay(s.settings(), s.registry(), NatsTarget(url, stream, subjects))

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            err.print(f"relaying to {url} stream {stream} subjects {subjects}.>; "
                      "publishing while no other relay does")
            await relay.run(stop)

        asyncio.run(main())
    _run(ctx, False, action)


@app.command("demo")
def demo(ctx: typer.Context) -> None:
    """A narrated run of one intake year through the real use cases."""
    from infrastructure.demo import narrate

    _run(ctx, False, lambda s: narrate(
        s.registry(), s.actor_name, out, event_store(s.settings()).redacted()))


def run() -> None:
    """The console script's entry point."""
    app()


__all__ = ["app", "parse", "run"]
