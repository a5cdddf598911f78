"""`gnlc events` and `gnlc relay`: the public event contract and its relays."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from domain.errors import InvalidInput
from infrastructure.bootstrap import build_relay
from infrastructure.cli.session import Session, app, err, fail, out, run_in_session
from infrastructure.feed.nats_relay import NatsTarget

events_app = typer.Typer(help="The public event contract.")
app.add_typer(events_app, name="events")


@events_app.command("schemas")
def events_schemas(
    out_dir: Annotated[Path, typer.Argument(
        help="The directory to write one file per type to (docs/events in a checkout).")],
) -> None:
    """Write the JSON Schema of every public event type and version, one file each."""
    from projections.public import schemas

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for key, schema in schemas().items():
            (out_dir / f"{key}.json").write_text(
                json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                encoding="utf-8")
    except OSError as error:  # not writable, a file in the way: a clear error, no traceback
        fail(InvalidInput(f"cannot write to {out_dir}: {error.strerror or error}",
                          field="out_dir"), False)
    out.print(f"wrote {len(schemas())} schemas to {out_dir}")


relay_app = typer.Typer(help="Relays of the event feed to streaming engines.")
app.add_typer(relay_app, name="relay")


@relay_app.command("nats")
def relay_nats(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url")] = "nats://127.0.0.1:4222",
    stream: Annotated[str, typer.Option("--stream")] = "GNLC",
    subjects: Annotated[str, typer.Option(
        "--subjects", help="Subject prefix: events go to PREFIX.<type>.")] = "gnlc.events",
) -> None:
    """Publish every event to NATS JetStream, exactly once, in order (until interrupted)."""
    import asyncio

    def action(s: Session) -> None:
        relay = build_relay(s.settings(), s.registry(), NatsTarget(url, stream, subjects))

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            err.print(f"relaying to {url} stream {stream} subjects {subjects}.>; "
                      "publishing while no other relay does")
            await relay.run(stop)

        asyncio.run(main())
    run_in_session(ctx, False, action)

