"""`gnlc serve`: the HTTP API and its projection runner."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated

import typer

from domain.acts import Role
from domain.errors import InvalidInput
from infrastructure.bootstrap import (
    build_api,
    build_read_models,
    build_runner,
    event_store,
    projection_thread,
    tune_collector,
)
from infrastructure.cli.session import Session, app, run_in_session
from infrastructure.cli.tokens import FIRST_TOKEN
from infrastructure.settings import settings_environment


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    projections: Annotated[bool, typer.Option(
        "--projections/--no-projections",
        help="Run the projection runner in this process (off when runners are separate).")
    ] = True,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, max=64,
        help="Server processes (default GNLC_HTTP_WORKERS, 1); each has its own event loop.")
    ] = None,
) -> None:
    """Serve the HTTP API (docs at /docs); creates a first secretariat token on first start."""
    import uvicorn

    def action(s: Session) -> None:
        settings = s.settings()
        if workers is not None:
            settings = settings.model_copy(update={"http_workers": workers})
        if settings.http_workers > 1 and s.now:
            raise InvalidInput("--now sets the clock of one server process; "
                               "it cannot be used with --workers", field="now")
        registry = s.registry()
        if not registry.tokens():
            issued = registry.issue_token(s.actor(Role.SECRETARIAT), FIRST_TOKEN,
                                          Role.SECRETARIAT)
            print(f"First start: created the secretariat token {FIRST_TOKEN!r}; "
                  "it is shown only now, keep it secret:")
            print(f"export GNLC_TOKEN={issued.token}")
        else:
            print("Tokens exist already; create more with `gnlc tokens create`.")
        print(f"gnlc API on http://{host}:{port} (docs: http://{host}:{port}/docs), "
              f"store {event_store(settings).redacted()}"
              + (f", {settings.http_workers} processes" if settings.http_workers > 1 else ""),
              flush=True)
        if settings.http_workers == 1:
            app = build_api(settings, registry, s.clock(), projections)
            tune_collector()
            uvicorn.run(app, host=host, port=port, log_level="warning")
            return
        # uvicorn starts the processes; each builds its own API from the same settings, which
        # reach it through the environment (the settings' own source). The projection runner
        # works here, in the supervising process, which is otherwise idle: requests never wait
        # for the runner's turn at a process's interpreter lock.
        os.environ.update(settings_environment(settings))
        runner = build_runner(settings, registry, build_read_models(settings)) \
            if projections else None
        with projection_thread(runner) if runner else contextlib.nullcontext():
            uvicorn.run("infrastructure.bootstrap:served_api", factory=True, host=host,
                        port=port, workers=settings.http_workers, log_level="warning")
    run_in_session(ctx, False, action)

