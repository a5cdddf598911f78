"""The head watcher (which wakes SSE clients and the relay) outlives its PostgreSQL connection:
killed with pg_terminate_backend, it listens again and new events still wake waiting readers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest

from application.registry import Registry
from infrastructure.bootstrap import build_registry, event_store
from infrastructure.eventstore.head_watch import HeadWatcher
from infrastructure.settings import Settings
from tests.conftest import SECRETARIAT

WAIT_SECONDS = 30.0


@pytest.fixture
def watched(postgres_schema_url: str) -> Iterator[tuple[Registry, HeadWatcher]]:
    settings = Settings(database_url=postgres_schema_url)
    registry = build_registry(settings)
    watcher = HeadWatcher(registry, event_store(settings))
    watcher.start()
    try:
        yield registry, watcher
    finally:
        watcher.stop()
        registry.close()


def _listening_pids(postgres_url: str, watcher: HeadWatcher) -> list[int]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND query LIKE 'LISTEN%%'", (watcher.application_name,)).fetchall()
    return [row[0] for row in rows]


def _listener(postgres_url: str, watcher: HeadWatcher, other_than: int | None = None) -> int:
    """The pid of the watcher's listening session, once there is one (other than a given one)."""
    found = threading.Event()
    for _ in range(int(WAIT_SECONDS / 0.05)):
        pids = [p for p in _listening_pids(postgres_url, watcher) if p != other_than]
        if pids:
            return pids[0]
        found.wait(0.05)  # waiting on a condition (the session showing up), with a timeout
    raise AssertionError("the head watcher is not listening")


def test_after_its_listening_connection_is_killed_a_new_event_still_wakes_a_waiting_reader(
        watched: tuple[Registry, HeadWatcher], postgres_url: str) -> None:
    registry, watcher = watched
    first = _listener(postgres_url, watcher)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(%s)", (first,))
    _listener(postgres_url, watcher, other_than=first)  # it listens again, on a new session

    head = registry.recorder.max_notification_id() or 0
    registry.open_intake(SECRETARIAT, 2019)
    assert asyncio.run(watcher.wait_beyond(head, WAIT_SECONDS))
    assert watcher.head > head
