"""The steps of an application: apply, endorse, decline, withdraw, admit, reject, retract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from application.registry import parse_id
from domain.acts import Role
from domain.cities import city_id
from domain.errors import InvalidInput
from infrastructure.cli.queries import country_option
from infrastructure.cli.session import (
    JsonFlag,
    JuryOption,
    Reason,
    Session,
    app,
    read_json,
    run_in_session,
)


@app.command("city-id")
def city_id_command(
    ctx: typer.Context, country: str, name: str, as_json: JsonFlag = False
) -> None:
    """Print the deterministic id of a city (country code and name)."""
    def action(_: Session) -> dict[str, Any]:
        code = country_option(country)
        assert code is not None
        if not name.strip():
            raise InvalidInput("the city name must not be empty", field="name")
        return {"city_id": city_id(code, name)}
    run_in_session(ctx, as_json, action)


@app.command("apply")
def apply_command(ctx: typer.Context, file: Path, as_json: JsonFlag = False) -> None:
    """Submit a city's application (Part 1 of the form, as JSON)."""
    def action(s: Session) -> dict[str, Any]:
        data = read_json(file)
        submission = s.registry().submit_application(s.actor(Role.CITY), data)
        return {"application_id": submission.application_id, "city_id": submission.city_id}
    run_in_session(ctx, as_json, action)


def status_of(application_id: str, status: str) -> dict[str, Any]:
    return {"application_id": application_id, "status": status}


@app.command("endorse")
def endorse(ctx: typer.Context, application_id: str, as_json: JsonFlag = False) -> None:
    """Endorse an application (National Commission)."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().endorse(s.actor(Role.NATIONAL_COMMISSION),
                                 parse_id(application_id, "application_id"))
        return status_of(str(a.id), "endorsed")
    run_in_session(ctx, as_json, action)


@app.command("decline")
def decline(ctx: typer.Context, application_id: str, reason: Reason,
            as_json: JsonFlag = False) -> None:
    """Decline an application (National Commission)."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().decline(s.actor(Role.NATIONAL_COMMISSION),
                                 parse_id(application_id, "application_id"), reason)
        return status_of(str(a.id), "declined")
    run_in_session(ctx, as_json, action)


@app.command("withdraw")
def withdraw(ctx: typer.Context, application_id: str, reason: Reason,
             as_json: JsonFlag = False) -> None:
    """Withdraw an open application (the city)."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().withdraw(s.actor(Role.CITY),
                                  parse_id(application_id, "application_id"), reason)
        return status_of(str(a.id), "withdrawn")
    run_in_session(ctx, as_json, action)


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
    run_in_session(ctx, as_json, action)


@app.command("reject")
def reject(ctx: typer.Context, application_id: str, reason: Reason, jury: JuryOption = None,
           as_json: JsonFlag = False) -> None:
    """Reject an endorsed application."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().reject(s.actor(Role.SECRETARIAT),
                                parse_id(application_id, "application_id"), reason, jury)
        return status_of(str(a.id), "rejected")
    run_in_session(ctx, as_json, action)


@app.command("retract")
def retract(ctx: typer.Context, application_id: str, reason: Reason,
            as_json: JsonFlag = False) -> None:
    """Retract an admission (a corrigendum); frees the quota place."""
    def action(s: Session) -> dict[str, Any]:
        a = s.registry().retract(s.actor(Role.SECRETARIAT),
                                 parse_id(application_id, "application_id"), reason)
        return status_of(str(a.id), "retracted")
    run_in_session(ctx, as_json, action)

