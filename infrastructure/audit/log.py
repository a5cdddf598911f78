"""Audit of the stored log: create and backfill the hash chain, verify it, export it.

Reads the tables directly (not through the library's decoding), because what is checked is the
bytes as stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg

from application.registry import PersonalDataKeys
from domain.errors import InvalidInput
from domain.personal import PERSONAL_FIELDS, parts_of
from infrastructure.eventstore.chain import (
    CHAIN_TABLE,
    GENESIS,
    Link,
    event_bytes,
    link,
    recorded_now,
    recorded_text,
    stream_text,
)
from infrastructure.eventstore.location import EVENTS_TABLE, EventStoreLocation

PAGE = 5000
Row = tuple[int, str, int, str, bytes]  # position, stream id, stream version, topic, state


@dataclass(frozen=True)
class Head:
    position: int
    hash: str

    def __str__(self) -> str:
        return f"{self.hash}@{self.position}"

    @classmethod
    def parse(cls, text: str, field: str = "expect") -> Head:
        hash_, _, position = text.partition("@")
        if len(hash_) != 64 or not position.isdigit() or any(
                c not in "0123456789abcdef" for c in hash_):
            raise InvalidInput(f"{field} must be HASH@POSITION (64 hex digits), got {text!r}",
                               field=field)
        return cls(int(position), hash_)


@dataclass
class Verdict:
    ok: bool
    checked: int
    head: Head
    first_bad_position: int | None
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked,
                "head": {"position": self.head.position, "hash": self.head.hash},
                "first_bad_position": self.first_bad_position, "reason": self.reason}


class StoredLog:
    """The events table and the chain table of one store, read and written with plain SQL."""

    def __init__(self, location: EventStoreLocation) -> None:
        self.location = location
        pg = location.is_postgres
        self.mark = "%s" if pg else "?"
        self.events = _qualified(location.schema, EVENTS_TABLE) if pg else "stored_events"
        self.chain = _qualified(location.schema, CHAIN_TABLE) if pg else CHAIN_TABLE
        self.position = "notification_id" if pg else "rowid"

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.location.is_postgres:
            with psycopg.connect(self.location.psycopg_conninfo()) as connection:
                yield connection
        else:
            connection = sqlite3.connect(self.location.sqlite_path, timeout=60,
                                         isolation_level=None)
            try:
                yield connection
            finally:
                connection.close()

    def has_chain(self) -> bool:
        with self.connect() as connection:
            if self.location.is_postgres:
                row = connection.execute("SELECT to_regclass(%s)", (self.chain,)).fetchone()
                return row is not None and row[0] is not None
            return connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                      "name=?", (CHAIN_TABLE,)).fetchone() is not None

    def create_chain(self) -> int:
        """Create the chain table and chain the events already stored; return how many.

        Runs while holding the store's write lock, so no event is written meanwhile.
        """
        with self.connect() as connection:
            if self.location.is_postgres:
                with connection.transaction():
                    connection.execute(f"LOCK TABLE {self.events} IN EXCLUSIVE MODE")
                    return self._create_and_backfill(connection)
            connection.execute("BEGIN IMMEDIATE")
            try:
                count = self._create_and_backfill(connection)
                connection.execute("COMMIT")
                return count
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def _create_and_backfill(self, connection: Any) -> int:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {self.chain} (position BIGINT PRIMARY "
                           "KEY, hash TEXT NOT NULL, recorded_at TEXT NOT NULL)")
        previous, count, after = GENESIS, 0, 0
        while rows := self._events_after(connection, after, PAGE):
            links = []
            for row in rows:  # each event's own recorded time, from its stored state
                previous = link(previous, event_bytes(*row, _recorded_at(row[4])))
                links.append(Link(row[0], previous, _recorded_at(row[4])))
            _executemany(connection, f"INSERT INTO {self.chain} (position, hash, recorded_at) "
                         f"VALUES ({self.mark}, {self.mark}, {self.mark})",
                         [(x.position, x.hash, x.recorded_at) for x in links])
            count, after = count + len(rows), rows[-1][0]
        return count

    def limit(self, position: int | None, known_at: datetime | None) -> int | None:
        """The last position to read: `position`, and no further than what was known at
        `known_at` (the transactions recorded by then); None for no limit."""
        if known_at is None:
            return position
        known = self.known_by(known_at)
        return known if position is None else min(position, known)

    def known_by(self, moment: datetime) -> int:
        """The last position of the transactions recorded by `moment` (0 if none): what the
        registry knew then, whole transactions only."""
        with self.connect() as connection:
            row = connection.execute(f"SELECT max(position) FROM {self.chain} WHERE "
                                     f"recorded_at <= {self.mark}",
                                     (recorded_text(moment),)).fetchone()
        return int(row[0] or 0) if row else 0

    def _events_after(self, connection: Any, after: int, limit: int,
                      until: int | None = None) -> list[Row]:
        bound = f" AND {self.position} <= {int(until)}" if until is not None else ""
        statement = (f"SELECT {self.position}, originator_id, originator_version, topic, state "
                     f"FROM {self.events} WHERE {self.position} > {self.mark}{bound} "
                     f"ORDER BY {self.position} LIMIT {int(limit)}")
        if self.location.is_postgres:  # binary: bytea as bytes, not hex text to decode
            rows = connection.execute(statement, (after,), binary=True).fetchall()
            try:
                return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]
            except (TypeError, ValueError):
                return [_row(r) for r in rows]
        rows = connection.execute(statement, (after,)).fetchall()
        try:
            return [(int(r[0]), str(r[1]), int(r[2]), str(r[3]), _bytes(r[4])) for r in rows]
        except (TypeError, ValueError):
            return [_row(r) for r in rows]

    def _links_after(self, connection: Any, after: int, limit: int,
                     until: int | None = None) -> list[Link]:
        bound = f" AND position <= {int(until)}" if until is not None else ""
        rows = connection.execute(
            f"SELECT position, hash, recorded_at FROM {self.chain} WHERE position > {self.mark}"
            f"{bound} ORDER BY position LIMIT {int(limit)}", (after,)).fetchall()
        return [Link(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def head(self) -> Head:
        with self.connect() as connection:
            row = connection.execute(f"SELECT position, hash FROM {self.chain} "
                                     "ORDER BY position DESC LIMIT 1").fetchone()
        return Head(int(row[0]), str(row[1])) if row else Head(0, GENESIS)

    def pairs(self, after: int = 0, until: int | None = None
              ) -> Iterator[tuple[Row | None, Link | None]]:
        """Events and chain links side by side, by position; None where one side lacks it."""
        with self.connect() as connection:
            _one_snapshot(connection)
            events = _paged(lambda a: self._events_after(connection, a, PAGE, until), after,
                            lambda r: r[0])
            links = _paged(lambda a: self._links_after(connection, a, PAGE, until), after,
                           lambda x: x.position)
            event, chained = next(events, None), next(links, None)
            while event is not None or chained is not None:
                if chained is None or (event is not None and event[0] < chained.position):
                    yield event, None
                    event = next(events, None)
                elif event is None or chained.position < event[0]:
                    yield None, chained
                    chained = next(links, None)
                else:
                    yield event, chained
                    event, chained = next(events, None), next(links, None)

    def joined(self, connection: Any) -> Iterator[tuple[Any, ...]]:
        """Every event with its chain link (None, None where it has none), by position: one
        query, streamed (a server-side cursor on PostgreSQL, binary so bytea comes as bytes)."""
        statement = (f"SELECT e.{self.position}, e.originator_id, e.originator_version, e.topic, "
                     f"e.state, c.hash, c.recorded_at FROM {self.events} e LEFT JOIN "
                     f"{self.chain} c ON c.position = e.{self.position} "
                     f"ORDER BY e.{self.position}")
        if self.location.is_postgres:
            cursor = connection.cursor(name="gnlc_verify", binary=True)
            cursor.itersize = PAGE
            cursor.execute(statement)
            yield from cursor
            return
        cursor = connection.execute(statement)
        while rows := cursor.fetchmany(PAGE):
            yield from rows

    def first_orphan_link(self, connection: Any) -> int | None:
        """The first chain link whose event is gone (a deleted row), if any."""
        row = connection.execute(
            f"SELECT min(c.position) FROM {self.chain} c WHERE NOT EXISTS (SELECT 1 FROM "
            f"{self.events} e WHERE e.{self.position} = c.position)").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def previous_hash(self, position: int) -> str:
        if position == 0:
            return GENESIS
        with self.connect() as connection:
            row = connection.execute(f"SELECT hash FROM {self.chain} WHERE position <= "
                                     f"{self.mark} ORDER BY position DESC LIMIT 1",
                                     (position,)).fetchone()
        return str(row[0]) if row else GENESIS


def _bytes(value: Any) -> bytes:
    """The state as stored; a row changed behind the library's back may hold text instead."""
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else bytes(value)


