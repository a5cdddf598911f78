"""`gnlc members`, `quotas`, `deadlines`, `applications`: the read models."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError

from domain.access import read_scope
from domain.acts import Role
from domain.applications import Status
from domain.errors import InvalidInput
from domain.forms import CountryCode
from infrastructure.cli.session import (
    AsOfOption,
    CountryOption,
    JsonFlag,
    KnownAtOption,
    Session,
    TodayOption,
    app,
    parse_date,
    parse_timestamp,
    run_in_session,
)
from infrastructure.views import with_contacts
from projections import answers


def country_option(code: str | None) -> str | None:
    if code is None:
        return None
    try:
        return TypeAdapter(CountryCode).validate_python(code)
    except ValidationError:
        raise InvalidInput(f"{code!r} is not an ISO 3166-1 alpha-2 country code",
                           field="country") from None


def past_options(as_of: str | None, known_at: str | None) -> tuple[date | None, datetime | None]:
    return (parse_date(as_of, "as_of"),
            parse_timestamp(known_at, "known_at") if known_at else None)


def contact_line(contacts: dict[str, dict[str, Any]]) -> str:
    """The current mayor and contact person on one line (a table's cell)."""
    def one(part: dict[str, Any]) -> str:
        if part.get("erased"):
            return "(erased)"
        return " ".join(str(part[k]) for k in ("full_name", "email") if part.get(k)) or "-"
    return "; ".join(f"{person}: {one(part)}" for person, part in contacts.items())


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
        code, (day, moment) = country_option(country), past_options(as_of, known_at)
        on = parse_date(today, "today") or day or s.today()
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, code, past=day is not None or moment is not None)
        rows = scope.narrow(s.read_side().rows("members", day, moment, reader=reader))
        members = answers.members(rows, on, scope.country, status)
        shown = with_contacts(s.registry(), s.read_side(), reader, members, True, day,
                              moment)
        return shown if as_json else [{**m, "contacts": contact_line(m["contacts"])}
                                      for m in shown]
    run_in_session(ctx, as_json, action)


@app.command("quotas")
def quotas_command(
    ctx: typer.Context, year: Annotated[int | None, typer.Option()] = None,
    country: CountryOption = None, as_of: AsOfOption = None, known_at: KnownAtOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Places used and left per country and intake year."""
    def action(s: Session) -> list[dict[str, Any]]:
        code, (day, moment) = country_option(country), past_options(as_of, known_at)
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, code, past=day is not None or moment is not None)
        rows = scope.narrow(s.read_side().rows("quotas", day, moment, reader=reader))
        return answers.quotas(rows, year, scope.country)
    run_in_session(ctx, as_json, action)


@app.command("deadlines")
def deadlines_command(
    ctx: typer.Context, today: TodayOption = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue reports.")] = False,
    due_before: Annotated[str | None, typer.Option("--due-before")] = None,
    country: CountryOption = None, as_json: JsonFlag = False,
) -> None:
    """Reporting deadlines: one row per membership and cycle, as on the day asked about."""
    def action(s: Session) -> list[dict[str, Any]]:
        code = country_option(country)
        on = parse_date(today, "today") or s.today()
        before = parse_date(due_before, "due_before")
        reader = s.actor(Role.SECRETARIAT)
        scope = read_scope(reader, code)
        rows = scope.narrow(s.read_side().rows("deadlines", reader=reader))
        return answers.deadline_list(rows, on, overdue, before, scope.country)
    run_in_session(ctx, as_json, action)


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
        scope = read_scope(reader, country_option(country))
        rows = scope.narrow(s.read_side().rows("applications", reader=reader))
        return answers.applications(rows, year, status, scope.country)
    run_in_session(ctx, as_json, action)

