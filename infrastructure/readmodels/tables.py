"""The read models' SQL tables (SQLAlchemy) and the positions that make every event count once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from functools import cached_property
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.sql.dml import Delete, Insert, Update

from projections.base import Key, Projection, Row
from projections.catalogue import PROJECTIONS

NEXT = "__next"  # suffix of the tables a rebuild fills before they are swapped in


def _columns(table: str) -> list[Column[Any]]:
    """The columns of each read-model table (the projections' row keys)."""
    city = [
        Column("city_id", String(36), primary_key=True), Column("name", String(500)),
        Column("country", String(2)), Column("status", String(16)),
        Column("period", Integer), Column("admitted_on", Date), Column("intake_year", Integer),
        Column("ended_on", Date), Column("periods", Integer), Column("reports", JSON),
        Column("memberships", JSON),
    ]
    steps = [Column(f"{s}_on", Date) for s in (
        "submitted", "endorsed", "declined", "withdrawn", "admitted", "rejected", "retracted")]
    return {
        "members": city,
        "deadlines": city,
        "quotas": [
            Column("country", String(2), primary_key=True),
            Column("year", Integer, primary_key=True), Column("limit", Integer),
            Column("admitted", Integer), Column("retracted", Integer), Column("pending", Integer),
        ],
        "quota_applications": [
            Column("application_id", String(36), primary_key=True), Column("country", String(2)),
            Column("year", Integer), Column("status", String(16)),
        ],
        "applications": [
            Column("application_id", String(36), primary_key=True),
            Column("city_id", String(36)), Column("city", String(500)),
            Column("country", String(2)), Column("intake_year", Integer),
            Column("status", String(16)), *steps,
        ],
        "contacts": [
            Column("city_id", String(36), primary_key=True),
            Column("person", String(16), primary_key=True), Column("since", Date),
            Column("source", String(16)),
            # The person's part as stored: personal values sealed, never in the clear.
            Column("details", JSON),
        ],
    }[table]


class ReadModelSchema:
    """Every read-model table, under its live name and its rebuild (`__next`) name."""

    def __init__(self, schema: str | None) -> None:
        self.metadata = MetaData(schema=schema)
        self.tables: dict[str, Table] = {}
        for projection in PROJECTIONS.values():
            for name in projection.keys:
                for suffix in ("", NEXT):
                    self.tables[name + suffix] = Table(name + suffix, self.metadata,
                                                       *_columns(name))
        self.positions = Table(
            "projection_positions", self.metadata,
            Column("projection", String(64), primary_key=True),
            Column("position", Integer, nullable=False),
            Column("generation", Integer, nullable=False),
            Column("updated_at", DateTime(timezone=True)),
        )
        # Append-only: one row per committed batch, so an audit can prove no event counted twice.
        self.batches = Table(
            "projection_batches", self.metadata,
            Column("projection", String(64), primary_key=True),
            Column("generation", Integer, primary_key=True),
            Column("first_position", Integer, primary_key=True),
            Column("last_position", Integer, nullable=False),
            Column("committed_at", DateTime(timezone=True)),
        )

    def table(self, name: str) -> Table:
        """Any table by name: a read-model table, `projection_positions` or `projection_batches`."""
        if name == self.positions.name:
            return self.positions
        if name == self.batches.name:
            return self.batches
        return self.tables[name]

    def live(self) -> list[Table]:
        return [t for name, t in self.tables.items() if not name.endswith(NEXT)]


def read_model_engine(url: URL, schema: str | None) -> Engine:
    """An engine for the read models; SQLite files get WAL so readers never block the runner.

    No pre-ping: it costs a round trip on every checkout (a third of a query's time on
    PostgreSQL). After a database restart, the first statement on a dead connection fails (an
    answer of 503, "retry"), and SQLAlchemy then replaces every pooled connection."""
    engine = create_engine(url, future=True)
    if url.get_backend_name() == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
    return engine


class Conflict(Exception):
    """Another runner (or a rebuild) moved the projection's position: reload and go on."""


class ReadModelStore:
    """Reads and writes the projections' rows and positions, in one transaction per batch."""

    def __init__(self, engine: Engine, schema: str | None) -> None:
        self.engine = engine
        self.schema = ReadModelSchema(schema)
        # Reads of one statement need no transaction of their own: on PostgreSQL, autocommit
        # saves the BEGIN and ROLLBACK round trips around each query (a statement still sees
        # one snapshot). SQLite's driver opens no transaction for a SELECT anyway.
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT") \
            if engine.dialect.name == "postgresql" else engine
        self._selects: dict[tuple[str, tuple[str, ...]], Select[Any]] = {}
        self._inserts: dict[str, Insert] = {}
        self._deletes: dict[str, Delete] = {}

    def create(self) -> None:
        self.schema.metadata.create_all(
            self.engine, tables=[*self.schema.live(), self.schema.positions, self.schema.batches])
        with self.engine.begin() as connection:
            known = {r[0] for r in connection.execute(select(self.schema.positions.c.projection))}
            for name in PROJECTIONS:
                if name not in known:
                    connection.execute(insert(self.schema.positions).values(
                        projection=name, position=0, generation=0, updated_at=_now()))

    def positions(self) -> dict[str, tuple[int, int]]:
        """Per projection: (position, generation)."""
        with self.reader.connect() as connection:
            rows = connection.execute(self._select(self.schema.positions.name, ())).mappings()
            return {r["projection"]: (r["position"], r["generation"]) for r in rows}

    def load(self, projection: Projection, suffix: str = "") -> None:
        with self.engine.connect() as connection:
            for name in projection.keys:
                result = connection.execute(select(self.schema.tables[name + suffix]))
                projection.load(name, (dict(r) for r in result.mappings()))

    def rows(self, table: str, **equal: Any) -> list[Row]:
        """The table's rows; with `equal`, only those whose columns have these values (None:
        any), selected in SQL rather than decoded and dropped."""
        given = {k: v for k, v in equal.items() if v is not None}
        query = self._select(table, tuple(sorted(given)))
        with self.reader.connect() as connection:
            return [dict(r) for r in connection.execute(query, given).mappings()]

    def rows_among(self, table: str, column: str, values: Iterable[Any]) -> list[Row]:
        """The table's rows whose `column` is one of `values` (one query)."""
        chosen = self.schema.table(table)
        query = select(chosen).where(chosen.c[column].in_(bindparam("values", expanding=True)))
        with self.reader.connect() as connection:
            return [dict(r) for r in connection.execute(query, {"values": list(values)})
                    .mappings()]

    def _select(self, table: str, columns: tuple[str, ...]) -> Select[Any]:
        """SELECT * FROM table WHERE column = :column ..., built once and reused (its cache key
        is then computed once too)."""
        query = self._selects.get((table, columns))
        if query is None:
            chosen = self.schema.table(table)
            query = select(chosen).where(*(chosen.c[c] == bindparam(c) for c in columns))
            self._selects[(table, columns)] = query
        return query

    def commit(self, batch: Mapping[str, tuple[Projection, tuple[int, int], int]],
               suffix: str = "") -> None:
        """Write each projection's changed rows and move its position, all in one transaction.

        `batch` maps a projection name to (projection, (position, generation) it started from,
        the new position). Raises `Conflict`, writing nothing, when any position moved meanwhile.
        """
        with self.engine.begin() as connection:
            # Always in name order: two runners committing at once (one that lost its lock and
            # does not know yet) queue on the same first row instead of deadlocking.
            for name, (projection, (position, generation), new_position) in sorted(batch.items()):
                self._move(connection, name, position, generation, new_position)
                self._write(connection, projection.changes(), projection, suffix)

    # The statements of a commit are built once, with bound parameters, and reused: building
    # them anew for every batch was four fifths of the live runner's time (see
    # benchmarks/README.md, "HTTP API").

    @cached_property
    def _move_statement(self) -> Update:
        p = self.schema.positions
        return update(p).where(
            p.c.projection == bindparam("p_name"), p.c.position == bindparam("p_from"),
            p.c.generation == bindparam("p_generation"),
        ).values(position=bindparam("p_to"), updated_at=bindparam("p_at"))

    def _move(self, connection: Connection, name: str, position: int, generation: int,
              new_position: int) -> None:
        now = _now()
        moved = connection.execute(self._move_statement, {
            "p_name": name, "p_from": position, "p_generation": generation,
            "p_to": new_position, "p_at": now})
        if moved.rowcount != 1:
            raise Conflict(f"projection {name} moved from {position} (generation {generation})")
        connection.execute(self._insert_statement(self.schema.batches.name), {
            "projection": name, "generation": generation, "first_position": position + 1,
            "last_position": new_position, "committed_at": now})

    def _insert_statement(self, table: str) -> Insert:
        statement = self._inserts.get(table)
        if statement is None:
            statement = self._inserts[table] = insert(self.schema.table(table))
        return statement

    def _delete_statement(self, table: str, keys: tuple[str, ...]) -> Delete:
        """DELETE FROM table WHERE key_column = :key_column AND ..., run once per key."""
        statement = self._deletes.get(table)
        if statement is None:
            chosen = self.schema.tables[table]
            statement = self._deletes[table] = chosen.delete().where(
                *(chosen.c[c] == bindparam(f"key_{c}") for c in keys))
        return statement

    def _write(self, connection: Connection, changes: dict[str, dict[Key, Row | None]],
               projection: Projection, suffix: str) -> None:
        for name, rows in changes.items():
            columns = projection.keys[name]
            names = [f"key_{c}" for c in columns]
            connection.execute(self._delete_statement(name + suffix, columns),
                               [dict(zip(names, key, strict=True)) for key in rows])
            written = [row for row in rows.values() if row is not None]
            if written:
                connection.execute(self._insert_statement(name + suffix), written)

    # --- rebuilds ------------------------------------------------------------------------------

    def prepare_rebuild(self, projection: type[Projection]) -> None:
        tables = [self.schema.tables[name + NEXT] for name in projection.keys]
        self.schema.metadata.drop_all(self.engine, tables=tables)
        self.schema.metadata.create_all(self.engine, tables=tables)

    def write(self, projection: Projection, suffix: str = NEXT,
              also: Mapping[str, Sequence[str]] | None = None) -> None:
        """Write every row of a projection rebuilt into fresh (empty, not yet live) tables;
        `also` names, per table of the projection, tables (of the same columns) that receive
        the same rows."""
        projection.forget_changes()  # every row is written anyway
        with self.engine.begin() as connection:
            for name, rows in projection.tables.items():
                for target in (name, *(also or {}).get(name, ())):
                    table = self.schema.tables[target + suffix]
                    connection.execute(table.delete())  # a retried swap writes everything again
                    self._bulk_insert(connection, table, rows.values())

    def _bulk_insert(self, connection: Connection, table: Table, rows: Iterable[Row]) -> None:
        """Plain INSERTs through the driver: executemany on SQLite, COPY on PostgreSQL
        (SQLAlchemy's executemany of dicts costs more than the fold on PostgreSQL)."""
        columns = [c.name for c in table.columns]
        preparer = self.engine.dialect.identifier_preparer
        into = f"{preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)})"
        raw: Any = connection.connection.dbapi_connection
        values = _driver_values(table, as_text=self.engine.dialect.name == "sqlite")
        if self.engine.dialect.name == "sqlite":
            marks = ", ".join("?" * len(columns))
            raw.cursor().executemany(f"INSERT INTO {into} VALUES ({marks})", map(values, rows))
            return
        with raw.cursor() as cursor, cursor.copy(f"COPY {into} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))

    def swap(self, live: Mapping[str, tuple[int, int]], rebuilt_position: int) -> None:
        """Put rebuilt tables in place of the live ones and move the positions, atomically.

        `live` maps each rebuilt projection to the (position, generation) read before the swap;
        raises `Conflict`, changing nothing, when any of them moved since."""
        positions = self.schema.positions
        preparer = self.engine.dialect.identifier_preparer
        with self.engine.begin() as connection:
            for name, (position, generation) in sorted(live.items()):
                moved = connection.execute(
                    update(positions)
                    .where(positions.c.projection == name, positions.c.position == position,
                           positions.c.generation == generation)
                    .values(position=rebuilt_position, generation=generation + 1,
                            updated_at=_now()))
                if moved.rowcount != 1:
                    raise Conflict(f"projection {name} moved while it was rebuilt")
                if rebuilt_position > 0:  # an empty log leaves no batch to record
                    connection.execute(insert(self.schema.batches).values(
                        projection=name, generation=generation + 1, first_position=1,
                        last_position=rebuilt_position, committed_at=_now()))
                for table in PROJECTIONS[name].keys:
                    connection.execute(text(
                        f"DROP TABLE {preparer.format_table(self.schema.tables[table])}"))
                    connection.execute(text(
                        f"ALTER TABLE {preparer.format_table(self.schema.tables[table + NEXT])} "
                        f"RENAME TO {preparer.quote(table)}"))

    def batches(self, name: str) -> list[tuple[int, int, int]]:
        """(generation, first, last) of every committed batch of a projection, in order."""
        b = self.schema.batches
        with self.engine.connect() as connection:
            return [(r[0], r[1], r[2]) for r in connection.execute(
                select(b.c.generation, b.c.first_position, b.c.last_position)
                .where(b.c.projection == name)
                .order_by(b.c.generation, b.c.first_position))]


def _driver_values(table: Table, as_text: bool) -> Callable[[Row], list[Any]]:
    """A row's values in column order, as SQLAlchemy stores them: JSON columns serialised by
    `json.dumps` (its JSON type's default); with `as_text` (SQLite), dates as ISO text."""
    columns = [c.name for c in table.columns]
    pick = itemgetter(*columns)
    as_json = [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]
    dates = [i for i, c in enumerate(table.columns) if isinstance(c.type, Date)] \
        if as_text else []

    def values(row: Row) -> list[Any]:
        found = list(pick(row)) if len(columns) > 1 else [row[columns[0]]]
        for i in as_json:
            found[i] = "[]" if found[i] == [] else json.dumps(found[i])
        for i in dates:
            if isinstance(found[i], date):
                found[i] = found[i].isoformat()
        return found

    return values


def _now() -> datetime:
    return datetime.now(UTC)
