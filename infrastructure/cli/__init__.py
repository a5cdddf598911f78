"""The command line (`gnlc`): one module per command group, registered on one Typer app."""

from __future__ import annotations

# Importing a command module registers its commands on `app`.
from infrastructure.cli import (  # noqa: F401
    applications,
    audit,
    demo,
    events,
    examples,
    imports,
    intakes,
    memberships,
    privacy,
    projections,
    queries,
    records,
    serve,
    tokens,
)
from infrastructure.cli.session import app


def run() -> None:
    """The console script's entry point."""
    app()


__all__ = ["app", "run"]

