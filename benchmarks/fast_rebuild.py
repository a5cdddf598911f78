"""A prototype of a faster full rebuild: benchmark code, not gnlc's. `rebuild.py --prototype` times
it next to `ProjectionRunner.rebuild`, to show what each proposed production change gains.

It folds the same projection classes over the same events (one pass, the topics they handle), fills
the same `__next` tables and swaps them in with `ReadModelStore.swap`, as `ProjectionRunner.rebuild`
does, with these changes, each of which can be switched off to measure it alone:

- `freeze_gc`: `gc.freeze()` after each batch tells the collector that what was folded so far is
  permanent, so its full collections stop rescanning hundreds of thousands of row dicts (CPython
  3.11 runs one each time the heap has grown by a quarter, rescanning all of it);
- `share_members`: `members` and `deadlines` hold the same rows (`DeadlinesProjection` is
  `MembersProjection` under another table name): fold them once, write the rows to both tables;
- `skip_changes`: forget the dirty keys instead of calling `projection.changes()` before the bulk
  write (it builds a second dict of every row, only to be dropped, at the moment of peak memory);
- `driver_insert`: insert with the database driver — `executemany` of tuples on SQLite, `COPY` on
  PostgreSQL — instead of SQLAlchemy's `insert()` executemany of dicts;
- `parallel`: two processes, one folding `members` and `deadlines` (they read only `City` events),
  the other `quotas` and `applications` (only `CityApplication` events): the topics are disjoint,
  so no event is decoded twice, and both cores work. Each process swaps its own tables in.

`rebuild.py` checks that the prototype's tables hold exactly the rows of the production rebuild.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import resource
import traceback
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from eventsourcing.utils import get_topic

from application.registry import Registry
from infrastructure.bootstrap import build_read_models, build_registry
from infrastructure.readmodels.tables import NEXT, Conflict, ReadModelStore
from infrastructure.settings import Settings
from projections.base import Projection
from projections.catalogue import PROJECTIONS
from projections.members import DeadlinesProjection, MembersProjection

FLAGS = ("parallel", "freeze_gc", "share_members", "skip_changes", "driver_insert")
# Projections whose topics do not overlap: folded in parallel processes.
GROUPS = (("members", "deadlines"), ("quotas", "applications"))


def prototype_rebuild(registry: Registry, store: ReadModelStore, timezone: str,
                      names: Sequence[str] = tuple(PROJECTIONS), batch_size: int = 5000, *,
                      freeze_gc: bool = True, share_members: bool = True,
                      skip_changes: bool = True, driver_insert: bool = True) -> int:
    """Rebuild `names` in one pass; returns the position reached (as `ProjectionRunner.rebuild`)."""
    for name in names:
        store.prepare_rebuild(PROJECTIONS[name])
    folding = {name: PROJECTIONS[name](timezone) for name in names}
    copies: dict[str, str] = {}  # table -> the table whose rows it receives
    if share_members and "members" in folding and "deadlines" in folding:
        assert issubclass(DeadlinesProjection, MembersProjection)
        del folding["deadlines"]
        copies["deadlines"] = "members"
    topics = sorted({get_topic(c) for p in folding.values() for c in p.handles()})
    targets = list(folding.values())
    position = 0
    try:
        while True:
            positions = store.positions()
            live = {name: positions[name] for name in names}
            target = max(registry.recorder.max_notification_id() or 0,
                         *(p for p, _ in live.values()))
            while position < target:
                batch = registry.recorder.select_notifications(
                    position + 1, batch_size, stop=target, topics=topics)
                for notification in batch:
                    event = registry.mapper.to_domain_event(notification)
                    for projection in targets:
                        projection.apply(event)
                position = target if len(batch) < batch_size else batch[-1].id
                if freeze_gc:
                    gc.freeze()
            write(store, folding, copies, skip_changes, driver_insert)
            try:
                store.swap(live, position)
                return position
            except Conflict:
                continue  # a live runner moved past us: catch up to it, then swap
    finally:
        if freeze_gc:
            gc.unfreeze()


def _fold_group(url: str, names: Sequence[str], flags: dict[str, bool], queue: Any) -> None:
    settings = Settings(database_url=url)
    registry = build_registry(settings)
    store = build_read_models(settings)
    try:
        position = prototype_rebuild(registry, store, settings.timezone, names, **flags)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put(("ok", position, peak))
    except BaseException:
        queue.put(("error", traceback.format_exc(), 0.0))
    finally:
        registry.close()
        store.engine.dispose()


def parallel_rebuild(url: str, flags: dict[str, bool]) -> tuple[int, list[float]]:
    """Each group of GROUPS folded and swapped in by a process of its own, at the same time;
    returns the lowest position reached and each process's peak memory (MB)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_fold_group, args=(url, names, flags, queue))
                 for names in GROUPS]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join()
    failures = [detail for status, detail, _ in reports if status != "ok"]
    if failures:
        raise RuntimeError("a rebuild process failed:\n" + str(failures[0]))
    return min(int(position) for _, position, _ in reports), [peak for *_, peak in reports]


def write(store: ReadModelStore, folding: dict[str, Projection], copies: dict[str, str],
          skip_changes: bool, driver_insert: bool) -> None:
    """Every row into the fresh `__next` tables, in one transaction."""
    tables: list[tuple[str, Iterable[dict[str, Any]]]] = []
    for projection in folding.values():
        if skip_changes:
            projection.dirty = {t: set() for t in projection.keys}
        else:
            projection.changes()
        tables += [(name, rows.values()) for name, rows in projection.tables.items()]
    tables += [(copy, folding[source].tables[source].values())
               for copy, source in copies.items()]
    with store.engine.begin() as connection:
        for name, rows in tables:
            table = store.schema.tables[name + NEXT]
            connection.execute(table.delete())  # a swap retried after a conflict writes again
            if not driver_insert:
                values = list(rows)
                for start in range(0, len(values), 5000):
                    connection.execute(table.insert(), values[start:start + 5000])
                continue
            columns = [c.name for c in table.columns]
            as_json = {c.name for c in table.columns if c.type.__class__.__name__ == "JSON"}
            preparer = store.engine.dialect.identifier_preparer
            into = (f"{preparer.format_table(table)} "
                    f"({', '.join(preparer.quote(c) for c in columns)})")
            raw: Any = connection.connection.dbapi_connection
            if store.engine.dialect.name == "sqlite":
                marks = ", ".join("?" * len(columns))
                raw.cursor().executemany(f"INSERT INTO {into} VALUES ({marks})",
                                         _tuples(rows, columns, as_json, dates_as_text=True))
            else:
                with raw.cursor() as cursor, cursor.copy(f"COPY {into} FROM STDIN") as copy:
                    for values in _tuples(rows, columns, as_json, dates_as_text=False):
                        copy.write_row(values)


def _tuples(rows: Iterable[dict[str, Any]], columns: list[str], as_json: set[str],
            dates_as_text: bool) -> Iterable[tuple[Any, ...]]:
    """Rows as the driver takes them: JSON columns serialised as SQLAlchemy's JSON type does;
    on SQLite, dates as ISO text, as SQLAlchemy's SQLite `Date` stores them."""
    for row in rows:
        yield tuple(
            json.dumps(value) if c in as_json
            else value.isoformat() if dates_as_text and isinstance(value, date)
            else value
            for c in columns for value in (row[c],))
