"""The log read fast, for rebuilds: rows straight from the library's events table, in pages, and
their JSON decoded with orjson into the very event objects the library's mapper makes.

The mapper decodes with the `json` module and an object hook that turns every two-key
`{"_type_": name, "_data_": data}` object into a value of the registered transcoding; gnlc's events
carry those (UUIDs, datetimes, dates) only as top-level attributes. So `EventDecoder` decodes the
top level itself, and hands an event to the library's mapper whenever anything else could differ:
a cipher or compressor, an event stored in an older `class_version` (to upcast), JSON that orjson
refuses or may read otherwise (19 digits in a row: an integer orjson would make a float), a
`"_type_"` anywhere but in a top-level value, or any error (the mapper then raises its own)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID, SafeUUID

import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from application.registry import DateAsISO

# notification id, topic, originator id (as the recorder's driver returns it), version, state
Row = tuple[int, str, Any, int, bytes]
TYPE_KEY = b'"_type_"'
# orjson reads an integer beyond 64 bits as a float (json: an int); such a number has 19 digits or
# more. The state with its digits as "0" and all else as " " shows a run of them fast.
DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
LONG_NUMBER = b"0" * 19


def uuid_from_hex(text: str) -> UUID:
    """`UUID(text)` for the 32 hex digits the library stores, without `UUID.__init__`'s parsing
    (a quarter of the decoding time); anything else goes through `UUID` itself."""
    raw = bytes.fromhex(text) if len(text) == 32 else b""
    if len(raw) != 16:
        return UUID(text)
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", int.from_bytes(raw, "big"))
    object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
    return uuid


def decoders(transcoder: object) -> dict[str, Callable[[Any], Any]]:
    """Each transcoding's `decode` by name; for the library's and gnlc's own transcodings of
    UUIDs, datetimes and dates the function they call (any error falls back to the mapper)."""
    direct: dict[type, Callable[[Any], Any]] = {
        UUIDAsHex: uuid_from_hex, DatetimeAsISO: datetime.fromisoformat,
        DateAsISO: date.fromisoformat}
    names: dict[str, Transcoding] = getattr(transcoder, "names", {})
    return {name: direct.get(type(transcoding), transcoding.decode)
            for name, transcoding in names.items()}


class LogReader:
    """Rows (`Row`) of the given topics between two notification ids, in order, from either
    recorder. The caller keeps the range short (a page): with a LIMIT instead, PostgreSQL's plan
    for a freshly written table (no statistics yet) sorts every row after `start` for each page,
    which makes reading the log quadratic."""

    def __init__(self, recorder: object) -> None:
        if isinstance(recorder, SQLiteApplicationRecorder):
            self.select = self._sqlite(recorder)
        elif isinstance(recorder, PostgresApplicationRecorder):
            self.select = self._postgres(recorder)
        else:
            raise TypeError(f"no fast read for {type(recorder).__name__}")

    def page(self, start: int, stop: int, topics: Sequence[str]) -> list[Row]:
        """The rows with start <= notification id <= stop."""
        return self.select(start, stop, list(topics))

    @staticmethod
    def _sqlite(recorder: SQLiteApplicationRecorder
                ) -> Callable[[int, int, list[str]], list[Row]]:
        table = recorder.events_table_name
        as_uuid = recorder.datastore.originator_id_type == "uuid"

        def select(start: int, stop: int, topics: list[str]) -> list[Row]:
            statement = (
                f"SELECT rowid, topic, originator_id, originator_version, state FROM {table} "
                f"WHERE rowid>=? AND rowid<=? AND topic IN ({','.join('?' * len(topics))}) "
                "ORDER BY rowid")
            with recorder.datastore.transaction(commit=False) as cursor:
                raw = cursor.sqlite_cursor
                raw.row_factory = None
                raw.execute(statement, [start, stop, *topics])
                rows: list[Row] = raw.fetchall()
            if as_uuid:
                return [(i, t, uuid_from_hex(o), v, s) for i, t, o, v, s in rows]
            return rows

        return select

    @staticmethod
    def _postgres(recorder: PostgresApplicationRecorder
                  ) -> Callable[[int, int, list[str]], list[Row]]:
        statement = SQL(
            "SELECT notification_id, topic, originator_id, originator_version, state "
            "FROM {schema}.{table} WHERE notification_id >= %s AND notification_id <= %s "
            "AND topic = ANY(%s) ORDER BY notification_id"
        ).format(schema=Identifier(recorder.datastore.schema),
                 table=Identifier(recorder.events_table_name))

        def select(start: int, stop: int, topics: list[str]) -> list[Row]:
            with recorder.datastore.get_connection() as connection, \
                    connection.cursor(row_factory=tuple_row, binary=True) as cursor:
                cursor.execute(statement, [start, stop, topics], prepare=True)
                return cast(list[Row], cursor.fetchall())

        return select


class EventDecoder:
    """Rows into domain events, exactly as `mapper.to_domain_event` makes them, faster."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.fast = (mapper.cipher is None and mapper.compressor is None
                     and type(transcoder) is JSONTranscoder)
        self.decoders = decoders(transcoder)
        # topic -> (event class, id convertor), or None where only the mapper will do
        self.classes: dict[str, tuple[type, Callable[[Any], Any]] | None] = {}
        # topic -> the top-level keys that held transcoded values so far
        self.typed: dict[str, tuple[str, ...]] = {}

    def __call__(self, row: Row) -> Any:
        try:
            event = self._decode(row)
        except Exception:
            event = None
        return self._by_mapper(row) if event is None else event

    def _decode(self, row: Row) -> Any:
        _, topic, originator_id, version, state = row
        found = self.classes[topic] if topic in self.classes else self._resolve(topic, row)
        if found is None or LONG_NUMBER in bytes(state).translate(DIGITS):
            return None
        data = orjson.loads(state)
        cls, convert = found
        # Stored in the class's current version: nothing to upcast (older ones go to the mapper,
        # which upcasts them).
        if type(data) is not dict or data.pop("class_version", 1) != getattr(
                cls, "class_version", 1):
            return None
        expected = bytes(state).count(TYPE_KEY)
        decoded = self._transcode(data, self.typed[topic])
        if decoded != expected:
            # Keys not seen in this topic before: decode every other value, and learn them.
            others = tuple(k for k, v in data.items()
                           if type(v) is dict and k not in self.typed[topic])
            if decoded + self._transcode(data, others) != expected:
                return None  # a "_type_" elsewhere: nested, or not a transcoded value
            self.typed[topic] += others
        data["originator_id"] = convert(originator_id)
        data["originator_version"] = version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", data)
        return event

    def _transcode(self, data: dict[str, Any], keys: Sequence[str]) -> int:
        """Decode the `{"_type_", "_data_"}` values of `keys` in place, as the library's object
        hook does; return how many there were."""
        decoded = 0
        decoders = self.decoders
        for key in keys:
            value = data.get(key)
            if type(value) is dict and len(value) == 2 and "_type_" in value \
                    and "_data_" in value:
                data[key] = decoders[value["_type_"]](value["_data_"])
                decoded += 1
        return decoded

    def _resolve(self, topic: str, row: Row) -> tuple[type, Callable[[Any], Any]] | None:
        cls = resolve_topic(topic)
        found: tuple[type, Callable[[Any], Any]] | None = None
        if self.fast:
            found = (cls, find_id_convertor(cls, cast(Hashable, type(row[2]))))
        self.classes[topic] = found
        self.typed[topic] = ()
        return found

    def _by_mapper(self, row: Row) -> Any:
        _, topic, originator_id, version, state = row
        return self.mapper.to_domain_event(StoredEvent(
            originator_id=originator_id, originator_version=version, topic=topic,
            state=bytes(state)))
