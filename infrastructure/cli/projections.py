"""`gnlc projections`: run, watch and rebuild the read models."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress

from domain.errors import InvalidInput
from infrastructure.bootstrap import build_read_models, build_runner, event_store
from infrastructure.cli.session import JsonFlag, Session, app, err, run_in_session
from infrastructure.readmodels.read_side import unapplied_age
from projections.catalogue import PROJECTIONS

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
    run_in_session(ctx, False, action)


@projections_app.command("status")
def projections_status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Per projection: position, head of the log, lag in events and seconds."""
    def action(s: Session) -> list[dict[str, Any]]:
        registry = s.registry()
        store = build_read_models(s.settings())
        head = registry.recorder.max_notification_id() or 0
        rows = []
        for name, (position, generation) in sorted(store.positions().items()):
            lag_seconds = unapplied_age(registry, position, head)
            rows.append({"projection": name, "position": position, "head": head,
                         "lag_events": head - position, "lag_seconds": round(lag_seconds, 3),
                         "generation": generation})
        return rows
    run_in_session(ctx, as_json, action)


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
    run_in_session(ctx, as_json, action)

