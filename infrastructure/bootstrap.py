"""The composition root: everything gnlc runs is built here, from a `Settings` object."""

from __future__ import annotations

import gc
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from application.clock import Clock, SystemClock
from application.registry import Registry
from infrastructure.audit.log import StoredLog
from infrastructure.console import ConsoleServices, add_console
from infrastructure.eventstore.data_keys import DataKeys, master_key
from infrastructure.eventstore.head_watch import HeadWatcher
from infrastructure.eventstore.location import EventStoreLocation
from infrastructure.feed.nats_relay import NatsRelay, NatsTarget, RelayPositions
from infrastructure.feed.public_events import Feed
from infrastructure.http.api import Services, create_api
from infrastructure.http.audit import add_audit_routes
from infrastructure.http.events import EventServices, add_event_routes
from infrastructure.http.idempotency import IdempotencyKeys
from infrastructure.http.limits import BodyLimit, FailedAuthentications, RateLimiter, StreamSlots
from infrastructure.readmodels.read_side import ReadSide
from infrastructure.readmodels.runner import ProjectionFailed, ProjectionLock, ProjectionRunner
from infrastructure.readmodels.tables import ReadModelStore, read_model_engine
from infrastructure.settings import Settings
from projections.catalogue import PROJECTIONS


def event_store(settings: Settings) -> EventStoreLocation:
    return EventStoreLocation.from_url(settings.database_url, settings.lock_timeout_seconds)


def initialise(settings: Settings) -> bool:
    """Create the event store's schema and the audit chain once; return whether the store had to
    be created. Creation runs under a lock, so processes starting together never race; a store
    made before the chain existed gets its chain (over the events it holds) on first use.
    """
    location = event_store(settings)
    log = StoredLog(location)
    if location.has_schema() and log.has_chain():
        return False
    with location.schema_lock():
        created = not location.has_schema()
        if created:
            location.prepare()
            Registry(env=location.library_env(create_table=True)).close()
        if not log.has_chain():
            log.create_chain()
        return created


def build_registry(settings: Settings, clock: Clock | None = None) -> Registry:
    """The registry on the configured store, creating the schema on first use."""
    initialise(settings)
    return Registry(
        env=event_store(settings).library_env(create_table=False),
        clock=clock or SystemClock(),
        timezone=settings.timezone,
        personal_data=build_data_keys(settings),
    )


def event_store_engine(location: EventStoreLocation, pool_size: int = 5) -> Engine:
    """An SQLAlchemy engine on the event store's own database (its tables beside the log's)."""
    if location.is_postgres:
        return create_engine(read_model_url(location), pool_size=pool_size,
                             max_overflow=4 * pool_size)
    return read_model_engine(URL.create("sqlite", database=str(location.sqlite_path)), None)


def build_data_keys(settings: Settings) -> DataKeys:
    """The data keys of personal values, in their table in the event store's database (the
    recorders write them in the transaction of the events that use them)."""
    location = event_store(settings)
    # A small pool: one short query per answer that shows personal data, or per erasure.
    keys = DataKeys(event_store_engine(location, pool_size=2),
                    location.schema if location.is_postgres else None,
                    master_key(settings.master_key.get_secret_value()
                               if settings.master_key else None))
    with location.schema_lock():
        keys.create()
    return keys


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


def build_idempotency_keys(settings: Settings) -> IdempotencyKeys:
    """The idempotency keys, in the event store's database: the recorders write a key in the
    transaction of its command's events (see infrastructure/http/idempotency.py)."""
    location = event_store(settings)
    # An engine of their own: a keyed request holds a connection (its advisory lock) while
    # it runs, which must not starve the read models' pool.
    engine = event_store_engine(location, pool_size=10)
    keys = IdempotencyKeys(engine, location.schema if location.is_postgres else None,
                           lock_dir(location))
    with location.schema_lock():
        keys.create()
    return keys


def build_read_side(settings: Settings, registry: Registry,
                    store: ReadModelStore | None = None) -> ReadSide:
    store = store or build_read_models(settings)
    chain = StoredLog(event_store(settings))
    return ReadSide(registry, store, lambda names: build_runner(settings, registry, store, names),
                    settings.timezone, chain.known_by, settings.past_replays)


def build_api(settings: Settings, registry: Registry, clock: Clock | None = None,
              projections: bool = True, owns_registry: bool = False) -> BodyLimit:
    """The HTTP API as an ASGI application; with `projections`, a runner works in-process.

    With several server processes (`http_workers`), each one limits a token to its share of
    the rate."""
    store = build_read_models(settings)
    keys = build_idempotency_keys(settings)
    watcher = HeadWatcher(registry, event_store(settings))
    chain = StoredLog(event_store(settings))
    runner = build_runner(settings, registry, store) if projections else None

    @contextmanager
    def background() -> Iterator[None]:
        watcher.start()
        try:
            with projection_thread(runner) if runner else nullcontext():
                yield
        finally:
            watcher.stop()
            store.engine.dispose()  # the server's own pools
            keys.engine.dispose()
            if owns_registry:
                registry.close()

    services = Services(
        registry=registry,
        read_side=build_read_side(settings, registry, store),
        keys=keys,
        limiter=RateLimiter(settings.rate_limit / settings.http_workers,
                            math.ceil(settings.rate_burst / settings.http_workers)),
        clock=clock or registry.clock,
        timezone=settings.timezone,
        background=background,
        failures=FailedAuthentications(settings.address_rate_limit / settings.http_workers,
                                       math.ceil(settings.address_rate_burst
                                                 / settings.http_workers)),
    )
    api = create_api(services)
    add_audit_routes(api, registry, chain)
    add_event_routes(api, EventServices(Feed(registry), watcher,
                                         settings.stream_heartbeat_seconds,
                                         StreamSlots(settings.streams_per_token)))
    add_console(api, ConsoleServices(registry, services.read_side, chain, watcher,
                                     services.clock, settings.timezone, services.limiter,
                                     settings.stream_heartbeat_seconds))
    return BodyLimit(api)


def tune_collector() -> None:
    """The garbage collector of a server process, once it has started: what start-up built
    (modules, the app, caches) is frozen out of the collector's scans, and young collections
    come less often. With Python's defaults a full collection (55-90 ms at 1,000 members) landed
    in the slowest console pages' tail (benchmarks/README.md, "Staff console")."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def served_api() -> BodyLimit:
    """The API of one of several server processes (`gnlc serve --workers N` starts them with
    uvicorn, which calls this in each): built from the environment's settings, without a
    projection runner (the supervising process runs it, or a runner of its own does)."""
    settings = Settings()
    api = build_api(settings, build_registry(settings), projections=False, owns_registry=True)
    tune_collector()
    return api


@contextmanager
def projection_thread(runner: ProjectionRunner) -> Iterator[threading.Thread]:
    """Keep the read models up to date in a thread for as long as the context lasts."""
    log = logging.getLogger("gnlc.projections")
    stop = threading.Event()

    def failed(failure: ProjectionFailed) -> None:
        log.error("%s", failure)

    thread = threading.Thread(target=runner.run, args=(stop, failed), name="projections",
                              daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)


def build_relay(settings: Settings, registry: Registry, target: NatsTarget) -> NatsRelay:
    """The NATS JetStream relay; its position lives beside the read models."""
    store = build_read_models(settings)
    positions = RelayPositions(store.engine, store.schema.metadata.schema)
    location = event_store(settings)
    with location.schema_lock():
        positions.create()
    lock = ProjectionLock(location, lock_dir(location), f"relay-{target.name}")
    return NatsRelay(Feed(registry), positions, lock, HeadWatcher(registry, location), target)
