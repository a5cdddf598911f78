"""One invocation of `gnlc`: the root command, its options, and how results and errors are
written."""

from __future__ import annotations

import getpass
import json
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from uuid import uuid4

import psycopg
import typer
from eventsourcing.persistence import OperationalError, PersistenceError
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from application.clock import Clock, FixedClock, SystemClock
from application.registry import Registry
from domain.acts import Actor, Role
from domain.calendar import local_date
from domain.errors import Conflict, GnlcError, InvalidInput, NotFound, RuleViolation
from infrastructure.bootstrap import build_read_side, build_registry, event_store, initialise
from infrastructure.readmodels.read_side import ReadSide
from infrastructure.settings import Settings
from infrastructure.views import plain

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


db_app = typer.Typer(help="The event store.")
app.add_typer(db_app, name="db")


JsonFlag = Annotated[bool, typer.Option("--json", help="Write JSON for programs.")]


Reason = Annotated[str, typer.Option("--reason", help="Why; recorded with the event.")]


out = Console()


err = Console(stderr=True, soft_wrap=True)


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


def fail(error: GnlcError, as_json: bool) -> NoReturn:
    code = next(c for kind, c in EXIT_CODES.items() if isinstance(error, kind))
    if as_json:
        body = {"error": {"code": error.code, "message": error.message, "field": error.field}}
        print(json.dumps(body), file=sys.stderr)
    else:
        where = f" [{error.field}]" if error.field else ""
        err.print(f"[bold red]{error.code}[/]{escape(where)}: {escape(error.message)}",
                  highlight=False)
    raise typer.Exit(code)


def stop(code: str, message: str, as_json: bool, exit_code: int) -> NoReturn:
    """Report a failure that is not a refusal (no field to name), then exit."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "field": None}}),
              file=sys.stderr)
    else:
        err.print(f"[bold red]{code}[/]: {escape(message)}", highlight=False)
    raise typer.Exit(exit_code)


def run_in_session(ctx: typer.Context, as_json: bool, action: Callable[[Session], Any]) -> None:
    """Run one command: map refusals to exit codes, print the result for people or programs."""
    session: Session = ctx.obj
    try:
        result = plain(action(session))
    except GnlcError as error:
        fail(error, as_json)
    except (OperationalError, PersistenceError, SQLAlchemyError, psycopg.Error, sqlite3.Error,
            OSError) as error:
        stop("unavailable", f"the database is unavailable: {type(error).__name__}: {error}",
              as_json, EXIT_UNAVAILABLE)
    except Exception as error:  # a bug: one line for the user, never a stack trace
        stop("internal_error", f"internal error: {type(error).__name__}: {error}", as_json,
              EXIT_INTERNAL)
    finally:
        session.close()
    if as_json and result is not None:
        print(json.dumps(result, ensure_ascii=False))
    else:
        render(result)


def render(result: Any) -> None:
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


@db_app.command("init")
def db_init(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Create the event store's tables (done automatically by the first command)."""
    def action(s: Session) -> dict[str, Any]:
        settings = s.settings()
        created = initialise(settings)
        return {"database": event_store(settings).redacted(), "created": created}
    run_in_session(ctx, as_json, action)


JuryOption = Annotated[str | None, typer.Option(
    "--jury", help="The jury's recommendation: recommended or not_recommended.")]


CountryOption = Annotated[str | None, typer.Option("--country", help="ISO 3166-1 alpha-2 code.")]


AsOfOption = Annotated[str | None, typer.Option(
    "--as-of", help="The network as it stood at the end of this day (business time).")]


KnownAtOption = Annotated[str | None, typer.Option(
    "--known-at", help="What the registry had recorded by this moment (ISO 8601 with offset).")]


TodayOption = Annotated[str | None, typer.Option(
    "--today", help="The day deadlines are measured against (default: the clock).")]


ExpectOption = Annotated[str | None, typer.Option(
    "--expect", help="A head published earlier, HASH@POSITION, that the log must contain.")]

