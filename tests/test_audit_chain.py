"""The tamper-evident log: the hash chain catches changes made behind the library's back.

The tampering is done with plain SQL on the store's own tables (sqlite3 / psycopg), the way
someone with database access would; the verdict is read from `gnlc audit verify --json`. Then:
eight processes writing at once leave one unbroken chain, and an export of more than 100,000
events verifies offline, while a changed export fails at the changed line.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import queue
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pycountry
import pytest
from eventsourcing.persistence import IntegrityError
from typer.testing import CliRunner

from application.clock import FixedClock
from application.registry import Registry
from infrastructure.audit.log import Head, StoredLog, Verdict, verify
from infrastructure.bootstrap import build_registry
from infrastructure.cli import app
from infrastructure.eventstore.chain import event_bytes, link
from infrastructure.eventstore.location import EventStoreLocation
from infrastructure.settings import Settings
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    admitted_city,
    application_form,
    endorsed_application,
)
from tests.synthetic import generate

GNLC = Path(sys.executable).with_name("gnlc")


# --- the store, read and changed with plain SQL --------------------------------------------------


class RawLog:
    """The events table and the chain table of one store, behind the library's back.

    Statements name `{events}`, `{chain}` and `{pos}` (rowid on SQLite, notification_id on
    PostgreSQL) and use `?` for parameters."""

    def __init__(self, database_url: str) -> None:
        self.log = StoredLog(EventStoreLocation.from_url(database_url))
        self.is_postgres = self.log.location.is_postgres

    def run(self, *statements: tuple[str, Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Execute the statements on one connection; the rows of the last one."""
        rows: list[tuple[Any, ...]] = []
        with self.log.connect() as connection:
            for statement, params in statements:
                text = statement.format(events=self.log.events, chain=self.log.chain,
                                        pos=self.log.position).replace("?", self.log.mark)
                cursor = connection.execute(text, tuple(params))
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def one(self, statement: str, *params: Any) -> tuple[Any, ...]:
        (row,) = self.run((statement, params))
        return row

    def positions(self) -> list[int]:
        return [r[0] for r in self.run(("SELECT {pos} FROM {events} ORDER BY {pos}", ()))]

    def chain_positions(self) -> list[int]:
        return [r[0] for r in self.run(("SELECT position FROM {chain} ORDER BY position", ()))]

    def event(self, position: int) -> tuple[Any, int, str, bytes]:
        """Stream id (as the driver gives it), stream version, topic and state of a row."""
        stream, version, topic, state = self.one(
            "SELECT originator_id, originator_version, topic, state FROM {events} "
            "WHERE {pos} = ?", position)
        return stream, int(version), str(topic), bytes(state)

    def chain_hash(self, position: int) -> str:
        return str(self.one("SELECT hash FROM {chain} WHERE position = ?", position)[0])

    def set_event(self, position: int, column: str, value: Any) -> None:
        self.run((f"UPDATE {{events}} SET {column} = ? WHERE {{pos}} = ?", (value, position)))

    def delete(self, *positions: int, chain_too: bool = False) -> None:
        statements = [("DELETE FROM {events} WHERE {pos} = ?", (p,)) for p in positions]
        if chain_too:
            statements += [("DELETE FROM {chain} WHERE position = ?", (p,)) for p in positions]
        self.run(*statements)

    def state_type(self, position: int) -> str:
        """The stored type of the state column: 'blob' (SQLite) or 'bytea' (PostgreSQL)."""
        kind = "pg_typeof(state)::text" if self.is_postgres else "typeof(state)"
        return str(self.one(f"SELECT {kind} FROM {{events}} WHERE {{pos}} = ?", position)[0])


def changed_byte(data: bytes, index: int) -> bytes:
    """The bytes with one bit of one byte flipped."""
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def changed_hex(text: str, index: int) -> str:
    """Another hexadecimal digit at `index`."""
    digit = "0" if text[index] != "0" else "1"
    return text[:index] + digit + text[index + 1:]


