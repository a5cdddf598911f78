"""`gnlc demo`: the narrated intake."""

from __future__ import annotations

import typer

from infrastructure.bootstrap import event_store
from infrastructure.cli.session import app, out, run_in_session


@app.command("demo")
def demo(ctx: typer.Context) -> None:
    """A narrated run of one intake year through the real use cases."""
    from infrastructure.cli.narration import narrate

    run_in_session(ctx, False, lambda s: narrate(
        s.registry(), s.actor_name, out, event_store(s.settings()).redacted()))