def _recorded_at(state: bytes) -> str:
    """The recorded time inside a stored event's state (the library's JSON), else now."""
    try:
        stamp = json.loads(state)["timestamp"]["_data_"]
        return recorded_text(datetime.fromisoformat(stamp))
    except (ValueError, KeyError, TypeError):
        return recorded_now()


def _row(r: Any) -> Row:
    """A stored row as hashed. A value changed behind the library's back to one of another type
    (NULL, text that is no number) is kept as stored, for `verify` to report."""
    try:
        return (int(r[0]), str(r[1]), int(r[2]), str(r[3]), _bytes(r[4]))
    except (TypeError, ValueError):
        return (int(r[0]), r[1], r[2], r[3], r[4])


def _one_snapshot(connection: Any) -> None:
    """Read both tables as of one moment: an event and its link are committed together, but a
    writer committing between two reads would show one without the other."""
    if isinstance(connection, sqlite3.Connection):
        connection.execute("BEGIN")  # WAL: the snapshot of the first read, until the end
    else:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ


def _qualified(schema: str, table: str) -> str:
    return ".".join('"' + name.replace('"', '""') + '"' for name in (schema, table))


def _paged(fetch: Callable[[int], list[Any]], after: int, key: Callable[[Any], int]
           ) -> Iterator[Any]:
    while page := fetch(after):
        yield from page
        after = key(page[-1])


