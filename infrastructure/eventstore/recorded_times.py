"""When each stored event was recorded: the time of its audit chain row, by position.

The event's own `timestamp` (the library's) is taken when the event object is made, before the
writer waits for the store's write lock; the chain row's time is taken under that lock (see
infrastructure/eventstore/recorders.py), so chain times rise with positions and `known_at`
compares them (infrastructure/audit/log.py, `StoredLog.known_by`). Every edge that shows a
recorded time (the feed, SSE, the NATS relay, history) shows this one, so that `known_at` set
to an event's shown `recorded_at` includes it and any earlier moment excludes it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from infrastructure.eventstore.chain import CHAIN_TABLE

CHUNK = 500  # positions per `IN (...)` query (SQLite bounds the number of parameters)


class RecordedTimes:
    """The chain's recorded time (fixed-width UTC text, as in the chain and the export) of
    stored positions; a position without a chain row (a log that does not verify) is absent."""

    def __init__(self, recorder: object) -> None:
        if isinstance(recorder, SQLiteApplicationRecorder):
            self._select = _sqlite(recorder)
        elif isinstance(recorder, PostgresApplicationRecorder):
            self._select = _postgres(recorder)
        else:
            raise TypeError(f"no recorded times for {type(recorder).__name__}")

    def between(self, start: int, stop: int) -> dict[int, str]:
        """The recorded times of positions start..stop (inclusive)."""
        return dict(self._select(start, stop, None)) if start <= stop else {}

    def of(self, positions: Collection[int]) -> dict[int, str]:
        """The recorded times of the given positions."""
        ordered = sorted(set(positions))
        found: dict[int, str] = {}
        for i in range(0, len(ordered), CHUNK):
            chunk = ordered[i:i + CHUNK]
            found.update(self._select(chunk[0], chunk[-1], chunk))
        return found


# (first, last, only these positions or None for all between) -> (position, recorded_at) rows
Select = Callable[[int, int, list[int] | None], list[tuple[int, str]]]


def _sqlite(recorder: SQLiteApplicationRecorder) -> Select:
    datastore = recorder.datastore

    def select(start: int, stop: int, only: list[int] | None) -> list[tuple[int, str]]:
        statement = f"SELECT position, recorded_at FROM {CHAIN_TABLE} WHERE position >= ? " \
            "AND position <= ?"
        if only is not None:
            statement += f" AND position IN ({','.join('?' * len(only))})"
        with datastore.transaction(commit=False) as cursor:
            raw = cursor.sqlite_cursor
            raw.row_factory = None
            raw.execute(statement, [start, stop, *(only or ())])
            rows: list[tuple[int, str]] = raw.fetchall()
        return rows

    return select


def _postgres(recorder: PostgresApplicationRecorder) -> Select:
    datastore = recorder.datastore
    table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(CHAIN_TABLE))
    between = SQL("SELECT position, recorded_at FROM {} WHERE position >= %s AND position <= %s"
                  ).format(table)
    among = between + SQL(" AND position = ANY(%s)")

    def select(start: int, stop: int, only: list[int] | None) -> list[tuple[int, str]]:
        with datastore.get_connection() as connection, \
                connection.cursor(row_factory=tuple_row) as cursor:
            if only is None:
                cursor.execute(between, [start, stop], prepare=True)
            else:
                cursor.execute(among, [start, stop, only], prepare=True)
            rows: list[Any] = cursor.fetchall()
        return rows

    return select
