"""The library's recorders, extended: several aggregates' events in one query, and the audit
hash chain written in the same transaction as the events (see infrastructure/chain.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from infrastructure.chain import CHAIN_TABLE, GENESIS, extend, recorded_now


class SQLiteRegistryRecorder(SQLiteApplicationRecorder):
    def select_positioned_streams(self, originator_ids: Sequence[UUID]
                                  ) -> list[tuple[int, StoredEvent]]:
        """Every event of the given aggregates with its log position, in log order."""
        marks = ",".join("?" * len(originator_ids))
        statement = (
            f"SELECT rowid, * FROM {self.events_table_name} WHERE originator_id IN ({marks}) "
            "ORDER BY rowid"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in originator_ids])
            return [
                (row["rowid"], StoredEvent(
                    originator_id=self.convert_originator_id(row["originator_id"]),
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=row["state"],
                ))
                for row in cursor.fetchall()
            ]

    def select_streams(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of the given aggregates, by aggregate then version, in one query."""
        marks = ",".join("?" * len(originator_ids))
        statement = (
            f"SELECT * FROM {self.events_table_name} WHERE originator_id IN ({marks}) "
            "ORDER BY originator_id, originator_version"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in originator_ids])
            return [
                StoredEvent(
                    originator_id=self.convert_originator_id(row["originator_id"]),
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=row["state"],
                )
                for row in cursor.fetchall()
            ]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        if positions:
            # This transaction holds SQLite's write lock since its first insert: no other
            # writer can read the same previous hash.
            c.execute(f"SELECT hash FROM {CHAIN_TABLE} ORDER BY position DESC LIMIT 1")
            row = c.fetchone()
            links = extend(row[0] if row else GENESIS, positions, stored_events, recorded_now())
            c.executemany(f"INSERT INTO {CHAIN_TABLE} (position, hash, recorded_at) "
                          "VALUES (?, ?, ?)", [(x.position, x.hash, x.recorded_at) for x in links])
        return positions


class PostgresRegistryRecorder(PostgresApplicationRecorder):
    def select_positioned_streams(self, originator_ids: Sequence[UUID]
                                  ) -> list[tuple[int, StoredEvent]]:
        """Every event of the given aggregates with its log position, in log order."""
        statement = SQL(
            "SELECT * FROM {schema}.{table} WHERE originator_id = ANY(%s) "
            "ORDER BY notification_id"
        ).format(schema=Identifier(self.datastore.schema),
                 table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(statement, [list(originator_ids)], prepare=True)
            return [
                (row["notification_id"], StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                ))
                for row in cursor.fetchall()
            ]

    def select_streams(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of the given aggregates, by aggregate then version, in one query."""
        statement = SQL(
            "SELECT * FROM {schema}.{table} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema),
                 table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(statement, [list(originator_ids)], prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in cursor.fetchall()
            ]

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow],
                                       stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if positions:
            # The library's EXCLUSIVE lock on the events table, taken before the insert, is held
            # until commit: writers extend the chain one after another.
            table = SQL("{}.{}").format(Identifier(self.datastore.schema), Identifier(CHAIN_TABLE))
            curs.execute(SQL("SELECT hash FROM {} ORDER BY position DESC LIMIT 1").format(table))
            row = curs.fetchone()
            links = extend(row["hash"] if row else GENESIS, positions, stored_events,
                           recorded_now())
            curs.executemany(
                SQL("INSERT INTO {} (position, hash, recorded_at) VALUES (%s, %s, %s)")
                .format(table), [(x.position, x.hash, x.recorded_at) for x in links])
        return positions
