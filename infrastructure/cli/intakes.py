"""`gnlc intake`: open and extend the yearly intakes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from domain.acts import Role
from infrastructure.cli.session import JsonFlag, Reason, Session, app, parse_date, run_in_session
from infrastructure.views import intake_view

intake_app = typer.Typer(help="Open and extend the yearly intakes (calls for applications).")
app.add_typer(intake_app, name="intake")


@intake_app.command("open")
def intake_open(
    ctx: typer.Context,
    year: int,
    opens: Annotated[str | None, typer.Option(help="First day (default: regulations).")] = None,
    closes: Annotated[str | None, typer.Option(help="Last day (default: regulations).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open the intake of YEAR; the window defaults to 1 March to 30 April."""
    run_in_session(ctx, as_json, lambda s: intake_view(s.registry().open_intake(
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
    run_in_session(ctx, as_json, action)

