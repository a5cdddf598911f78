"""The composition root: everything gnlc runs is built here, from a `Settings` object."""

from __future__ import annotations

from application.clock import Clock, SystemClock
from application.registry import Registry
from infrastructure.settings import Settings
from infrastructure.store import EventStoreLocation


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