# --- the command line ----------------------------------------------------------------------------


@dataclass
class Audit:
    """`gnlc audit ...` against one store, in-process, as an operator would run it."""

    database_url: str
    runner: CliRunner

    def invoke(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.runner.invoke(app, ["--database-url", self.database_url, "audit", *args,
                                          "--json"])
        assert result.stdout, result.stderr
        return result.exit_code, json.loads(result.stdout)

    def verify(self, expect: Head | None = None) -> tuple[int, dict[str, Any]]:
        return self.invoke("verify", *(["--expect", str(expect)] if expect else []))

    def head(self) -> Head:
        code, body = self.invoke("head")
        assert code == 0
        return Head(body["position"], body["hash"])


def tampered(audit: Audit, expect: Head | None = None) -> dict[str, Any]:
    """The verdict of `gnlc audit verify`, which must exit 1."""
    code, verdict = audit.verify(expect)
    assert (code, verdict["ok"]) == (1, False), verdict
    return verdict


@pytest.fixture
def audit(database_url: str) -> Audit:
    return Audit(database_url, CliRunner())


@pytest.fixture
def raw(database_url: str, registry: Registry) -> RawLog:
    """A store holding one intake's events written through the use cases: three admitted cities,
    one endorsed and one submitted application (some 30 events), as plain SQL sees it."""
    registry.open_intake(SECRETARIAT, 2019)
    for city in ("Hamburg", "Bremen", "Munich"):
        admitted_city(registry, city)
    endorsed_application(registry, "Cologne")
    registry.submit_application(CITY, application_form("Leipzig"))
    raw = RawLog(database_url)
    assert len(raw.positions()) >= 25
    return raw


def middle(raw: RawLog) -> tuple[int, int]:
    """A position in the middle of the log, and how many positions come before it."""
    positions = raw.positions()
    index = len(positions) // 2
    return positions[index], index


# --- an untouched log ----------------------------------------------------------------------------


def test_an_untouched_log_verifies_with_every_event_checked_and_its_head_reported(
    audit: Audit, raw: RawLog
) -> None:
    positions = raw.positions()
    assert raw.chain_positions() == positions

    code, verdict = audit.verify()

    assert code == 0
    head = {"position": positions[-1], "hash": raw.chain_hash(positions[-1])}
    assert verdict == {"ok": True, "checked": len(positions), "head": head,
                       "first_bad_position": None, "reason": None}
    assert audit.head() == Head(head["position"], head["hash"])
    assert audit.verify(audit.head()) == (0, verdict)


# --- tampering with the events table -------------------------------------------------------------


def test_one_byte_changed_inside_a_stored_state_is_detected_at_its_position(
    audit: Audit, raw: RawLog
) -> None:
    position, before = middle(raw)
    state = raw.event(position)[3]
    kind = raw.state_type(position)

    raw.set_event(position, "state", changed_byte(state, len(state) // 2))

    assert raw.state_type(position) == kind  # still a BLOB / bytea, one byte different
    assert raw.event(position)[3] != state and len(raw.event(position)[3]) == len(state)
    verdict = tampered(audit)
    assert verdict["first_bad_position"] == position
    assert verdict["checked"] == before
    assert verdict["reason"] == "the stored bytes changed"


@pytest.mark.parametrize("column", ["topic", "originator_version", "originator_id"])
def test_a_changed_topic_stream_version_or_stream_id_is_detected_at_its_position(
    audit: Audit, raw: RawLog, column: str
) -> None:
    position, before = middle(raw)
    stream, version, topic, _ = raw.event(position)
    value: Any = {
        "topic": topic.replace("Admitted", "Rejected").replace("Endorsed", "Declined")
        + "_",
        "originator_version": version + 1000,
        "originator_id": UUID(int=UUID(str(stream)).int ^ 1) if raw.is_postgres
        else changed_hex(str(stream), 5),
    }[column]

    raw.set_event(position, column, value)

    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (position, before)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stream_id_changed_to_text_that_is_no_uuid_is_reported_as_tampering_on_sqlite(
    audit: Audit, raw: RawLog
) -> None:
    # SQLite stores the id as text (PostgreSQL's uuid column takes only UUIDs).
    position, before = middle(raw)
    stream = str(raw.event(position)[0])

    raw.set_event(position, "originator_id", stream[:5] + "x" + stream[6:])

    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (position, before)


def test_a_state_set_to_null_is_reported_as_tampering(audit: Audit, raw: RawLog) -> None:
    position, before = middle(raw)

    raw.set_event(position, "state", None)

    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (position, before)


def test_a_deleted_event_row_is_detected_at_its_position(audit: Audit, raw: RawLog) -> None:
    position, before = middle(raw)

    raw.delete(position)

    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (position, before)
    assert verdict["reason"] == "a chain link without its event (deleted)"


def test_an_event_row_deleted_with_its_chain_link_is_detected_at_the_next_position(
    audit: Audit, raw: RawLog
) -> None:
    positions = raw.positions()
    position, before = middle(raw)

    raw.delete(position, chain_too=True)

    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (positions[before + 1],
                                                                  before)


def test_a_forged_copy_of_an_event_inserted_as_the_next_version_is_detected_at_its_position(
    audit: Audit, raw: RawLog
) -> None:
    count = len(raw.positions())
    position, _ = middle(raw)
    stream, _, topic, state = raw.event(position)
    (last,) = raw.one("SELECT MAX(originator_version) FROM {events} WHERE originator_id = ?",
                      stream)

    raw.run(("INSERT INTO {events} (originator_id, originator_version, topic, state) "
             "VALUES (?, ?, ?, ?)", (stream, last + 1, topic, state)))

    (forged,) = raw.one("SELECT {pos} FROM {events} WHERE originator_id = ? AND "
                        "originator_version = ?", stream, last + 1)
    assert forged > raw.chain_positions()[-1]
    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (forged, count)
    assert verdict["reason"] == "an event without its chain link (inserted)"


def test_two_event_rows_swapped_are_detected_at_the_earlier_position(
    audit: Audit, raw: RawLog
) -> None:
    positions = raw.positions()
    index = len(positions) // 3
    first, second = positions[index], positions[2 * index]
    a, b = raw.event(first), raw.event(second)
    columns = "originator_id = ?, originator_version = ?, topic = ?, state = ?"

    raw.run(  # (stream, version) is unique: park the first row on version -1 meanwhile
        ("UPDATE {events} SET originator_version = -1 WHERE {pos} = ?", (first,)),
        (f"UPDATE {{events}} SET {columns} WHERE {{pos}} = ?", (*a, second)),
        (f"UPDATE {{events}} SET {columns} WHERE {{pos}} = ?", (*b, first)),
    )

    assert (raw.event(first), raw.event(second)) == (b, a)
    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (first, index)


# --- tampering with the chain table --------------------------------------------------------------


@pytest.mark.parametrize("column", ["hash", "recorded_at"])
def test_a_changed_chain_link_is_detected_at_its_position(
    audit: Audit, raw: RawLog, column: str
) -> None:
    position, before = middle(raw)
    (value,) = raw.one(f"SELECT {column} FROM {{chain}} WHERE position = ?", position)

    raw.run((f"UPDATE {{chain}} SET {column} = ? WHERE position = ?",
             (changed_hex(value, 20) if column == "hash" else value.replace("+00:00", "Z"),
              position)))

    verdict = tampered(audit)
    assert (verdict["first_bad_position"], verdict["checked"]) == (position, before)


# --- a published head ----------------------------------------------------------------------------


def test_a_published_head_detects_the_last_events_deleted_from_both_tables(
    audit: Audit, raw: RawLog
) -> None:
    positions = raw.positions()
    published = audit.head()

    raw.delete(*positions[-2:], chain_too=True)

    code, alone = audit.verify()
    assert (code, alone["ok"], alone["checked"]) == (0, True, len(positions) - 2)
    assert alone["head"] == {"position": positions[-3], "hash": raw.chain_hash(positions[-3])}
    verdict = tampered(audit, published)
    assert (verdict["first_bad_position"], verdict["checked"]) == (positions[-2],
                                                                  len(positions) - 2)


def test_a_rewritten_log_with_a_recomputed_chain_fails_only_against_the_published_head(
    audit: Audit, raw: RawLog
) -> None:
    position, before = middle(raw)
    published = audit.head()
    state = raw.event(position)[3]
    raw.set_event(position, "state", changed_byte(state, 3))
    assert tampered(audit)["first_bad_position"] == position

    previous = raw.chain_hash(raw.positions()[before - 1])
    for event, chained in raw.log.pairs(after=raw.positions()[before - 1]):
        assert event is not None and chained is not None
        previous = link(previous, event_bytes(*event, chained.recorded_at))
        raw.run(("UPDATE {chain} SET hash = ? WHERE position = ?", (previous, event[0])))

    code, alone = audit.verify()
    assert (code, alone["ok"]) == (0, True)  # a consistent forgery, on its own
    assert alone["head"]["position"] == published.position != alone["head"]["hash"]
    verdict = tampered(audit, published)
    assert (verdict["first_bad_position"], verdict["checked"]) == (published.position,
                                                                  len(raw.positions()))


def test_a_forged_event_in_a_gap_of_the_postgresql_sequence_is_detected_at_its_position(
    postgres_schema_url: str,
) -> None:
    # A write refused for a conflict consumes sequence numbers: the log has a gap there.
    registry = build_registry(Settings(database_url=postgres_schema_url),
                              FixedClock(datetime.fromisoformat("2019-03-15T12:00:00+01:00")))
    try:
        registry.open_intake(SECRETARIAT, 2019)
        submission = registry.submit_application(CITY, application_form("Hamburg"))
        copies = [registry.application(SECRETARIAT, submission.application_id) for _ in range(2)]
        for application in copies:
            application.endorse(registry._act(COMMISSION))
        registry.save(copies[0])
        with pytest.raises(IntegrityError):
            registry.save(copies[1])
        admitted_city(registry, "Bremen")
    finally:
        registry.close()
    raw, audit = RawLog(postgres_schema_url), Audit(postgres_schema_url, CliRunner())
    positions = raw.positions()
    gap = next(p + 1 for p, q in itertools.pairwise(positions) if q != p + 1)
    code, verdict = audit.verify()
    assert (code, verdict["checked"]) == (0, len(positions))

    stream, version, topic, state = raw.event(positions[0])
    raw.run(("INSERT INTO {events} (originator_id, originator_version, topic, state, {pos}) "
             "VALUES (?, ?, ?, ?, ?)", (stream, version + 100, topic, state, gap)))

    verdict = tampered(audit)
    assert gap < positions[-1]
    assert (verdict["first_bad_position"], verdict["checked"]) == (
        gap, len([p for p in positions if p < gap]))


# --- eight writers at once -----------------------------------------------------------------------

WRITERS = 8
CITIES_PER_WRITER = 8
RACE_TIME = "2019-03-15T12:00:00+01:00"  # inside the 2019 window


def _chain_writer(database_url: str, countries: Sequence[str], barrier: Any,
                  results: multiprocessing.Queue[tuple[str, str]]) -> None:
    """One writer process: its own registry; submit, endorse and admit a city per country (one
    save each), starting together with the others."""
    registry: Registry | None = None
    try:
        registry = build_registry(Settings(database_url=database_url),
                                  FixedClock(datetime.fromisoformat(RACE_TIME)))
        barrier.wait(timeout=120)
        for country in countries:
            submission = registry.submit_application(
                CITY, application_form(f"Chain City {country}", country))
            registry.endorse(COMMISSION, submission.application_id)
            registry.admit(SECRETARIAT, submission.application_id)
        results.put(("done", ""))
    except BaseException:
        results.put(("crashed", traceback.format_exc()))
        barrier.abort()
    finally:
        if registry is not None:
            registry.close()


@pytest.mark.race
def test_eight_processes_writing_at_once_leave_one_unbroken_chain_that_verifies_meanwhile(
    database_url: str, registry: Registry
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    codes = sorted(c.alpha_2 for c in pycountry.countries)  # no two writers share a country
    shares = [codes[w * CITIES_PER_WRITER:(w + 1) * CITIES_PER_WRITER] for w in range(WRITERS)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    results: multiprocessing.Queue[tuple[str, str]] = context.Queue()
    processes = [context.Process(target=_chain_writer, args=(database_url, share, barrier,
                                                              results), daemon=True)
                 for share in shares]
    log = StoredLog(EventStoreLocation.from_url(database_url))
    outcomes: list[tuple[str, str]] = []
    meanwhile: list[Verdict] = []
    for process in processes:
        process.start()
    try:
        while len(outcomes) < WRITERS:
            meanwhile.append(verify(log))  # an auditor verifying while the writers write
            try:
                outcomes.append(results.get(timeout=0 if any(
                    p.is_alive() for p in processes) else 60))
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    pytest.fail(f"writers ended without reporting; so far {outcomes}")
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
                process.join(timeout=60)
        results.close()
        results.join_thread()

    crashed = [detail for outcome, detail in outcomes if outcome != "done"]
    assert not crashed, crashed[0]
    raw = RawLog(database_url)
    positions = raw.positions()
    assert raw.chain_positions() == positions
    final = verify(log)
    assert (final.ok, final.checked, final.first_bad_position) == (True, len(positions), None)
    assert final.head == Head(positions[-1], raw.chain_hash(positions[-1]))
    submitted = len(raw.run(("SELECT 1 FROM {events} WHERE topic LIKE ?",
                             ("%CityApplication.Submitted",))))
    assert submitted == WRITERS * CITIES_PER_WRITER
    assert meanwhile
    assert [(v.first_bad_position, v.reason) for v in meanwhile if not v.ok] == []


# --- an export of more than 100,000 events -------------------------------------------------------

EXPORT_EVENTS = 100_000
CHANGED_LINE = 54_321


@dataclass(frozen=True)
class BigExport:
    database_url: str
    path: Path
    head: Head
    count: int


def gnlc(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The installed `gnlc` console script, in a process of its own."""
    return subprocess.run([str(GNLC), *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          check=False, timeout=600)


def export_to(database_url: str, path: Path, *options: str) -> Path:
    with path.open("w", encoding="utf-8") as out:
        done = gnlc("--database-url", database_url, "audit", "export", *options, stdout=out)
    assert done.returncode == 0, done.stderr
    return path


def verify_file(path: Path, expect: Head | None = None) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["audit", "verify-export", str(path), "--json",
                                      *(["--expect", str(expect)] if expect else [])])
    assert result.stdout, result.stderr
    return result.exit_code, json.loads(result.stdout)


def lines_of(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def line_at(path: Path, number: int) -> dict[str, Any]:
    return next(item for n, item in enumerate(lines_of(path), start=1) if n == number)


def copy_changing_line(source: Path, target: Path, number: int, change: str) -> dict[str, Any]:
    """A copy of the export with line `number` changed (or deleted, or doubled); the original
    line."""
    original: dict[str, Any] = {}
    with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
        for n, line in enumerate(lines, start=1):
            if n != number:
                out.write(line)
                continue
            original = json.loads(line)
            if change == "deleted":
                continue
            if change == "doubled":
                out.write(line + line)
                continue
            item = dict(original)
            if change == "state":
                index = len(item["state"]) // 2
                char = item["state"][index]
                item["state"] = item["state"][:index] + ("B" if char == "A" else "A") + \
                    item["state"][index + 1:]
            elif change == "stream_version":
                item["stream_version"] += 1
            elif change in ("hash", "previous_hash"):
                item[change] = changed_hex(item[change], 10)
            elif change == "topic":
                item["topic"] += "x"
            elif change == "recorded_at":
                item["recorded_at"] = item["recorded_at"].replace("+00:00", "Z")
            out.write(json.dumps(item, separators=(",", ":")) + "\n")
    return original


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> BigExport:
    """At least 100,000 events on SQLite (tests.synthetic, one save per 4,000 events) and their
    export by `gnlc audit export`, made once for this module."""
    folder = tmp_path_factory.mktemp("audit-export")
    url = f"sqlite:///{folder}/big.sqlite"
    registry = build_registry(Settings(database_url=url))
    try:
        count = generate(registry, EXPORT_EVENTS, seed=11, tag="export")
    finally:
        registry.close()
    path = export_to(url, folder / "log.jsonl")
    return BigExport(url, path, Audit(url, CliRunner()).head(), count)


def test_an_export_of_100000_events_verifies_offline_against_the_published_head(
    big_export: BigExport,
) -> None:
    assert big_export.count >= EXPORT_EVENTS

    code, verdict = verify_file(big_export.path, big_export.head)

    assert (code, verdict["ok"], verdict["checked"]) == (0, True, big_export.count)
    assert verdict["head"] == {"position": big_export.head.position,
                               "hash": big_export.head.hash}
    assert big_export.head.position == big_export.count
    assert line_at(big_export.path, 1)["previous_hash"] == "0" * 64


@pytest.mark.parametrize("change", ["state", "stream_version", "topic", "recorded_at", "hash",
                                    "previous_hash", "deleted", "doubled"])
def test_an_export_changed_in_one_line_fails_offline_at_that_line(
    big_export: BigExport, tmp_path: Path, change: str
) -> None:
    changed = tmp_path / "changed.jsonl"
    original = copy_changing_line(big_export.path, changed, CHANGED_LINE, change)
    # A deleted line is noticed at the line after it; a doubled one at the copy.
    expected = original["position"] + (1 if change == "deleted" else 0)

    code, verdict = verify_file(changed, big_export.head)

    assert (code, verdict["ok"]) == (1, False), verdict
    assert verdict["first_bad_position"] == expected
    assert verdict["checked"] == CHANGED_LINE - (0 if change == "doubled" else 1)


def test_an_export_after_a_position_verifies_on_its_own_from_the_hash_before_it(
    big_export: BigExport, tmp_path: Path
) -> None:
    after, until = 60_000, 61_000
    before = line_at(big_export.path, after)
    assert before["position"] == after

    tail = export_to(big_export.database_url, tmp_path / "tail.jsonl", "--after", str(after))
    window = export_to(big_export.database_url, tmp_path / "window.jsonl", "--after",
                       str(after), "--until", str(until))

    assert line_at(tail, 1)["previous_hash"] == before["hash"]
    code, verdict = verify_file(tail, big_export.head)
    assert (code, verdict["ok"], verdict["checked"]) == (0, True, big_export.count - after)
    last = line_at(big_export.path, until)
    code, verdict = verify_file(window, Head(until, last["hash"]))
    assert (code, verdict["ok"], verdict["checked"]) == (0, True, until - after)
    assert line_at(window, 1) == line_at(big_export.path, after + 1)


def test_verify_reports_progress_that_never_goes_back_and_ends_at_the_last_position(
    raw: RawLog, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infrastructure.audit import log as audit_log

    monkeypatch.setattr(audit_log, "PROGRESS_EVERY", 4)  # report often on a small log
    reports: list[tuple[int, int]] = []

    verdict = verify(StoredLog(EventStoreLocation.from_url(database_url)),
                     progress=lambda checked, total: reports.append((checked, total)))

    last = raw.positions()[-1]
    assert verdict.ok and verdict.head.position == last
    checked = [c for c, _ in reports]
    assert checked == sorted(checked) and checked[-1] == last
    assert {t for _, t in reports} == {last}
    assert len(reports) >= 2
