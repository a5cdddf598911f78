"""`gnlc show` and `gnlc history`: state and history from the event store."""

from __future__ import annotations

from typing import Annotated

import typer

from application.registry import parse_id
from domain.acts import Role
from infrastructure.cli.session import JsonFlag, app, run_in_session
from infrastructure.views import application_view, city_view, history_view

show_app = typer.Typer(help="Current state of one application or city, from the event store.")
app.add_typer(show_app, name="show")


@show_app.command("application")
def show_application(ctx: typer.Context, application_id: str, as_json: JsonFlag = False) -> None:
    """The current state of an application."""
    run_in_session(ctx, as_json, lambda s: application_view(
        s.registry().personal_data, s.registry().application(
        s.actor(Role.SECRETARIAT), parse_id(application_id, "application_id"))))


@show_app.command("city")
def show_city(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
              as_json: JsonFlag = False) -> None:
    """The current state of a city and its memberships."""
    run_in_session(ctx, as_json, lambda s: city_view(s.registry().city(
        s.actor(Role.SECRETARIAT), parse_id(city, "city_id"))))


@app.command("history")
def history(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
            as_json: JsonFlag = False) -> None:
    """Every event of a city and its applications, oldest first."""
    run_in_session(ctx, as_json, lambda s: history_view(s.registry(), s.registry().history(
        s.actor(Role.SECRETARIAT), parse_id(city, "city_id"))))

