"""`gnlc import history`: the network's past admissions from a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress

from domain.acts import Actor, Role
from infrastructure.cli.history_csv import import_history
from infrastructure.cli.session import JsonFlag, Session, app, err, run_in_session

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
    run_in_session(ctx, as_json, action)

