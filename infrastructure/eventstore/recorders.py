"""The library's recorders, extended: several aggregates' events in one query, and the audit
hash chain written in the same transaction as the events (see
infrastructure/eventstore/chain.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import DatabaseError, IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from infrastructure.eventstore.chain import CHAIN_TABLE, GENESIS, extend, recorded_now
from infrastructure.eventstore.command_keys import COLUMNS, COMMAND_KEYS_TABLE, key_row
from infrastructure.eventstore.data_keys import COLUMNS as KEY_COLUMNS
from infrastructure.eventstore.data_keys import DATA_KEYS_TABLE, staged_rows

# The library version whose private insert steps these recorders extend (and whose PostgreSQL
# `insert_events` commits before re-raising): review this module, then change it with the pin.
LIBRARY_VERSION = "9.5.6"


class ChainWriteFailed(DatabaseError):
    """The audit chain could not be extended; the events were rolled back with it.

    Not an `IntegrityError`: that means a concurrent writer won and is retried as a conflict,
    while this is a fault (a bug, a corrupt head, a refused chain row) that a retry won't mend.
    The edges report it as `unavailable`, as any other database error.
    """


class UnsupportedSetting(OSError):
    """A library setting under which events could be stored without their chain links."""


class CommandKeyWriteFailed(DatabaseError):
    """The Idempotency-Key row of a command could not be written (other than a key already
    recorded, which is a conflict); the events were rolled back with it."""


class DataKeyWriteFailed(DatabaseError):
    """The data keys of the events' personal values could not be written (or an erasure's
    keys destroyed); the events were rolled back with them."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the data keys could not be recorded, nothing was stored: {detail}")


def _failed(error: Exception) -> ChainWriteFailed:
    return ChainWriteFailed(f"the audit chain could not be extended, nothing was stored: "
                            f"{type(error).__name__}: {error}")


def _refuse_unchainable(datastore: SQLiteDatastore | PostgresDatastore) -> None:
    """Refuse settings that bypass the chain (they are pinned off in `library_env`; this
    catches any other way of building the recorder)."""
    if getattr(datastore, "enable_db_functions", False):
        raise UnsupportedSetting(
            "POSTGRES_ENABLE_DB_FUNCTIONS is on: the library would insert events through a "
            "stored function that bypasses the audit chain; gnlc needs it off")
    if datastore.originator_id_type != "uuid":
        raise UnsupportedSetting(
            f"ORIGINATOR_ID_TYPE is {datastore.originator_id_type!r}: the audit chain hashes "
            "stream ids as UUIDs; gnlc needs 'uuid'")


class _RollBack(BaseException):
    """Carries a chain failure out of the library's PostgreSQL `insert_events`.

    That method catches `Exception` inside its transaction block, lets the transaction commit,
    and re-raises afterwards: a chain failure raised as an `Exception` would leave the events
    stored without their links. A `BaseException` passes its `except Exception`, so the
    transaction block sees it and rolls back; `insert_events` below unwraps it.
    """

    def __init__(self, failure: DatabaseError) -> None:
        super().__init__(failure)
        self.failure = failure


class SQLiteRegistryRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, *args: Any, **kwargs: Any) -> None:
        super().__init__(datastore, *args, **kwargs)
        _refuse_unchainable(datastore)

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
        """Every event of the given aggregates in one query (in log order, so each aggregate's
        events come in version order)."""
        return [stored for _, stored in self.select_positioned_streams(originator_ids)]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        if positions:
            # The library's transaction rolls back on any exception raised here.
            try:
                self._extend_chain(c, positions, stored_events)
            except Exception as error:
                raise _failed(error) from error
            # A key already recorded is an IntegrityError: the library rolls back, as for a
            # version conflict.
            self._record_command_key(c, positions)
            try:
                self._record_data_keys(c)
            except Exception as error:
                raise DataKeyWriteFailed(f"{type(error).__name__}: {error}") from error
        return positions

    def _extend_chain(self, c: SQLiteCursor, positions: Sequence[int],
                      stored_events: Sequence[StoredEvent]) -> None:
        # This transaction holds SQLite's write lock since its first insert: no other
        # writer can read the same previous hash.
        c.execute(f"SELECT hash FROM {CHAIN_TABLE} ORDER BY position DESC LIMIT 1")
        row = c.fetchone()
        links = extend(row[0] if row else GENESIS, positions, stored_events, recorded_now())
        c.executemany(f"INSERT INTO {CHAIN_TABLE} (position, hash, recorded_at) "
                      "VALUES (?, ?, ?)", [(x.position, x.hash, x.recorded_at) for x in links])

    def _record_command_key(self, c: SQLiteCursor, positions: Sequence[int]) -> None:
        """The Idempotency-Key of the command saving these events, in their transaction."""
        row = key_row(list(positions))
        if row is not None:
            c.execute(f"INSERT INTO {COMMAND_KEYS_TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                      row)


    def _record_data_keys(self, c: SQLiteCursor) -> None:
        """The data keys the events' personal values were sealed with, and the destruction of
        the keys an erasure names: in the events' transaction (see eventstore/data_keys.py)."""
        new, erased = staged_rows()
        if new:
            c.executemany(f"INSERT INTO {DATA_KEYS_TABLE} ({KEY_COLUMNS}) "
                          "VALUES (?, ?, ?, ?, ?, ?)", new)
        if erased:
            # The freed bytes of the old row are overwritten with zeros, not left in the page.
            c.execute("PRAGMA secure_delete = ON")
            c.executemany(f"UPDATE {DATA_KEYS_TABLE} SET data_key = NULL, wrapped_by = NULL, "
                          "erased_at = ? WHERE key_id = ?", erased)


class PostgresRegistryRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *args: Any, **kwargs: Any) -> None:
        super().__init__(datastore, *args, **kwargs)
        _refuse_unchainable(datastore)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        _refuse_unchainable(self.datastore)  # the stored-function path never reaches the chain
        try:
            positions: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
        except _RollBack as rolled_back:
            raise rolled_back.failure from rolled_back.failure.__cause__
        return positions

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
        """Every event of the given aggregates in one query (in log order, so each aggregate's
        events come in version order)."""
        return [stored for _, stored in self.select_positioned_streams(originator_ids)]

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow],
                                       stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if positions:
            try:
                # Leaving this (nested) pipeline syncs it: a refused chain row fails here, as a
                # chain failure, rather than at commit as an error of the library's insert.
                with curs.connection.pipeline():
                    self._extend_chain(curs, positions, stored_events)
            except Exception as error:
                raise _RollBack(_failed(error)) from error
            new, erased = staged_rows()
            if new or erased:
                try:
                    with curs.connection.pipeline():
                        self._record_data_keys(curs, new, erased)
                except Exception as error:
                    raise _RollBack(DataKeyWriteFailed(
                        f"{type(error).__name__}: {error}")) from error
            row = key_row(list(positions))
            if row is None:  # not a keyed command: no second pipeline sync (a round trip)
                return positions
            try:
                with curs.connection.pipeline():
                    self._record_command_key(curs, row)
            except psycopg.IntegrityError as error:
                # A key already recorded: refused like a version conflict, nothing stored.
                raise _RollBack(IntegrityError(error)) from error
            except Exception as error:
                raise _RollBack(CommandKeyWriteFailed(
                    f"the command's Idempotency-Key could not be recorded, nothing was stored: "
                    f"{type(error).__name__}: {error}")) from error
        return positions

    def _record_data_keys(self, curs: Cursor[DictRow], new: Sequence[Sequence[object]],
                          erased: Sequence[Sequence[object]]) -> None:
        """The data keys of the events' sealed values, and the destruction of an erasure's
        keys, in the events' transaction (see eventstore/data_keys.py)."""
        table = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                    Identifier(DATA_KEYS_TABLE))
        if new:
            curs.executemany(SQL("INSERT INTO {} (" + KEY_COLUMNS + ") "
                                 "VALUES (%s, %s, %s, %s, %s, %s)").format(table), new)
        if erased:
            curs.executemany(SQL("UPDATE {} SET data_key = NULL, wrapped_by = NULL, "
                                 "erased_at = %s WHERE key_id = %s").format(table), erased)

    def _extend_chain(self, curs: Cursor[DictRow], positions: Sequence[int],
                      stored_events: Sequence[StoredEvent]) -> None:
        # The library's EXCLUSIVE lock on the events table, taken before the insert, is held
        # until commit: writers extend the chain one after another.
        table = SQL("{}.{}").format(Identifier(self.datastore.schema), Identifier(CHAIN_TABLE))
        curs.execute(SQL("SELECT hash FROM {} ORDER BY position DESC LIMIT 1").format(table))
        row = curs.fetchone()
        links = extend(row["hash"] if row else GENESIS, positions, stored_events, recorded_now())
        curs.executemany(
            SQL("INSERT INTO {} (position, hash, recorded_at) VALUES (%s, %s, %s)")
            .format(table), [(x.position, x.hash, x.recorded_at) for x in links])

    def _record_command_key(self, curs: Cursor[DictRow], row: Sequence[object]) -> None:
        """The Idempotency-Key of the command saving these events, in their transaction."""
        curs.execute(SQL("INSERT INTO {}.{} (" + COLUMNS + ") VALUES (%s, %s, %s, %s, %s, %s)")
                     .format(Identifier(self.datastore.schema),
                             Identifier(COMMAND_KEYS_TABLE)), row)
