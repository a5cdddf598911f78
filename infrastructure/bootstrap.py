"""The composition root: everything gnlc runs is built here, from a `Settings` object."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import URL

from application.clock import Clock, SystemClock
from application.registry import Registry
from infrastructure.projection_runner import ProjectionRunner
from infrastructure.read_side import ReadSide
from infrastructure.readmodels import ReadModelStore, read_model_engine
from infrastructure.settings import Settings
from infrastructure.store import EventStoreLocation
from projections.catalogue import PROJECTIONS


def event_store(settings: Settings) -> EventStoreLocation:
    return EventStoreLocation.from_url(settings.database_url, settings.lock_timeout_seconds)


def initialise(settings: Settings) -> bool:
    """Create the event store's schema once; return whether it had to be created.

    Creation runs under a lock, so processes starting together on an empty database never race.
    """
    location = event_store(settings)
    if location.has_schema():
        return False
    with location.schema_lock():
        if location.has_schema():
            return False
        location.prepare()
        Registry(env=location.library_env(create_table=True)).close()
        return True


def build_registry(settings: Settings, clock: Clock | None = None) -> Registry:
    """The registry on the configured store, creating the schema on first use."""
    initialise(settings)
    return Registry(
        env=event_store(settings).library_env(create_table=False),
        clock=clock or SystemClock(),
        timezone=settings.timezone,
    )


def read_model_url(location: EventStoreLocation) -> URL:
    """PostgreSQL: the same database and schema; SQLite: a sibling file of the event store."""
    if location.is_postgres:
        return location.url.set(drivername="postgresql+psycopg", query={})
    path = location.sqlite_path
    return URL.create("sqlite", database=str(path.with_name(f"{path.stem}.readmodels.sqlite")))


def lock_dir(location: EventStoreLocation) -> Path | None:
    """Where SQLite runners keep their projection lock files (PostgreSQL uses advisory locks)."""
    if location.is_postgres:
        return None
    return location.sqlite_path.with_name(f"{location.sqlite_path.stem}.locks")


def build_read_models(settings: Settings) -> ReadModelStore:
    """The read-model tables, created once (under the schema lock) on first use."""
    location = event_store(settings)
    initialise(settings)
    engine = read_model_engine(read_model_url(location),
                               location.schema if location.is_postgres else None)
    store = ReadModelStore(engine, location.schema if location.is_postgres else None)
    with location.schema_lock():
        store.create()
    return store


def build_runner(settings: Settings, registry: Registry, store: ReadModelStore,
                 names: Iterable[str] = tuple(PROJECTIONS), batch_size: int = 5000
                 ) -> ProjectionRunner:
    location = event_store(settings)
    return ProjectionRunner(registry, store, location, lock_dir(location), settings.timezone,
                            names, batch_size)


def build_read_side(settings: Settings, registry: Registry) -> ReadSide:
    store = build_read_models(settings)
    return ReadSide(registry, store, lambda names: build_runner(settings, registry, store, names),
                    settings.timezone)
