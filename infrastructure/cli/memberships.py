"""`gnlc report` and `gnlc end-membership`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from application.registry import parse_id
from domain.acts import Role
from infrastructure.cli.session import JsonFlag, Session, app, read_json, run_in_session


@app.command("report")
def report(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
           file: Path, as_json: JsonFlag = False) -> None:
    """Submit a member's progress report (JSON)."""
    def action(s: Session) -> dict[str, Any]:
        cid = parse_id(city, "city_id")
        data = read_json(file)
        r = s.registry().submit_report(s.actor(Role.CITY), cid, data)
        return {"city_id": cid, "cycle": r.cycle, "due": r.due, "late": r.late}
    run_in_session(ctx, as_json, action)


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
    run_in_session(ctx, as_json, action)

