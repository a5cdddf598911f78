"""The event store's schema is created once, even when many processes start on an empty database."""

from __future__ import annotations

import multiprocessing
from typing import Any

from infrastructure.bootstrap import build_registry, initialise
from infrastructure.settings import Settings
from tests.conftest import SECRETARIAT

PROCESSES = 8


def _start(database_url: str, barrier: Any, results: Any) -> None:
    settings = Settings(database_url=database_url)
    barrier.wait(timeout=60)
    try:
        created = initialise(settings)
        registry = build_registry(settings)
        registry.close()
        results.put(("created" if created else "found", None))
    except Exception as error:  # reported to the test, which fails with it
        results.put(("error", repr(error)))


def test_processes_starting_together_on_an_empty_database_create_the_schema_exactly_once(
    database_url: str,
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=_start, args=(database_url, barrier, results))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert outcomes == [("created", None)] + [("found", None)] * (PROCESSES - 1)
    registry = build_registry(Settings(database_url=database_url))
    try:
        assert registry.open_intake(SECRETARIAT, 2019).year == 2019
    finally:
        registry.close()
