"""`gnlc contact update` and `gnlc privacy`: personal data (see the README, "Personal data")."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from application.registry import parse_id
from domain.acts import Role
from domain.personal import PERSONS
from infrastructure.cli.session import JsonFlag, Session, app, read_json, run_in_session

contact_app = typer.Typer(help="A city's mayor and contact person.")
app.add_typer(contact_app, name="contact")
privacy_app = typer.Typer(help="Personal data: erasure, and what an erasure cannot reach.")
app.add_typer(privacy_app, name="privacy")


@contact_app.command("update")
def update_contact(ctx: typer.Context, city: Annotated[str, typer.Argument(metavar="CITY_ID")],
                   file: Path, as_json: JsonFlag = False) -> None:
    """Record a city's new mayor and/or contact person (JSON: {"mayor": …, "contact": …})."""
    def action(s: Session) -> dict[str, Any]:
        cid = parse_id(city, "city_id")
        updated = s.registry().update_contacts(s.actor(Role.SECRETARIAT), cid, read_json(file))
        return {"city_id": cid, "updated": updated}
    run_in_session(ctx, as_json, action)


@privacy_app.command("erase")
def erase(
    ctx: typer.Context,
    city: Annotated[str, typer.Argument(metavar="CITY_ID")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded; no personal data)")],
    person: Annotated[list[str] | None, typer.Option(
        "--person", help=f"{' or '.join(PERSONS)} (repeatable); default: both")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Erase the personal data of a city's mayors and/or contact persons (the secretariat):
    their data keys are destroyed, so their names, e-mail, phone and address read as erased
    everywhere, while the audit chain stays valid."""
    def action(s: Session) -> dict[str, Any]:
        cid = parse_id(city, "city_id")
        done = s.registry().erase_personal_data(s.actor(Role.SECRETARIAT), cid, person, reason)
        answer = {"city_id": cid, "persons": list(done.persons),
                  "erased_key_ids": done.erased_key_ids, "recorded": done.recorded,
                  "erased_before": done.erased_before,
                  "plaintext_events": done.plaintext_events}
        if not done.recorded:
            answer["message"] = ("nothing to erase: every data key of these persons is gone "
                                 "already; nothing was recorded")
        return answer
    run_in_session(ctx, as_json, action)


@privacy_app.command("legacy")
def legacy(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Events holding personal values in the clear (stored before values were sealed), per
    city: what an erasure cannot reach."""
    def action(s: Session) -> dict[str, Any]:
        counts = s.registry().plaintext_events(s.actor(Role.SECRETARIAT))
        return {"plaintext_events": sum(counts.values()),
                "cities": [{"city_id": c, "events": n} for c, n in sorted(
                    counts.items(), key=lambda item: str(item[0]))]}
    run_in_session(ctx, as_json, action)


@privacy_app.command("new-master-key")
def new_master_key() -> None:
    """Print a new random master key for GNLC_MASTER_KEY (32 bytes, base64)."""
    typer.echo(base64.b64encode(os.urandom(32)).decode())
