"""The library's recorders, extended to read several aggregates' events in one query."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier


class SQLiteRegistryRecorder(SQLiteApplicationRecorder):
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


class PostgresRegistryRecorder(PostgresApplicationRecorder):
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
