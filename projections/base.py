"""A projection: rows folded from events, with the keys each event changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any, ClassVar

from domain.calendar import local_date

Row = dict[str, Any]
Key = tuple[Any, ...]


class Projection:
    """Rows per table, keyed by the table's key columns; `changes()` hands over what to write."""

    name: ClassVar[str]
    # table name -> its key columns, in order
    keys: ClassVar[dict[str, tuple[str, ...]]]
    # event class -> handler; filled by subclasses
    handlers: ClassVar[dict[type, Callable[[Any, Any], None]]]

    def __init__(self, timezone: str = "Europe/Berlin") -> None:
        self.timezone = timezone
        self.tables: dict[str, dict[Key, Row]] = {t: {} for t in self.keys}
        self.dirty: dict[str, set[Key]] = {t: set() for t in self.keys}

    @classmethod
    def handles(cls) -> tuple[type, ...]:
        return tuple(cls.handlers)

    def apply(self, event: Any) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(self, event)

    def load(self, table: str, rows: Iterable[Row]) -> None:
        """Take rows as stored (the state a previous run left)."""
        columns = self.keys[table]
        for row in rows:
            self.tables[table][tuple(row[c] for c in columns)] = dict(row)

    def rows(self, table: str) -> list[Row]:
        return list(self.tables[table].values())

    def changes(self) -> dict[str, dict[Key, Row | None]]:
        """The rows changed since the last call (None: deleted), then forget them."""
        changed = {
            table: {key: self.tables[table].get(key) for key in keys}
            for table, keys in self.dirty.items()
            if keys
        }
        self.dirty = {t: set() for t in self.keys}
        return changed

    def forget_changes(self) -> None:
        """Forget what changed, without building the change set (a rebuild writes every row)."""
        self.dirty = {t: set() for t in self.keys}

    # --- helpers for subclasses ------------------------------------------------------------

    def get(self, table: str, *key: Any) -> Row | None:
        return self.tables[table].get(key)

    def put(self, table: str, row: Row) -> Row:
        key = tuple(row[c] for c in self.keys[table])
        self.tables[table][key] = row
        self.dirty[table].add(key)
        return row

    def touch(self, table: str, *key: Any) -> Row:
        """The row to change in place, marked for writing."""
        self.dirty[table].add(key)
        return self.tables[table][key]

    def delete(self, table: str, *key: Any) -> None:
        self.tables[table].pop(key, None)
        self.dirty[table].add(key)

    def day(self, moment: datetime) -> date:
        return local_date(moment, self.timezone)