def _executemany(connection: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
    if isinstance(connection, sqlite3.Connection):
        connection.executemany(statement, rows)
    else:
        with connection.cursor() as cursor:
            cursor.executemany(statement, rows)


Progress = Callable[[int, int], None]
PROGRESS_EVERY = 5_000  # rows between two calls of a progress callback


def verify(log: StoredLog, expect: Head | None = None, progress: Progress | None = None
           ) -> Verdict:
    """Recompute the chain; the first position where the stored log differs from it.

    Reads one snapshot: the events joined to their links in one streamed query, and the links
    whose events are gone in another. `progress(checked, total)`, if given, hears the position
    reached out of the last position of the snapshot, every `PROGRESS_EVERY` rows and at the
    end (on PostgreSQL the server checks the whole chain in one statement: at start and end).
    """
    with log.connect() as connection:
        _one_snapshot(connection)
        total = _last_position(log, connection) if progress is not None else 0
        if progress is not None:
            progress(0, total)
        if log.location.is_postgres:
            verdict = _check_in_sql(log, connection, expect)
        else:
            orphan = log.first_orphan_link(connection)
            verdict = _check(log.joined(connection), orphan, expect,
                             (lambda checked: progress(checked, total)) if progress else None)
    if progress is not None:
        # Where it stopped: the whole snapshot when it verifies, else before the first bad row.
        progress(total if verdict.ok else verdict.head.position, total)
    return verdict


def _last_position(log: StoredLog, connection: Any) -> int:
    """The last position in the events or the chain (an index's end each: cheap)."""
    row = connection.execute(
        f"SELECT (SELECT max({log.position}) FROM {log.events}), "
        f"(SELECT max(position) FROM {log.chain})").fetchone()
    return max(int(row[0] or 0), int(row[1] or 0))


def _check_in_sql(log: StoredLog, connection: Any, expect: Head | None) -> Verdict:
    """PostgreSQL: each link recomputed by the server (`sha256()`) from the stored hash before it.

    The first link that fails is the first position where the log differs from a recomputed
    chain: every link before it holds, so the stored hash before it is the recomputed one. The
    row's bytes are those of `event_bytes` (the text of the position, the uuid, the version).
    """
    def part(value: str) -> str:
        return f"int8send(octet_length({value})::int8) || {value}"

    row = " || ".join(part(v) for v in (
        "convert_to(e.notification_id::text, 'UTF8')", "convert_to(e.originator_id::text, 'UTF8')",
        "convert_to(e.originator_version::text, 'UTF8')", "convert_to(e.topic, 'UTF8')",
        "e.state", "convert_to(c.recorded_at, 'UTF8')"))
    position = "coalesce(e.notification_id, c.position)"
    rows = (f"SELECT {position} AS position, CASE "
            f"WHEN e.notification_id IS NULL THEN 'a chain link without its event (deleted)' "
            f"WHEN c.position IS NULL THEN 'an event without its chain link (inserted)' "
            f"WHEN c.hash IS DISTINCT FROM encode(sha256(decode(lag(c.hash, 1, '{GENESIS}') "
            f"OVER (ORDER BY {position}), 'hex') || {row}), 'hex') "
            f"THEN 'the stored bytes changed' END AS kind "
            f"FROM {log.events} e FULL JOIN {log.chain} c ON c.position = e.notification_id")
    total, bad = connection.execute(
        f"SELECT count(*), min(position) FILTER (WHERE kind IS NOT NULL) FROM ({rows}) AS x"
    ).fetchone()
    why = None
    if bad is not None:  # tampered: say how (a second pass, only then)
        why = str(connection.execute(f"SELECT kind FROM ({rows}) AS x WHERE position = %s",
                                     (bad,)).fetchone()[0])
    if expect is not None and (bad is None or bad > expect.position):
        stored = connection.execute(f"SELECT hash FROM {log.chain} WHERE position = %s",
                                    (expect.position,)).fetchone()
        if stored is not None and stored[0] != expect.hash:
            return Verdict(False, _events_before(log, connection, expect.position + 1),
                           Head(expect.position, str(stored[0])), expect.position,
                           "differs from the expected head")
    limit = bad if bad is not None else None
    checked = int(total) if bad is None else _events_before(log, connection, limit)
    last = connection.execute(
        f"SELECT position, hash FROM {log.chain}"
        + (" WHERE position < %s" if limit is not None else "")
        + " ORDER BY position DESC LIMIT 1", (limit,) if limit is not None else ()).fetchone()
    head = Head(int(last[0]), str(last[1])) if last else Head(0, GENESIS)
    if bad is not None:
        return Verdict(False, checked, head, bad, why)
    if expect is not None and head.position < expect.position:
        return Verdict(False, checked, head, head.position + 1,
                       f"the log ends before the expected head at {expect.position}")
    return Verdict(True, checked, head, None)


def _events_before(log: StoredLog, connection: Any, position: int | None) -> int:
    where = f" WHERE {log.position} < %s" if position is not None else ""
    row = connection.execute(f"SELECT count(*) FROM {log.events}{where}",
                             (position,) if position is not None else ()).fetchone()
    return int(row[0])


def _check(rows: Iterable[tuple[Any, ...]], orphan: int | None, expect: Head | None,
           reached: Callable[[int], None] | None = None) -> Verdict:
    previous, checked, last = bytes.fromhex(GENESIS), 0, Head(0, GENESIS)
    # One comparison a row: -1 is never a count, so without a callback it never reports.
    report_at = PROGRESS_EVERY if reached is not None else -1
    for position, stream, version, topic, state, stored, recorded_at in rows:
        if checked == report_at:
            assert reached is not None
            reached(last.position)
            report_at += PROGRESS_EVERY
        if orphan is not None and orphan < position:
            break  # reported below: the deleted event came first
        if stored is None:
            return Verdict(False, checked, last, position,
                           "an event without its chain link (inserted)")
        if _link_of(previous, position, stream, version, topic, state, recorded_at) != stored:
            return Verdict(False, checked, last, position, "the stored bytes changed")
        previous, checked, last = bytes.fromhex(stored), checked + 1, Head(position, stored)
        if expect is not None and position == expect.position and stored != expect.hash:
            return Verdict(False, checked, last, position, "differs from the expected head")
    if orphan is not None:
        return Verdict(False, checked, last, orphan, "a chain link without its event (deleted)")
    if expect is not None and last.position < expect.position:
        return Verdict(False, checked, last, last.position + 1,
                       f"the log ends before the expected head at {expect.position}")
    return Verdict(True, checked, last, None)


def _link_of(previous: bytes, position: int, stream: Any, version: Any, topic: Any, state: Any,
             recorded_at: str) -> str | None:
    """The hash this row should have after `previous`; None for a value no writer stores (NULL,
    an id that is no UUID), which can only be a change."""
    try:
        digest = hashlib.sha256(previous)
        digest.update(event_bytes(position, stream, version, topic, _bytes(state), recorded_at))
    except (TypeError, ValueError, AttributeError):
        return None
    return digest.hexdigest()


# The first line of an export made with the personal_data scope (verify_export skips it).
HEADER = "gnlc_export"


def export(log: StoredLog, out: TextIO, after: int = 0, until: int | None = None,
           keys: PersonalDataKeys | None = None) -> int:
    """JSON Lines, one stored event per line, with its chain link and the hash before it.

    Stored states hold personal values sealed (domain/personal.py): the export holds them so,
    and they read as erased once their keys are. With `keys` (the personal_data scope) a header
    line says the export holds personal data in the clear, and each line holding a person's
    values adds them opened under `personal` (outside what the hash covers): a copy that an
    erasure cannot reach, to be kept as such."""
    previous, count = log.previous_hash(after), 0
    if keys is not None:
        out.write(json.dumps({HEADER: {
            "scope": "personal_data", "personal_data_in_clear": True,
            "notice": "holds personal data in the clear (the `personal` field of its lines): "
                      "a later erasure does not reach this copy; keep, share and delete it "
                      "as personal data"}}) + "\n")
    for event, chained in log.pairs(after, until):
        if event is None or chained is None:
            raise InvalidInput("the stored log does not verify; run `gnlc audit verify`")
        position, stream, version, topic, state = event
        if not isinstance(state, bytes):
            raise InvalidInput("the stored log does not verify; run `gnlc audit verify`")
        line = {
            "position": position, "stream_id": _stream_id(stream), "stream_version": version,
            "topic": topic, "state": base64.b64encode(state).decode(),
            "recorded_at": chained.recorded_at, "previous_hash": previous,
            "hash": chained.hash}
        if keys is not None and (opened := _opened(keys, state)):
            line["personal"] = opened
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        previous, count = chained.hash, count + 1
    return count


def _opened(keys: PersonalDataKeys, state: bytes) -> list[dict[str, Any]]:
    """The persons' values of a stored state, opened (or marked erased)."""
    if b'"sealed"' not in state and b'"mayor"' not in state and b'"contact"' not in state:
        return []  # no person's part: no decoding
    shown = keys.shown([json.loads(state)], True)[0]
    return [{"person": person, **{k: part.get(k) for k in PERSONAL_FIELDS[person]},
             "erased": bool(part.get("erased"))} for person, part in parts_of(shown)]


def _stream_id(stream: Any) -> str:
    """The stream id as the chain hashes it (`stream_text`): a UUID's text on both backends
    (PostgreSQL's driver gives a UUID, which JSON cannot hold; SQLite stores 32 hex digits), so
    that the same events export to the same lines. A value no writer stores stays as stored."""
    try:
        return stream_text(stream)
    except (TypeError, ValueError, AttributeError):
        return str(stream)


def verify_export(path: Path, expect: Head | None = None) -> Verdict:
    """Check an export offline: every line's hash, and that each line follows the one before."""
    previous: str | None = None
    checked, head = 0, Head(0, GENESIS)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                item = json.loads(line)
                if number == 1 and HEADER in item:
                    continue
                row = event_bytes(item["position"], item["stream_id"], item["stream_version"],
                                  item["topic"], base64.b64decode(item["state"]),
                                  item["recorded_at"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInput(f"line {number} is not an export line",
                                   field="file") from None
            position = int(item["position"])
            if previous is not None and item["previous_hash"] != previous:
                return Verdict(False, checked, head, position, "does not follow the line before")
            if link(item["previous_hash"], row) != item["hash"]:
                return Verdict(False, checked, head, position, "the line was changed")
            previous, checked, head = item["hash"], checked + 1, Head(position, item["hash"])
            if expect is not None and position == expect.position and head != expect:
                return Verdict(False, checked, head, position, "differs from the expected head")
    if expect is not None and head.position < expect.position:
        return Verdict(False, checked, head, head.position + 1,
                       f"the export ends before the expected head at {expect.position}")
    return Verdict(True, checked, head, None)
