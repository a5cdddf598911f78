"""`gnlc audit`: verify, publish and export the tamper-evident log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from application.registry import parse_id
from domain.access import PERSONAL_DATA
from domain.acts import Role
from domain.errors import GnlcError, InvalidInput
from infrastructure.audit.log import Head, StoredLog, Verdict, export, verify, verify_export
from infrastructure.bootstrap import event_store, initialise
from infrastructure.cli.queries import past_options
from infrastructure.cli.session import (
    AsOfOption,
    ExpectOption,
    JsonFlag,
    KnownAtOption,
    Session,
    app,
    err,
    fail,
    run_in_session,
)
from infrastructure.views import audit_state_view

audit_app = typer.Typer(help="The tamper-evident log: verify, publish the head, export.")
app.add_typer(audit_app, name="audit")


def stored_log(s: Session) -> StoredLog:
    initialise(s.settings())
    return StoredLog(event_store(s.settings()))


def print_verdict(verdict: Verdict, as_json: bool) -> None:
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
        verdicts.append(verify(stored_log(s), Head.parse(expect) if expect else None))
    run_in_session(ctx, as_json, action)
    print_verdict(verdicts[0], as_json)


@audit_app.command("head")
def audit_head(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The position and hash of the head of the log, for publishing outside the system."""
    def action(s: Session) -> dict[str, Any] | None:
        head = stored_log(s).head()
        if not as_json:
            print(head)
            return None
        return {"position": head.position, "hash": head.hash}
    run_in_session(ctx, as_json, action)


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
        day, moment = past_options(as_of, known_at)
        limit = stored_log(s).limit(position, moment)
        state = s.registry().city_at(s.actor(Role.AUDITOR), parse_id(city, "city_id"), day,
                                     limit)
        return audit_state_view(s.registry().personal_data, *state)
    run_in_session(ctx, as_json, action)


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    after: Annotated[int, typer.Option("--after", min=0)] = 0,
    until: Annotated[int | None, typer.Option("--until", min=0)] = None,
    scope: Annotated[str | None, typer.Option(
        "--scope", help="personal_data: add the persons' values in the clear (a header line "
        "says so; a later erasure does not reach such a copy)")] = None,
) -> None:
    """Write the log as JSON Lines (one stored event per line, with its hash) to stdout.
    Personal values stay sealed (and read as erased once erased) unless --scope personal_data."""
    def action(s: Session) -> None:
        if scope not in (None, PERSONAL_DATA):
            raise InvalidInput(f"scope must be {PERSONAL_DATA}, got {scope!r}", field="scope")
        keys = s.registry().personal_data if scope == PERSONAL_DATA else None
        count = export(stored_log(s), sys.stdout, after, until, keys)
        err.print(f"exported {count} events" + (
            " with personal data in the clear" if keys is not None else ""))
    run_in_session(ctx, False, action)


@audit_app.command("verify-export")
def audit_verify_export(file: Path, expect: ExpectOption = None,
                        as_json: JsonFlag = False) -> None:
    """Check an export offline (no database needed)."""
    try:
        if not file.is_file():
            raise InvalidInput(f"no such file: {file}", field="file")
        verdict = verify_export(file, Head.parse(expect) if expect else None)
    except GnlcError as error:
        fail(error, as_json)
    print_verdict(verdict, as_json)

