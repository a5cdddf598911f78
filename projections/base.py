"""A projection: rows folded from events, with the keys each event changed."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any, ClassVar, TypeVar

from domain.calendar import local_date

Row = dict[str, Any]
Key = tuple[Any, ...]
V = TypeVar("V")

# The id last turned into text: the projections folding one event key their rows by the same id,
# and share one string for it (a rebuild holds hundreds of thousands of them).
_last_id: tuple[object, str] = (None, "")


def text_id(value: object) -> str:
    """`str(value)`; the same string object when asked for the same object twice in a row."""
    global _last_id
    last = _last_id  # one read: another thread may replace it meanwhile, never half of it
    if last[0] is value:
        return last[1]
    text = str(value)
    _last_id = (value, text)
    return text


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
        self._same: dict[tuple[type, Any], Any] = {}
        # The tables of the projection this one was forked from (rows shared until touched).
        self._forked_from: dict[str, dict[Key, Row]] | None = None

    @classmethod
    def handles(cls) -> tuple[type, ...]:
        return tuple(cls.handlers)

    def apply(self, event: Any) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(self, event)

    def fork(self) -> Projection:
        """A copy to fold further events into, leaving this one as it is: rows are shared
        until the copy touches them (a row is copied then), so a fork costs a dict per table."""
        forked = copy.copy(self)
        forked.tables = {t: dict(rows) for t, rows in self.tables.items()}
        forked.dirty = {t: set() for t in self.keys}
        forked._forked_from = self.tables
        return forked

    def detach(self) -> None:
        """Done folding into a fork: let go of the original's tables (a fork kept for reading
        would otherwise keep both alive)."""
        self._forked_from = None

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
        row = self.tables[table][key]
        if self._forked_from is not None and self._forked_from[table].get(key) is row:
            row = self.tables[table][key] = copy.deepcopy(row)  # shared with the original
        return row

    def delete(self, table: str, *key: Any) -> None:
        self.tables[table].pop(key, None)
        self.dirty[table].add(key)

    def day(self, moment: datetime) -> date:
        return self.same(local_date(moment, self.timezone))

    def same(self, value: V) -> V:
        """One object for equal values of which there are few (dates, years, country codes,
        statuses) held by many rows: the same rows in a fraction of the memory."""
        return self._same.setdefault((type(value), value), value)  # type: ignore[no-any-return]
