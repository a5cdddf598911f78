"""`gnlc example`: the example files a user starts from, shipped with the package."""

from __future__ import annotations

import sys

import typer

from infrastructure.cli.session import app

example_app = typer.Typer(help="Example input files, shipped with the package.")
app.add_typer(example_app, name="example")


@example_app.command("application")
def example_application() -> None:
    """Print an example application form (Part 1), as `gnlc apply` and POST /applications take."""
    from importlib.resources import files

    # Package data, so that an installed gnlc has it wherever it runs (the README's quick start).
    sys.stdout.write(files("infrastructure.examples").joinpath("application.json")
                     .read_text(encoding="utf-8"))

